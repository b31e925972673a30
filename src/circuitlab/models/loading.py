"""Load a causal LM by hub id, local directory or model reference, with its adapter.

The architecture is checked from the config *before* any weights are read, so an unsupported
model fails in a second with the list of supported ones. A local directory without tokenizer
files (a model exported by another tool) loads with ``tokenizer=None``: feed it token ids
(`circuitlab.prompts.batch_from_ids`). Weights load from safetensors only;
remote code runs only when the spec says `trust_remote_code: true`; with `HF_HUB_OFFLINE=1`
(or `TRANSFORMERS_OFFLINE=1`) nothing is fetched.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import constants as hf_constants
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from circuitlab.errors import ModelError
from circuitlab.models.adapters import ADAPTERS, Adapter, ModelDims, supported_architectures
from circuitlab.models.adapters.base import architecture_of
from circuitlab.models.spec import ModelSpec, looks_like_path

log = logging.getLogger(__name__)

#: Files any of which means a local directory holds a saved tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with its tokenizer (None: loaded without one, token ids only),
    its adapter and the spec it was loaded from.

    With ``backend: transformer_lens`` there is no circuitlab adapter (``adapter`` is None) and
    ``bridge`` is the TransformerLens `TransformerBridge` wrapping ``model``
    (`circuitlab.models.bridge`); stages that need the adapter ask for it with `needs_adapter`.

    Parameters keep `requires_grad` as loaded (attribution needs gradients); callers that only
    run forward passes should use `torch.no_grad()` / `torch.inference_mode()`.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    adapter: Adapter | None
    spec: ModelSpec
    device: torch.device
    bridge: Any = None

    @cached_property
    def dims(self) -> ModelDims:
        if self.adapter is None:
            from circuitlab.models.bridge import bridge_dims

            return bridge_dims(self.bridge)
        return self.adapter.dims(self.model.config)

    @property
    def backend(self) -> Literal["native", "transformer_lens"]:
        """Which backend runs this model: ``native`` (circuitlab's adapter and patch layer) or
        ``transformer_lens`` (the bridge; no adapter)."""
        return self.spec.backend

    @property
    def architecture(self) -> str:
        return architecture_of(self.model.config)

    def needs_adapter(self, stage: str) -> Adapter:
        """The adapter, or ModelError saying that ``stage`` needs one this model lacks."""
        if self.adapter is not None:
            return self.adapter
        from circuitlab.models.bridge import needs_adapter_message

        raise ModelError(
            f"{needs_adapter_message(stage, f'this {self.architecture} model')}. Adapters exist "
            f"for {', '.join(supported_architectures())}"
        )


def load_model(
    spec: ModelSpec | str | os.PathLike[str], *, tokenizer: bool | None = None
) -> LoadedModel:
    """Load a model from a `ModelSpec`, a local `save_pretrained` directory, a model
    reference JSON file, or a hub id. Raises `ModelError` (or `ArtifactError` for a bad
    reference file) with the fix in the message.

    ``tokenizer``: True — required (ModelError if it cannot be loaded); False — not loaded;
    None (default) — required for a hub model, and for a local directory loaded when it has
    tokenizer files (`TOKENIZER_FILES`), else None (logged)."""
    spec = resolve_spec(spec)
    source = _source(spec)
    config = load_config(spec, source=source)
    adapter = _adapter(spec, config)  # fails before any weight is read
    device = spec.resolved_device()
    if tokenizer is None:
        tokenizer = not spec.is_local() or has_tokenizer(Path(source))
        if not tokenizer:
            log.info("%s has no tokenizer files: loaded for token ids only", source)
    tok = _load_tokenizer(spec, source) if tokenizer else None
    model = _load_weights(spec, source)
    if spec.device_map is None:
        model = model.to(device)  # type: ignore[arg-type]
    else:
        device = next(model.parameters()).device
    model.eval()
    bridge = None
    if adapter is None:
        from circuitlab.models.bridge import build_bridge

        bridge = build_bridge(model, architecture_of(config))
    return LoadedModel(
        model=model, tokenizer=tok, adapter=adapter, spec=spec, device=device, bridge=bridge
    )


def _adapter(spec: ModelSpec, config: PretrainedConfig) -> Adapter | None:
    """The native adapter (None for the transformer_lens backend); ModelError, naming the fix,
    for an architecture the chosen backend cannot run."""
    from circuitlab.models.bridge import bridge_architectures, check_bridge_supports, is_causal_lm

    arch = architecture_of(config)
    if spec.backend == "transformer_lens":
        check_bridge_supports(arch)
        return None
    if arch in ADAPTERS:
        return ADAPTERS[arch]
    hint = (
        f" TransformerLens 4 supports {arch}: set `backend: transformer_lens` in the model's "
        "config entry (or its reference JSON) to run the hook-only stages through its "
        "TransformerBridge (README, 'Models')."
        if is_causal_lm(arch) and arch in bridge_architectures()
        else ""
    )
    raise ModelError(
        f"unsupported architecture {arch!r}; circuitlab's adapters: "
        f"{', '.join(supported_architectures())}.{hint}"
    )


def has_tokenizer(directory: Path) -> bool:
    """Whether a local model directory holds tokenizer files."""
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(spec: ModelSpec | str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """Only the tokenizer of a model (no weights read), from the same sources as `load_model`."""
    spec = resolve_spec(spec)
    return _load_tokenizer(spec, _source(spec))


def resolve_spec(spec: ModelSpec | str | os.PathLike[str]) -> ModelSpec:
    """A `ModelSpec` from a spec, a reference JSON path, a directory or a hub id."""
    if isinstance(spec, ModelSpec):
        return spec
    path = Path(os.path.expanduser(os.fspath(spec)))
    if path.suffix == ".json" and path.name != "config.json":
        return ModelSpec.from_reference(path)
    if path.name == "config.json" and path.is_file():
        path = path.parent
    if looks_like_path(spec):
        return ModelSpec(id=str(path))
    return ModelSpec(id=os.fspath(spec))


def hub_offline() -> bool:
    """Whether the hub must not be contacted (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    env = any(
        os.environ.get(k, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return env or bool(hf_constants.HF_HUB_OFFLINE)


def load_config(spec: ModelSpec, *, source: str | None = None) -> PretrainedConfig:
    """The model's HF config (no weights read); ModelError naming the path/id and the fix."""
    source = source or _source(spec)
    try:
        return AutoConfig.from_pretrained(source, **_hub_kwargs(spec))
    except (OSError, ValueError, KeyError) as exc:
        raise _not_loadable(spec, "config", exc) from exc


def _source(spec: ModelSpec) -> str:
    """Check a local directory and return what to pass to `from_pretrained`."""
    if not spec.is_local():
        return spec.id
    path = Path(os.path.expanduser(spec.id))
    if not path.exists():
        raise ModelError(
            f"model directory {path} does not exist; train/save the model first "
            "(`snakemake --cores all` makes the toy model) or set model.id to a hub id"
        )
    if not path.is_dir():
        raise ModelError(
            f"model path {path} is not a directory; give a `save_pretrained` directory"
        )
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model directory {path} has no config.json; it must be written by "
            "`model.save_pretrained(dir)` (and `tokenizer.save_pretrained(dir)`)"
        )
    return str(path)


def _hub_kwargs(spec: ModelSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "trust_remote_code": spec.trust_remote_code,
        "local_files_only": hub_offline() or spec.is_local(),
    }
    if spec.revision is not None and not spec.is_local():
        kwargs["revision"] = spec.revision
    return kwargs


def _load_weights(spec: ModelSpec, source: str) -> PreTrainedModel:
    kwargs = _hub_kwargs(spec)
    kwargs.update(
        dtype=spec.torch_dtype(),  # transformers 5 name (`torch_dtype` is deprecated)
        use_safetensors=True,
        attn_implementation=spec.attn_implementation,
    )
    if spec.device_map is not None:
        kwargs["device_map"] = spec.device_map
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except SafetensorError as exc:
        raise _damaged_weights(spec, source, exc) from exc
    except (OSError, ValueError) as exc:
        raise _not_loadable(spec, "weights", exc) from exc


def _damaged_weights(spec: ModelSpec, source: str, exc: Exception) -> ModelError:
    """A safetensors file that exists but cannot be read: truncated or overwritten."""
    where = f"the weights in {source}" if spec.is_local() else f"the cached weights of {spec.id}"
    fix = (
        "delete the directory and rebuild it (`make reproduce` retrains the embedded model; "
        "`dvc checkout data/models` restores a versioned one)"
        if spec.is_local()
        else f"delete its entry from the Hugging Face cache and download it again "
        f"(`hf download {spec.id}`)"
    )
    return ModelError(
        f"{where} are damaged ({str(exc).strip() or type(exc).__name__}): the file is truncated "
        f"or was overwritten, e.g. by an interrupted copy or download. Fix: {fix}"
    )


#: `tokenizer_class` values of a tokenizer saved from a bare `tokenizers` object. AutoTokenizer
#: would replace them by the model type's own class (e.g. Qwen2's, which rebuilds a BPE model and
#: encodes a word-level vocabulary to nothing), so they load as exactly what was saved.
GENERIC_TOKENIZERS = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})


def _load_tokenizer(spec: ModelSpec, source: str) -> PreTrainedTokenizerBase:
    cls: Any = AutoTokenizer
    if spec.is_local() and _saved_tokenizer_class(Path(source)) in GENERIC_TOKENIZERS:
        cls = PreTrainedTokenizerFast
    try:
        tokenizer = cls.from_pretrained(source, **_hub_kwargs(spec))
    except (OSError, ValueError, KeyError) as exc:
        raise _not_loadable(spec, "tokenizer", exc) from exc
    # Our own instance: padding with EOS is safe because we always pass attention masks.
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _saved_tokenizer_class(directory: Path) -> str | None:
    try:
        return json.loads((directory / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None


def _not_loadable(spec: ModelSpec, what: str, exc: Exception) -> ModelError:
    text = str(exc).strip()
    detail = text.splitlines()[0].rstrip(".") if text else type(exc).__name__
    if spec.is_local():
        fix = {
            "config": "re-save it with `save_pretrained`",
            "weights": "the directory needs model.safetensors (pickle .bin weights are refused); "
            "re-save with `model.save_pretrained(dir)`",
            "tokenizer": "save the tokenizer into the same directory with "
            "`tokenizer.save_pretrained(dir)`, or, in Python, load the weights alone "
            "(`load_model(dir, tokenizer=False)`) and feed token ids "
            "(circuitlab.prompts.batch_from_ids)",
        }[what]
        return ModelError(f"cannot load the {what} of local model {spec.id}: {detail}. Fix: {fix}")
    where = f"{spec.id!r}" + (f" at revision {spec.revision!r}" if spec.revision else "")
    if hub_offline():
        fix = (
            f"HF_HUB_OFFLINE is set and {spec.id} is not in the local Hugging Face cache; "
            f"download it once with network (`hf download {spec.id}`) or unset HF_HUB_OFFLINE"
        )
    else:
        fix = (
            "check the hub id and revision, your network, and (for gated models) that you "
            "accepted the licence and are logged in (`hf auth login`); hub weights must be "
            "safetensors"
        )
    return ModelError(f"cannot load the {what} of hub model {where}: {detail}. Fix: {fix}")
