"""Rows → padded token batches, shared by every stage that runs prompts through a model.

Prompts are right-padded; `last` is each prompt's own final position, so batched and
per-prompt computations read the same logits. Targets are single-token continuations: a
row whose target is not exactly one token after its prompt is an error here (the
`check_dataset` stage removes or reports such rows first) — never the last sub-token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from circuitlab.errors import DatasetError
from circuitlab.tasks.base import TaskRow
from circuitlab.tasks.tokencheck import check_for_tokenizer, continuation


@dataclass(frozen=True)
class PromptBatch:
    ids: tuple[str, ...]
    input_ids: torch.Tensor  # [batch, seq] right-padded with the tokenizer's pad id
    attention_mask: torch.Tensor  # [batch, seq] 1 on prompt tokens
    last: torch.Tensor  # [batch] index of each prompt's final token
    target: torch.Tensor  # [batch] target token id
    counterfactual: torch.Tensor  # [batch] counterfactual token id
    corrupt_ids: torch.Tensor  # [batch, seq] corrupt prompts, same padding as input_ids

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(
            self.ids,
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.last)),
            *(t.to(device) for t in (self.target, self.counterfactual, self.corrupt_ids)),
        )


def encode_rows(rows: Sequence[TaskRow], tokenizer: PreTrainedTokenizerBase) -> PromptBatch:
    """Tokenize rows (with the tokenizer's special tokens, e.g. BOS) into one batch.

    Raises DatasetError listing the rows that do not tokenize cleanly (see `tokencheck`).
    """
    if not rows:
        raise DatasetError("no rows to encode")
    check_for_tokenizer(rows, tokenizer, task="this batch", on_invalid="fail")
    prompts = [r.prompt for r in rows]
    clean = tokenizer(prompts)["input_ids"]
    corrupt = tokenizer([r.corrupt_prompt for r in rows])["input_ids"]
    answers = []
    for field in ("target", "counterfactual"):
        full = tokenizer([r.prompt + getattr(r, field) for r in rows])["input_ids"]
        answers.append(
            [continuation(list(p), list(f))[0] for p, f in zip(clean, full, strict=True)]
        )
    width = max(len(a) for a in clean)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    corrupt_ids = torch.full_like(input_ids, pad)
    mask = torch.zeros_like(input_ids)
    for i, (a, b) in enumerate(zip(clean, corrupt, strict=True)):
        input_ids[i, : len(a)] = torch.tensor(a)
        corrupt_ids[i, : len(b)] = torch.tensor(b)
        mask[i, : len(a)] = 1
    return PromptBatch(
        ids=tuple(r.id for r in rows),
        input_ids=input_ids,
        attention_mask=mask,
        last=torch.tensor([len(a) - 1 for a in clean]),
        target=torch.tensor(answers[0]),
        counterfactual=torch.tensor(answers[1]),
        corrupt_ids=corrupt_ids,
    )


def batches(rows: Sequence[TaskRow], size: int) -> list[Sequence[TaskRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]
