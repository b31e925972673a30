"""`ioi`: indirect object identification (Wang et al. 2022; Conmy et al. 2023).

Row: ``"When Mary and John went to the store , John gave a drink to"`` → target ``" Mary"`` (the
indirect object, IO), counterfactual ``" John"`` (the subject, S). Both name orders occur: ABBA
(IO first) and BABA (S first). The corrupt prompt is the same template with three distinct names,
all different from IO and S (the ABC distribution of the papers), so it carries no information
about which name is repeated. Names are split between train and test; a test row uses test names
only, in its clean and its corrupt prompt.
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

NAME = "ioi"

NAMES: tuple[str, ...] = (
    "Mary", "John", "Alice", "Bob", "Sarah", "James", "Emma", "David", "Laura", "Michael",
    "Anna", "Daniel", "Kate", "Paul", "Lisa", "Mark", "Julia", "Peter", "Rachel", "Thomas",
    "Linda", "Steven", "Amy", "Kevin", "Helen", "Robert", "Sophie", "George", "Claire", "Richard",
    "Emily", "Andrew", "Grace", "Brian", "Lucy", "Adam", "Nora", "Eric", "Ruth", "Oscar",
)  # fmt: skip

# {a} and {b} are the two names introduced first, {s} the repeated subject; the prompt ends
# right before the indirect object.
TEMPLATES: tuple[str, ...] = (
    "When {a} and {b} went to the store , {s} gave a drink to",
    "When {a} and {b} went to the park , {s} gave a ball to",
    "After {a} and {b} had lunch at the cafe , {s} handed a cup to",
    "While {a} and {b} were working at the office , {s} sent an email to",
    "Then , {a} and {b} had a long talk . {s} gave a book to",
)
ORDERS: tuple[str, ...] = ("ABBA", "BABA")


def _prompt(template: int, order: str, io: str, s: str) -> str:
    a, b = (io, s) if order == "ABBA" else (s, io)
    return TEMPLATES[template].format(a=a, b=b, s=s)


def corpus(params: TaskParams, rng: np.random.Generator, n: int) -> list[str]:
    """Fresh random IOI sentences over all names, each ending with its indirect object."""
    out = []
    for _ in range(n):
        t = int(rng.integers(len(TEMPLATES)))
        order = ORDERS[int(rng.integers(2))]
        io, s = (NAMES[i] for i in rng.choice(len(NAMES), 2, replace=False))
        out.append(f"{_prompt(t, order, io, s)} {io} .")
    return out


@register(
    NAME,
    kind="task",
    params=TaskParams,
    corpus=corpus,
    description="indirect object identification: '… , John gave a drink to' → ' Mary' (ABC corrupt)",
)
def build(params: TaskParams, seed: int) -> list[TaskRow]:
    return split_rows(NAME, list(NAMES), params, seed, _rows, need=5, what="names")


def _rows(split: str, pool: Sequence[str], n: int, rng: np.random.Generator) -> Iterator[RowFields]:
    # Every (template, order, IO, S) combination once before any repeats.
    units = [
        (t, order, io, s)
        for t in range(len(TEMPLATES))
        for order in ORDERS
        for io in pool
        for s in pool
        if io != s
    ]
    for t, order, io, s in take_cycled(units, n, rng):
        others = [x for x in pool if x not in (io, s)]
        x, y, z = (others[j] for j in rng.choice(len(others), 3, replace=False))
        yield dict(
            prompt=_prompt(t, order, io, s),
            target=f" {io}",
            counterfactual=f" {s}",
            corrupt_prompt=TEMPLATES[t].format(a=x, b=y, s=z),
            meta={"io": io, "s": s, "order": order, "template": t, "corrupt_names": [x, y, z]},
        )
