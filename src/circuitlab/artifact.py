"""One typed model per file a stage writes: its format name and version, written and read
through it.

Every JSON artifact a stage writes is a subclass of `Artifact`: the class names its format
(``circuitlab.steering/1``) and the rule that makes it; `save` writes exactly the model's fields
(sorted keys, so the same content gives the same bytes) and `load` validates the file against
the model, so a missing, renamed or mistyped field is an `ArtifactError` that names the file,
the field and the rule to rerun — never a silent default further down (DESIGN principle 7).
Readers then use attributes, not ``dict.get``. A stage's metrics file (``data/metrics/…``,
written by `circuitlab.tracking.log_metrics`) is a subclass of `Metrics`: no format field, but
the same contract — checked when written, validated when read. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import ValidationError, model_validator

from circuitlab.errors import ArtifactError
from circuitlab.io import read_json, write_json
from circuitlab.types import StrictModel


class _TypedFile(StrictModel):
    """What both kinds of file share: the rule that writes it, and `parse`/`load`, which name
    the file, each bad field and the rule to rerun."""

    RULE: ClassVar[str]

    @classmethod
    def _kind(cls) -> str:
        raise NotImplementedError

    @classmethod
    def parse(cls, data: Any, source: str, rule: str | None = None) -> Self:
        """Validate ``data`` (a loaded JSON value) as this kind of file; ArtifactError naming
        the source, each bad field (up to 8) and the rule that makes the file (``rule``: when
        another rule than `RULE` wrote this one)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}"
                for e in exc.errors()[:8]
            )
            more = f" (and {exc.error_count() - 8} more)" if exc.error_count() > 8 else ""
            raise ArtifactError(
                f"{source} is not {cls._kind()}: {problems}{more}. Rerun the "
                f"'{rule or cls.RULE}' rule to rewrite it"
            ) from None

    @classmethod
    def load(cls, path: str | Path, rule: str | None = None) -> Self:
        """Read and validate the file at ``path`` (a missing file names its rule)."""
        return cls.parse(read_json(path, rule=rule or cls.RULE), str(path), rule)


class Artifact(_TypedFile):
    """Base of every artifact file. Subclasses set `FORMAT` (``circuitlab.<kind>/<version>``)
    and `RULE` (the Snakemake rule that writes it)."""

    FORMAT: ClassVar[str]

    format: str

    @model_validator(mode="before")
    @classmethod
    def _format(cls, data: Any) -> Any:
        found = data.get("format") if isinstance(data, dict) else None
        if found is not None and found != cls.FORMAT:
            raise ValueError(
                f"format is {found!r}, this circuitlab reads {cls.FORMAT!r} (written by "
                "another version)"
            )
        return data

    @classmethod
    def build(cls, **fields: Any) -> Self:
        """The artifact a stage writes: ``fields`` under this kind's format (a field that does
        not fit is a bug of the stage, so pydantic's own error)."""
        return cls.model_validate({**fields, "format": cls.FORMAT})

    @classmethod
    def _kind(cls) -> str:
        return f"a valid {cls.FORMAT} artifact"

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object: every field that was given (optional fields a kind of
        artifact does not have are left out, not written as null)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_json())


class Metrics(_TypedFile):
    """Base of a stage's metrics file, ``data/metrics/{rule}/….json``: the stage's numbers as
    `circuitlab.tracking.log_metrics` writes them, plus its ``provenance`` record. The file has
    no format field (it is also the W&B summary and DVC's metrics file); the subclass is the
    contract instead: the stage checks its numbers against it before they are written
    (`check`), and readers load the file through it, so a missing, renamed or mistyped field
    fails at the writer or names the file and the rule — never a "–" in a table."""

    provenance: dict[str, Any] | None = None  # absent only before log_metrics adds it

    @classmethod
    def check(cls, metrics: Mapping[str, Any]) -> None:
        """Pydantic's error unless ``metrics`` (what a stage passes to log_metrics) fit this
        model: a bug of the stage."""
        cls.model_validate(dict(metrics))

    @classmethod
    def _kind(cls) -> str:
        return f"a valid {cls.RULE} metrics file"
