"""`sva`: subject-verb agreement across an attractor noun.

Row: ``"The key near the cabinets"`` → target ``" is"``, counterfactual ``" are"``. The attractor
(in a prepositional phrase) always has the other number than the subject, so copying the nearest
noun's number gives the wrong verb. The corrupt prompt flips the subject's number (key → keys)
and keeps everything else. Subject nouns are split between train and test; attractor nouns come
from a separate list shared by both splits.
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

NAME = "sva"

# (singular, plural) subject nouns; the entities of the train/test split.
SUBJECTS: tuple[tuple[str, str], ...] = (
    ("key", "keys"), ("dog", "dogs"), ("book", "books"), ("teacher", "teachers"),
    ("car", "cars"), ("child", "children"), ("man", "men"), ("woman", "women"),
    ("bird", "birds"), ("letter", "letters"), ("painting", "paintings"), ("student", "students"),
    ("doctor", "doctors"), ("lamp", "lamps"), ("cat", "cats"), ("farmer", "farmers"),
    ("author", "authors"), ("bottle", "bottles"), ("picture", "pictures"), ("officer", "officers"),
    ("girl", "girls"), ("boy", "boys"), ("phone", "phones"), ("gift", "gifts"),
)  # fmt: skip

# (singular, plural) attractor nouns, used in both splits and never as subjects.
ATTRACTORS: tuple[tuple[str, str], ...] = (
    ("cabinet", "cabinets"), ("table", "tables"), ("window", "windows"), ("door", "doors"),
    ("tree", "trees"), ("box", "boxes"), ("bridge", "bridges"), ("garden", "gardens"),
    ("shelf", "shelves"), ("building", "buildings"), ("river", "rivers"), ("wall", "walls"),
    ("desk", "desks"), ("road", "roads"), ("tower", "towers"), ("hill", "hills"),
)  # fmt: skip

TEMPLATES: tuple[str, ...] = (
    "The {subject} near the {attractor}",
    "The {subject} behind the {attractor}",
    "The {subject} beside the {attractor}",
    "The {subject} under the {attractor}",
    "The {subject} next to the {attractor}",
)
VERBS: tuple[str, str] = ("is", "are")  # (singular, plural)
PREDICATES: tuple[str, ...] = ("here", "there", "old", "new", "small", "big", "quiet", "famous")
NUMBERS: tuple[str, str] = ("singular", "plural")


def corpus(params: TaskParams, rng: np.random.Generator, n: int) -> list[str]:
    """Fresh random sentences over all subjects; the attractor's number is random (it matches
    the subject's in half of them, so only the subject predicts the verb), and one sentence in
    five has no attractor at all."""
    out = []
    for _ in range(n):
        subject = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
        number = int(rng.integers(2))
        verb = VERBS[number]
        predicate = PREDICATES[int(rng.integers(len(PREDICATES)))]
        if rng.random() < 0.2:
            out.append(f"The {subject[number]} {verb} {predicate} .")
            continue
        attractor = ATTRACTORS[int(rng.integers(len(ATTRACTORS)))][int(rng.integers(2))]
        t = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        out.append(f"{t.format(subject=subject[number], attractor=attractor)} {verb} {predicate} .")
    return out


@register(
    NAME,
    kind="task",
    params=TaskParams,
    corpus=corpus,
    description="subject-verb agreement: 'The key near the cabinets' → ' is'; corrupt = keys",
)
def build(params: TaskParams, seed: int) -> list[TaskRow]:
    return split_rows(NAME, list(SUBJECTS), params, seed, _rows, what="subject nouns")


def _rows(
    split: str, pool: Sequence[tuple[str, str]], n: int, rng: np.random.Generator
) -> Iterator[RowFields]:
    units = [
        (subject, number, t, attractor)
        for subject in pool
        for number in (0, 1)
        for t in range(len(TEMPLATES))
        for attractor in ATTRACTORS
    ]
    for subject, number, t, attractor in take_cycled(units, n, rng):
        other = 1 - number
        attractor_word = attractor[other]  # the attractor has the other number
        template = TEMPLATES[t]
        yield dict(
            prompt=template.format(subject=subject[number], attractor=attractor_word),
            target=f" {VERBS[number]}",
            counterfactual=f" {VERBS[other]}",
            corrupt_prompt=template.format(subject=subject[other], attractor=attractor_word),
            meta={
                "subject": subject[number],
                "lemma": subject[0],
                "number": NUMBERS[number],
                "attractor": attractor_word,
                "corrupt_subject": subject[other],
                "template": t,
            },
        )
