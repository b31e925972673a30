"""Tiny datasets over the tiny tokenizer's words: tasks with varied targets, a behaviour whose
positive rows answer " w10" and negative rows " w11" (matched pairs share a `pair`)."""

from __future__ import annotations

from circuitlab.types import TaskRow
from tiny_models import make_rows

NEUTRAL = [" ".join(f"w{(5 * i + j) % 60 + 2}" for j in range(2 + i % 4)) for i in range(8)]


def task_rows(n: int = 12, seed: int = 0) -> list[TaskRow]:
    return make_rows(n, seed)


def behaviour_rows(n_pairs: int = 12) -> list[TaskRow]:
    rows = []
    for p in range(n_pairs):
        split = "test" if p % 3 == 0 else "train"
        for side, (pol, ans, other) in enumerate(
            (("positive", " w10", " w11"), ("negative", " w11", " w10"))
        ):
            words = [f"w{(3 * p + k) % 50 + 12}" for k in range(2 + p % 3)]
            prompt = " ".join([*words, f"w{20 + side}"])
            partner = " ".join([*words, f"w{21 - side}"])
            rows.append(
                TaskRow(
                    id=f"b{p}-{side}", split=split, prompt=prompt, target=ans,
                    counterfactual=other, corrupt_prompt=partner,
                    meta={"polarity": pol, "pair": p},
                )
            )  # fmt: skip
    return rows
