"""How well a model does its tasks: top-1 accuracy and logit difference per split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from circuitlab.errors import CircuitlabError
from circuitlab.prompts import batches, encode_rows
from circuitlab.types import TaskRow


@torch.no_grad()
def last_logits(model: PreTrainedModel, batch: Any) -> torch.Tensor:
    """Logits at each prompt's final position: [batch, vocab]."""
    device = next(model.parameters()).device
    out = model(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
    ).logits
    return out[torch.arange(len(batch), device=device), batch.last.to(device)].float().cpu()


def score_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[TaskRow],
    batch_size: int = 64,
) -> dict[str, float]:
    """Top-1 accuracy (argmax == target) and mean logit difference target − counterfactual."""
    correct, diffs = [], []
    for chunk in batches(rows, batch_size):
        batch = encode_rows(chunk, tokenizer)
        logits = last_logits(model, batch)
        idx = torch.arange(len(batch))
        correct.append(logits.argmax(-1) == batch.target)
        diffs.append(logits[idx, batch.target] - logits[idx, batch.counterfactual])
    c, d = torch.cat(correct), torch.cat(diffs)
    return {
        "accuracy": float(c.float().mean()),
        "logit_diff": float(d.mean()),
        "pairwise_accuracy": float((d > 0).float().mean()),
        "n": len(rows),
    }


def evaluate_task(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[TaskRow],
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """{split: scores} for each split present in `rows`."""
    return {
        split: score_rows(model, tokenizer, [r for r in rows if r.split == split], batch_size)
        for split in ("train", "test")
        if any(r.split == split for r in rows)
    }


def accuracy_gate(
    scores: Mapping[str, Any], min_accuracy: float, *, model_name: str, task: str
) -> None:
    """Circuits of a model that cannot do its task are meaningless: stop the pipeline here."""
    if "test" not in scores:
        raise CircuitlabError(f"task {task} has no test rows for model {model_name}")
    accuracy = scores["test"]["accuracy"]
    if accuracy < min_accuracy:
        raise CircuitlabError(
            f"model {model_name} reaches {accuracy:.1%} top-1 accuracy on the {task} test split, "
            f"below evaluation.min_accuracy={min_accuracy:.0%}. Train longer "
            f"(models.{model_name}.training.steps) or lower evaluation.min_accuracy "
            "(0 disables this check)."
        )
