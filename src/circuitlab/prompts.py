"""Rows or token ids → padded token batches, shared by every stage that runs prompts through
a model.

Prompts are right-padded; `last` is each prompt's own final position, so batched and
per-prompt computations read the same logits. Targets are single-token continuations: a
row whose target is not exactly one token after its prompt is an error here (the
`check_dataset` stage removes or reports such rows first) — never the last sub-token.

Two doors: `encode_rows` (text rows and a tokenizer) and `batch_from_ids` (token ids, e.g.
another tool's data, for a model loaded without a tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from circuitlab.errors import DatasetError, ModelError
from circuitlab.tasks.tokencheck import check_for_tokenizer, continuation
from circuitlab.types import TaskRow


@dataclass(frozen=True)
class PromptBatch:
    ids: tuple[str, ...]
    input_ids: torch.Tensor  # [batch, seq] right-padded with the tokenizer's pad id
    attention_mask: torch.Tensor  # [batch, seq] 1 on prompt tokens
    last: torch.Tensor  # [batch] index of each prompt's final token
    target: torch.Tensor  # [batch] target token id
    counterfactual: torch.Tensor  # [batch] counterfactual token id
    corrupt_ids: torch.Tensor  # [batch, seq] corrupt prompts, same padding as input_ids
    has_corrupt: bool = True  # False: built from ids without corrupt prompts (corrupt = clean)
    has_answers: bool = True  # False: built from ids without answers (target = -1)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(
            self.ids,
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.last)),
            *(t.to(device) for t in (self.target, self.counterfactual, self.corrupt_ids)),
            self.has_corrupt,
            self.has_answers,
        )

    def require_answers(self, what: str) -> None:
        """DatasetError naming ``what`` when the batch has no answer tokens."""
        if not self.has_answers:
            raise DatasetError(
                f"{what} reads the answer tokens, but this batch was built from token ids "
                "without them: pass answer= and wrong_answer= to batch_from_ids "
                "(ACDC with faithfulness 'kl' or 'mse' needs none)"
            )

    def require_corrupt(self, what: str) -> None:
        """DatasetError naming ``what`` when the batch has no corrupt prompts."""
        if not self.has_corrupt:
            raise DatasetError(
                f"{what} needs corrupt prompts, but this batch was built from token ids "
                "without them: pass corrupt= to batch_from_ids, or use 'zero' or 'mean' ablation"
            )


def require_tokenizer(tokenizer: PreTrainedTokenizerBase | None, what: str) -> None:
    """ModelError when a model was loaded without a tokenizer and ``what`` needs text."""
    if tokenizer is None:
        raise ModelError(
            f"{what} needs a tokenizer, but the model was loaded without one. Load it with "
            "its tokenizer (save one beside the weights; `load_model(dir, tokenizer=True)`) "
            "or build the batch from token ids with circuitlab.prompts.batch_from_ids"
        )


IdRows = Sequence[Sequence[int]] | torch.Tensor


def batch_from_ids(
    clean: IdRows,
    corrupt: IdRows | None = None,
    answer: Sequence[int] | torch.Tensor | None = None,
    wrong_answer: Sequence[int] | torch.Tensor | None = None,
    *,
    ids: Sequence[str] | None = None,
    pad_id: int = 0,
) -> PromptBatch:
    """A right-padded `PromptBatch` from token ids, no tokenizer involved.

    ``clean`` (and ``corrupt``): one list of token ids per prompt (any lengths; a corrupt
    prompt as long as its clean one) or a ``[B, S]`` tensor (no padding). ``answer`` /
    ``wrong_answer``: one token id per prompt, read by the answer metrics (``logit_diff``,
    ``target_logit``, LRP, head pruning); ACDC's ``kl``/``mse`` faithfulness needs neither,
    and only ``resample`` ablation needs ``corrupt``. Special tokens (BOS) are not added:
    give the ids exactly as the model should see them. DatasetError names the first bad row.
    """
    clean_rows = _id_rows(clean, "clean")
    n = len(clean_rows)
    corrupt_rows = _id_rows(corrupt, "corrupt") if corrupt is not None else clean_rows
    if len(corrupt_rows) != n:
        raise DatasetError(f"{n} clean prompts but {len(corrupt_rows)} corrupt ones")
    for i, (a, b) in enumerate(zip(clean_rows, corrupt_rows, strict=True)):
        if len(a) != len(b):
            raise DatasetError(
                f"prompt {i}: the clean prompt has {len(a)} tokens, the corrupt one {len(b)}; "
                "patching needs equal lengths per prompt"
            )
    names = tuple(ids) if ids is not None else tuple(str(i) for i in range(n))
    if len(names) != n:
        raise DatasetError(f"{len(names)} ids for {n} prompts")
    targets = [
        _answers(x, name, n) for x, name in ((answer, "answer"), (wrong_answer, "wrong_answer"))
    ]
    input_ids, corrupt_ids, mask, last = _right_padded(clean_rows, corrupt_rows, pad_id)
    return PromptBatch(
        ids=names,
        input_ids=input_ids,
        attention_mask=mask,
        last=last,
        target=targets[0],
        counterfactual=targets[1],
        corrupt_ids=corrupt_ids,
        has_corrupt=corrupt is not None,
        has_answers=answer is not None,
    )


def _id_rows(rows: IdRows, what: str) -> list[list[int]]:
    if isinstance(rows, torch.Tensor):
        if rows.dim() != 2:
            raise DatasetError(f"{what} token ids: a [B, S] tensor, got shape {tuple(rows.shape)}")
        out = rows.long().tolist()
    else:
        try:
            out = [[int(t) for t in row] for row in rows]
        except (TypeError, ValueError):
            raise DatasetError(f"{what} token ids: give one list of ints per prompt") from None
    if not out:
        raise DatasetError(f"no {what} prompts")
    for i, row in enumerate(out):
        if not row:
            raise DatasetError(f"{what} prompt {i} is empty")
        if min(row) < 0:
            raise DatasetError(f"{what} prompt {i} has a negative token id")
    return out


def _answers(values: Sequence[int] | torch.Tensor | None, what: str, n: int) -> torch.Tensor:
    if values is None:
        return torch.full((n,), -1, dtype=torch.long)
    out = torch.as_tensor(values, dtype=torch.long).flatten()
    if out.numel() != n:
        raise DatasetError(f"{what}: one token id per prompt ({n}), got {out.numel()}")
    if bool((out < 0).any()):
        raise DatasetError(f"{what}: token ids must be ≥ 0")
    return out


def encode_rows(rows: Sequence[TaskRow], tokenizer: PreTrainedTokenizerBase | None) -> PromptBatch:
    """Tokenize rows (with the tokenizer's special tokens, e.g. BOS) into one batch.

    Raises DatasetError listing the rows that do not tokenize cleanly (see `tokencheck`).
    """
    if not rows:
        raise DatasetError("no rows to encode")
    require_tokenizer(tokenizer, "encoding text rows")
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
    input_ids, corrupt_ids, mask, last = _right_padded(clean, corrupt, pad_id(tokenizer))
    return PromptBatch(
        ids=tuple(r.id for r in rows),
        input_ids=input_ids,
        attention_mask=mask,
        last=last,
        target=torch.tensor(answers[0]),
        counterfactual=torch.tensor(answers[1]),
        corrupt_ids=corrupt_ids,
    )


def batches(rows: Sequence[TaskRow], size: int) -> list[Sequence[TaskRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def right_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(input_ids, attention_mask, last)`` of token id rows, right-padded with ``pad``: the
    one padding every stage uses, so batched and per-prompt runs read the same positions."""
    width = max(len(a) for a in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, a in enumerate(rows):
        input_ids[i, : len(a)] = torch.tensor(a, dtype=torch.long)
        mask[i, : len(a)] = 1
    return input_ids, mask, torch.tensor([len(a) - 1 for a in rows])


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's pad id (0 when it has none: padded positions are masked anyway)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase | None, prompts: Sequence[str]
) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``(input_ids, attention_mask, last)`` of raw prompts (special tokens added):
    the door for text without answers (steering, CAA, neutral prompts)."""
    require_tokenizer(tokenizer, "encoding prompts")
    if isinstance(prompts, str):
        raise DatasetError("give a list of prompts, not one string")
    if not prompts:
        raise DatasetError("no prompts given")
    encoded = tokenizer(list(prompts))["input_ids"]
    empty = [p for p, ids in zip(prompts, encoded, strict=True) if not ids]
    if empty:
        raise DatasetError(f"prompts {empty[:3]!r} tokenize to nothing")
    return right_pad(encoded, pad_id(tokenizer))


def _right_padded(
    clean: Sequence[Sequence[int]], corrupt: Sequence[Sequence[int]], pad: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(input_ids, corrupt_ids, attention_mask, last)`` of clean and corrupt prompts padded
    to the clean prompts' width (a corrupt prompt has its clean prompt's length)."""
    input_ids, mask, last = right_pad(clean, pad)
    corrupt_ids = torch.full_like(input_ids, pad)
    for i, b in enumerate(corrupt):
        corrupt_ids[i, : len(b)] = torch.tensor(b, dtype=torch.long)
    return input_ids, corrupt_ids, mask, last
