"""`sentiment` (behaviour): positive vs negative reviews that differ in one adjective.

Each (adjective pair, template, noun) gives two rows: the positive review (polarity "positive")
with target ``" positive"`` and the negative one (polarity "negative") with target
``" negative"``; each row's counterfactual is the other label and its corrupt prompt is the same
review with the other adjective of the pair. Adjective pairs are split between train and test.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from circuitlab.tasks.base import (
    RowFields,
    TaskParams,
    register,
    split_rows,
    take_cycled,
)
from circuitlab.types import TaskRow

NAME = "sentiment"

# (positive, negative) adjectives.
PAIRS: tuple[tuple[str, str], ...] = (
    ("great", "terrible"), ("wonderful", "awful"), ("excellent", "horrible"), ("good", "bad"),
    ("amazing", "boring"), ("fantastic", "dreadful"), ("lovely", "nasty"),
    ("delightful", "miserable"), ("brilliant", "dull"), ("superb", "poor"),
    ("pleasant", "unpleasant"), ("enjoyable", "painful"), ("perfect", "disappointing"),
    ("beautiful", "ugly"), ("charming", "annoying"), ("fun", "tedious"),
    ("impressive", "mediocre"), ("marvelous", "atrocious"), ("splendid", "lousy"),
    ("cheerful", "gloomy"), ("fresh", "stale"), ("exciting", "dreary"), ("friendly", "rude"),
    ("tasty", "bland"),
)  # fmt: skip

NOUNS: tuple[str, ...] = (
    "movie", "film", "meal", "show", "hotel", "game", "song", "trip", "concert", "album",
)  # fmt: skip

TEMPLATES: tuple[str, ...] = (
    "Review : the {noun} was {adj} . Sentiment :",
    "Review : I found the {noun} {adj} . Sentiment :",
    "Review : the {noun} is {adj} . Sentiment :",
    "Review : honestly , the {noun} felt {adj} . Sentiment :",
)
LABELS: tuple[str, str] = ("positive", "negative")
POLARITIES: tuple[str, str] = ("positive", "negative")


def corpus(params: TaskParams, rng: np.random.Generator, n: int) -> list[str]:
    """Every adjective of both polarities in every template and with every noun, labelled,
    in shuffled whole passes."""
    reviews = [
        f"{t.format(noun=noun, adj=pair[side])} {LABELS[side]} ."
        for pair in PAIRS
        for side in (0, 1)
        for t in TEMPLATES
        for noun in NOUNS
    ]
    return take_cycled(reviews, n, rng)


@register(
    NAME,
    kind="behaviour",
    params=TaskParams,
    corpus=corpus,
    description="sentiment: review with a positive adjective → ' positive' vs negative → ' negative'",
)
def build(params: TaskParams, seed: int) -> list[TaskRow]:
    pair_ids = list(range(len(PAIRS)))
    return split_rows(NAME, pair_ids, params, seed, _rows, what="adjective pairs")


def _rows(split: str, pool: Sequence[int], n: int, rng: np.random.Generator) -> Iterator[RowFields]:
    units = [(p, t, noun) for p in pool for t in range(len(TEMPLATES)) for noun in NOUNS]
    # Each unit gives its positive and its negative row, so the polarities stay balanced.
    halves = [
        (p, t, noun, side)
        for p, t, noun in take_cycled(units, (n + 1) // 2, rng)
        for side in (0, 1)
    ]
    for p, t, noun, side in halves[:n]:
        other = 1 - side
        template = TEMPLATES[t]
        yield dict(
            prompt=template.format(noun=noun, adj=PAIRS[p][side]),
            target=f" {LABELS[side]}",
            counterfactual=f" {LABELS[other]}",
            corrupt_prompt=template.format(noun=noun, adj=PAIRS[p][other]),
            meta={
                "polarity": POLARITIES[side],
                "pair": p,
                "adjective": PAIRS[p][side],
                "partner": PAIRS[p][other],
                "noun": noun,
                "template": t,
            },
        )
