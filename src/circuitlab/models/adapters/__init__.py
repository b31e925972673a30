"""Architecture adapters, one file per family, all registered in `base.ADAPTERS`."""

from circuitlab.models.adapters.base import (
    ADAPTERS,
    HOOK_NAMES,
    Adapter,
    ModelDims,
    get_adapter,
    register,
    supported_architectures,
)

# Importing the family modules registers them in `ADAPTERS`.
from circuitlab.models.adapters import gemma, gpt2, llama  # isort: skip

__all__ = [
    "ADAPTERS",
    "HOOK_NAMES",
    "Adapter",
    "ModelDims",
    "gemma",
    "get_adapter",
    "gpt2",
    "llama",
    "register",
    "supported_architectures",
]
