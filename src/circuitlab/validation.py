"""Turning pydantic validation errors into messages that name the key and the allowed values."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from circuitlab.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def format_validation_error(exc: ValidationError, source: str, root: type[BaseModel]) -> str:
    """One line per problem: the dotted key, what is wrong, and for unknown keys the allowed ones."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(err["loc"][:-1], root)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {loc}: unknown key{hint}")
        else:
            lines.append(f"  {loc}: {err['msg']}")
    return f"invalid config ({source}):\n" + "\n".join(lines)


def _expand(tp: Any) -> list[Any]:
    """Unwrap Annotated / Optional / unions into their member types."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _expand(get_args(tp)[0])
    if origin in (Union, UnionType):
        return [t for a in get_args(tp) for t in _expand(a)]
    return [tp]


def _allowed_keys(path: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """The field names of the model found by walking `path` (an error location) from `root`."""
    candidates: list[Any] = [root]
    for part in path:
        nxt: list[Any] = []
        for tp in (t for c in candidates for t in _expand(c)):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                if part in tp.model_fields:
                    nxt.append(tp.model_fields[part].annotation)
                elif tp.model_fields.get("source") and part in get_args(
                    tp.model_fields["source"].annotation
                ):
                    nxt.append(tp)  # a discriminated-union tag in the location
            elif get_origin(tp) is dict:
                nxt.append(get_args(tp)[1])
        candidates = nxt
    models = [
        t
        for c in candidates
        for t in _expand(c)
        if isinstance(t, type) and issubclass(t, BaseModel)
    ]
    return sorted(models[0].model_fields) if len(models) == 1 else []


def parse_model(model: type[M], raw: Any, source: str) -> M:
    """Validate `raw` as `model`; a ConfigError lists every bad key and the allowed ones."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, model)) from None
