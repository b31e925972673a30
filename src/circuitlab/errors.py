"""Error types. Every user-facing failure raises a subclass of `CircuitlabError`.

The CLI turns these into a one-paragraph message and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class CircuitlabError(Exception):
    """A failure the user can fix: the message names the field, file or value and the fix."""


class ConfigError(CircuitlabError):
    """The configuration is invalid (unknown key, bad value, unknown task/model)."""


class DatasetError(CircuitlabError):
    """Dataset rows are invalid for a task or for a model's tokenizer."""


class ArtifactError(CircuitlabError):
    """An input artifact is missing or malformed."""


class ModelError(CircuitlabError):
    """A model cannot be loaded or its architecture is unsupported."""


def missing_artifact(path: object, rule: str) -> ArtifactError:
    """The error for a stage run without its input: it names the rule that makes it."""
    target = f"{path}/model.safetensors" if rule == "train_toy_model" else path  # its files
    return ArtifactError(
        f"input artifact {path} does not exist. It is made by the Snakemake rule '{rule}': "
        f"run `make reproduce ARGS={target}` (that file and what it needs) or `make reproduce` "
        "first."
    )
