"""Models: loading by hub id or local directory, architecture adapters, the toy trainer.

Attributes load lazily so that importing `circuitlab.config` (which the Snakefile does on every
invocation) does not pay for importing torch and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from circuitlab.lazy import exports

if TYPE_CHECKING:
    from circuitlab.models.adapters import ADAPTERS, Adapter, ModelDims, get_adapter
    from circuitlab.models.loading import LoadedModel, load_model
    from circuitlab.models.spec import ModelSpec

_WHERE = {
    "ADAPTERS": "circuitlab.models.adapters",
    "Adapter": "circuitlab.models.adapters",
    "ModelDims": "circuitlab.models.adapters",
    "get_adapter": "circuitlab.models.adapters",
    "LoadedModel": "circuitlab.models.loading",
    "load_model": "circuitlab.models.loading",
    "ModelSpec": "circuitlab.models.spec",
}
__all__ = [
    "ADAPTERS",
    "Adapter",
    "LoadedModel",
    "ModelDims",
    "ModelSpec",
    "get_adapter",
    "load_model",
]

__getattr__, __dir__ = exports(__name__, _WHERE)
