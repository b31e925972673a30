"""`induction`: repeated random word sequences.

Row (``seq_len`` L = 4 for brevity): ``"tiger harp frost olive tiger harp frost"`` → target
``" olive"`` (the L-th word); the counterfactual is a word not in the prompt. The corrupt prompt
keeps the first L words and replaces the repeat by L−1 fresh words (none of the first L, none
repeated), so it has the same length but nothing to copy. The word pool is split so that test
sequences use words never used in train sequences.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from pydantic import Field

from circuitlab.errors import ConfigError
from circuitlab.tasks.base import (
    RowFields,
    TaskParams,
    register,
    split_rows,
)
from circuitlab.types import TaskRow

NAME = "induction"

# Lower-case words that no other family uses, so a sequence carries no task meaning.
WORDS: tuple[str, ...] = (
    "apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "pear", "plum",
    "orange", "olive", "onion", "pepper", "potato", "carrot", "celery", "garlic", "ginger", "walnut",
    "red", "blue", "green", "yellow", "purple", "silver", "golden", "pink", "brown", "white",
    "tiger", "lion", "horse", "zebra", "monkey", "rabbit", "mouse", "snake", "eagle", "whale",
    "shark", "turtle", "frog", "bee", "ant", "spider", "wolf", "bear", "fox", "deer",
    "piano", "violin", "guitar", "drum", "flute", "trumpet", "harp", "cello", "organ", "banjo",
    "cotton", "silk", "wool", "leather", "glass", "copper", "iron", "steel", "stone", "marble",
    "rain", "snow", "wind", "storm", "cloud", "thunder", "fog", "frost", "ice", "sun",
    "moon", "star", "planet", "comet", "ocean", "lake", "valley", "forest", "desert", "island",
    "candle", "pencil", "brush", "mirror", "blanket", "pillow", "basket", "hammer", "ladder", "rope",
    "coffee", "tea", "sugar", "salt", "honey", "butter", "cheese", "noodle", "cereal", "yogurt",
    "jacket", "scarf", "glove", "boot", "hat", "sock", "shirt", "ribbon", "button", "zipper",
)  # fmt: skip


class InductionParams(TaskParams):
    seq_len: int = Field(
        default=6, ge=2, le=20, description="length L of the random sequence that is repeated"
    )


def corpus(params: InductionParams, rng: np.random.Generator, n: int) -> list[str]:
    """Fresh random sequences over all words, each repeated two or three times, then a full stop.

    The length varies around `seq_len` (±2) so that copying from a fixed offset does not work
    (the dataset's corrupt prompts keep the first half, so only token-matching induction is
    what they break); a third repeat doubles the copy targets a sentence trains.
    """
    lo, hi = max(2, params.seq_len - 2), min(len(WORDS), params.seq_len + 2)
    out = []
    for _ in range(n):
        length = int(rng.integers(lo, hi + 1))
        repeats = int(rng.integers(2, 4))
        seq = [WORDS[i] for i in rng.choice(len(WORDS), length, replace=False)]
        out.append(" ".join([*(seq * repeats), "."]))
    return out


@register(
    NAME,
    kind="task",
    params=InductionParams,
    corpus=corpus,
    description="induction: a random word sequence then its first L-1 words → the L-th word",
)
def build(params: InductionParams, seed: int) -> list[TaskRow]:
    length = params.seq_len
    need = 2 * length  # L words, L-1 fresh corrupt words, one counterfactual

    def rows(
        split: str, pool: Sequence[str], n: int, rng: np.random.Generator
    ) -> Iterator[RowFields]:
        if len(pool) < need:
            raise ConfigError(
                f"task {NAME}: the {split} split has {len(pool)} words but seq_len {length} "
                f"needs {need}; lower `seq_len` or move `test_fraction` towards 0.5"
            )
        seen: set[tuple[str, ...]] = set()
        for _ in range(n):
            for _ in range(100):  # a repeated sequence only when the pool leaves no choice
                picked = [pool[j] for j in rng.choice(len(pool), need, replace=False)]
                if tuple(picked[:length]) not in seen:
                    break
            seq, fresh, cf = picked[:length], picked[length : 2 * length - 1], picked[-1]
            seen.add(tuple(seq))
            yield dict(
                prompt=" ".join(seq + seq[:-1]),
                target=f" {seq[-1]}",
                counterfactual=f" {cf}",
                corrupt_prompt=" ".join(seq + fresh),
                meta={"sequence": seq, "corrupt_tail": fresh, "seq_len": length},
            )

    return split_rows(NAME, list(WORDS), params, seed, rows, what="words")
