"""Per-model check of task rows against a tokenizer.

A row is usable with a model only if its clean and corrupt prompts have the same number of tokens
(positions line up for patching) and its target and counterfactual are each exactly one token
*as a continuation of the prompt*: ``ids(prompt + target)`` must be ``ids(prompt)`` plus one id.
A multi-token answer is never reduced to its last sub-token. By default a bad row is an error
that lists the offending rows; with ``datasets.on_invalid: drop`` they are dropped and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from circuitlab.errors import DatasetError
from circuitlab.types import StrictModel, TaskRow

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

OnInvalid = Literal["fail", "drop"]

#: Reason codes, in the order they are reported.
REASONS: tuple[str, ...] = (
    "length_mismatch",
    "target_not_one_token",
    "counterfactual_not_one_token",
    "same_token",
    "unknown_token",
)
_MAX_LISTED = 20


class TokenCheckReport(StrictModel):
    """What `check_for_tokenizer` found; `model_dump()` is JSON-serialisable."""

    task: str
    tokenizer: str
    n_rows: int
    n_kept: int
    n_dropped: int
    reasons: dict[str, int]  # rows per reason code (a row may have several)
    offending: dict[str, str]  # row id → its problems, "; "-joined (codes with details)

    @property
    def offending_ids(self) -> list[str]:
        return list(self.offending)

    def metrics(self) -> dict[str, int]:
        """Flat numbers for `tracking`: counts of rows, kept, dropped and dropped per reason.

        (`model_dump(mode="json")` is also valid `tracking` input: strings, ints, dicts.)
        """
        out = {"n_rows": self.n_rows, "n_kept": self.n_kept, "n_dropped": self.n_dropped}
        out.update({f"dropped_{reason}": self.reasons.get(reason, 0) for reason in REASONS})
        return out


def _encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens, in one batched call."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def continuation(prompt_ids: list[int], full_ids: list[int]) -> tuple[int | None, str]:
    """The single id that `full_ids` adds to `prompt_ids`, or None and why not."""
    k = len(prompt_ids)
    if full_ids[:k] != prompt_ids:
        return None, "merges with the end of the prompt"
    extra = len(full_ids) - k
    if extra != 1:
        return None, f"is {extra} tokens"
    return full_ids[k], ""


def check_for_tokenizer(
    rows: Sequence[TaskRow],
    tokenizer: PreTrainedTokenizerBase,
    *,
    task: str,
    on_invalid: OnInvalid = "fail",
) -> tuple[list[TaskRow], TokenCheckReport]:
    """Check `rows` against `tokenizer`; return the usable rows and a report.

    Raises `DatasetError` if any row is unusable and `on_invalid == "fail"`, or if dropping
    empties a split that had rows. Never mutates the tokenizer.
    """
    if on_invalid not in ("fail", "drop"):
        raise DatasetError(f"datasets.on_invalid must be 'fail' or 'drop', got {on_invalid!r}")
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    prompts = _encode(tokenizer, [r.prompt for r in rows])
    corrupts = _encode(tokenizer, [r.corrupt_prompt for r in rows])
    with_target = _encode(tokenizer, [r.prompt + r.target for r in rows])
    with_cf = _encode(tokenizer, [r.prompt + r.counterfactual for r in rows])
    unk = getattr(tokenizer, "unk_token_id", None)

    counts: Counter[str] = Counter()
    offending: dict[str, list[str]] = {}
    kept: list[TaskRow] = []
    for row, p, c, pt, pc in zip(rows, prompts, corrupts, with_target, with_cf, strict=True):
        problems: list[tuple[str, str]] = []
        if len(p) != len(c):
            problems.append(
                ("length_mismatch", f"prompt is {len(p)} tokens, corrupt_prompt {len(c)}")
            )
        t_id, t_why = continuation(p, pt)
        if t_id is None:
            problems.append(("target_not_one_token", f"target {row.target!r} {t_why}"))
        c_id, c_why = continuation(p, pc)
        if c_id is None:
            problems.append(
                ("counterfactual_not_one_token", f"counterfactual {row.counterfactual!r} {c_why}")
            )
        if t_id is not None and t_id == c_id:
            why = f"{row.target!r} and {row.counterfactual!r} are both token {t_id}"
            problems.append(("same_token", why))
        if unk is not None and (unk in p or unk in c or unk in (t_id, c_id)):
            problems.append(("unknown_token", "a word maps to the unknown token"))
        if problems:
            counts.update(code for code, _ in problems)
            offending[row.id] = "; ".join(f"{code} ({why})" for code, why in problems)
        else:
            kept.append(row)

    report = TokenCheckReport(
        task=task,
        tokenizer=name,
        n_rows=len(rows),
        n_kept=len(kept),
        n_dropped=len(rows) - len(kept),
        reasons={code: counts[code] for code in REASONS if counts[code]},
        offending=offending,
    )
    if offending and on_invalid == "fail":
        lines = [f"  {rid}: {why}" for rid, why in list(offending.items())[:_MAX_LISTED]]
        if len(offending) > _MAX_LISTED:
            lines.append(f"  … and {len(offending) - _MAX_LISTED} more")
        raise DatasetError(
            f"task {task}: {len(offending)} of {len(rows)} row(s) do not fit the tokenizer of "
            f"{name!r} (clean and corrupt prompts must have the same token count; target and "
            f"counterfactual must each be one token after the prompt):\n"
            + "\n".join(lines)
            + "\nTo drop these rows instead (the number dropped per task goes to the metrics), "
            "set `datasets.on_invalid: drop` in the config."
        )
    for split in ("train", "test"):
        if any(r.split == split for r in rows) and not any(r.split == split for r in kept):
            raise DatasetError(
                f"task {task}: every {split} row was dropped for the tokenizer of {name!r} "
                f"({dict(report.reasons)}); this task cannot be used with this model"
            )
    return kept, report
