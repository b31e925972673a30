"""`ModelSpec`: what to load and how; also the *model reference* artifact.

A hub model is not copied into `data/`; the `model` stage writes `data/models/{model}.json`, a
reference holding a `ModelSpec` (hub id, pinned revision, dtype …), and later stages load
through it. A locally trained model (the toy) is a `save_pretrained` directory instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

from circuitlab.errors import ArtifactError, ModelError
from circuitlab.io import read_json, write_json
from circuitlab.types import StrictModel

if TYPE_CHECKING:
    import torch

DType = Literal["float32", "float16", "bfloat16", "auto"]

#: The device names a model entry, a reference and ``--device`` accept.
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"


class ModelSpec(StrictModel):
    """How to load one model. `id` is a Hugging Face hub id or a local directory."""

    id: str = Field(min_length=1, description="hub id (org/name) or a local model directory")
    revision: str | None = Field(
        default=None,
        description="hub revision (branch, tag or commit); pin a commit for reproducibility",
    )
    dtype: DType = Field(default="float32", description="parameter dtype; 'auto' = as saved")
    device: str = Field(
        default="cpu",
        pattern=DEVICE_PATTERN,
        description="where the model runs: 'cpu' (the default: bit-identical results on any "
        "x86-64 CPU under the numerics pins), 'cuda', 'cuda:N', or 'auto' (cuda if available, "
        "else cpu)",
    )
    device_map: str | None = Field(
        default=None,
        description="accelerate device_map (e.g. 'auto' to shard over GPUs); overrides device",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="run code shipped with the model repository (off unless you trust it)",
    )
    attn_implementation: Literal["eager", "sdpa"] = Field(
        default="eager", description="attention kernel; 'eager' is needed for attribution (LRP)"
    )
    backend: Literal["native", "transformer_lens"] = Field(
        default="native",
        description="'native': circuitlab's own adapter and patch layer (Llama, Mistral, Qwen2, "
        "Gemma, GPT-2; every stage); 'transformer_lens': TransformerLens 4's TransformerBridge, "
        "for an architecture circuitlab has no adapter for (the hook-only stages: evaluation, "
        "ACDC/EAP/head pruning, CAA; see README)",
    )

    @model_serializer(mode="wrap")
    def _without_default_backend(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``backend`` is written only when it is not the default, so references and rule
        params of native models are what they were before the option existed."""
        out = handler(self)
        if out.get("backend") == "native":
            out.pop("backend")
        return out

    # ------------------------------------------------------------------ helpers
    def torch_dtype(self) -> torch.dtype | Literal["auto"]:
        """The dtype to pass to `from_pretrained`."""
        import torch  # here, not at module level: the Snakefile imports the config without torch

        return "auto" if self.dtype == "auto" else getattr(torch, self.dtype)

    def resolved_device(self) -> torch.device:
        """`device` with 'auto' resolved (`resolve_device`)."""
        return resolve_device(self.device)

    def is_local(self) -> bool:
        """Whether `id` names a local directory (existing, or written as a path) not a hub id."""
        return looks_like_path(self.id)

    # --------------------------------------------------------- reference files
    @classmethod
    def from_reference(cls, path: str | os.PathLike[str]) -> ModelSpec:
        """Read a model reference JSON (`data/models/{model}.json`)."""
        raw = read_json(path, rule="model")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors()
            )
            raise ArtifactError(
                f"{path} is not a valid model reference ({reasons}); "
                "re-create it with the `model` stage"
            ) from exc

    def to_reference(self, path: str | os.PathLike[str]) -> Path:
        """Write this spec as a model reference JSON, atomically."""
        return write_json(path, self.model_dump(mode="json"))


def looks_like_path(ident: str | os.PathLike[str]) -> bool:
    """True for an existing path or a string written like one (absolute, ./, ../, ~, or more
    than one '/'); False for a hub id such as `gpt2` or `meta-llama/Llama-3.1-8B`."""
    if isinstance(ident, os.PathLike):
        return True
    s = str(ident)
    if os.path.exists(os.path.expanduser(s)):
        return True
    return (
        os.path.isabs(s)
        or s.startswith(("./", "../", "~", ".\\", "..\\"))
        or s in (".", "..")
        or s.count("/") > 1
        or "\\" in s
        or s.endswith(".json")
    )


def resolve_device(name: str) -> torch.device:
    """The torch device a model entry's ``device`` names: the one place 'auto' is resolved (to
    cuda when CUDA is available, else cpu). ModelError for a name that is not a device, or
    for cuda where CUDA is not available."""
    import torch  # here, not at module level: the Snakefile imports the config without torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(
            f"model device {name!r} is not a torch device; use 'cpu', 'cuda', 'cuda:N' or 'auto'"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"the model's device is {name!r} but CUDA is not available here; set the model "
            "entry's `device` (or `--device`) to 'cpu' or 'auto'"
        )
    return device


def uses_gpu(name: str) -> bool:
    """Whether a job loading a model onto device ``name`` takes a GPU (the Snakefile's ``gpu``
    resource). Imports torch only for 'auto', which is resolved where the workflow is planned:
    on a cluster whose login node has no GPU, declare the rule's GPU in the profile
    (workflow/profiles/slurm) or name 'cuda' in the config."""
    if name.startswith("cuda"):
        return True
    return name == "auto" and resolve_device(name).type == "cuda"
