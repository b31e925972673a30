"""circuitlab: reproducible circuit discovery and steering for transformer language models."""

from circuitlab.errors import CircuitlabError

__all__ = ["CircuitlabError", "__version__"]
__version__ = "0.1.0"
