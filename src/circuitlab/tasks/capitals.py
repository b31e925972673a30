"""`capitals`: factual recall of a country's capital.

Row: ``"The capital of France is"`` → target ``" Paris"``; the corrupt prompt is the same template
with another country of the same split, and the counterfactual is that country's capital, so a
corrupt run's answer is the clean run's counterfactual. Countries are split between train and
test; a test country never appears in a train prompt (clean or corrupt).
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

NAME = "capitals"

# Single-word countries with single-word capitals only (no "New Delhi", no "United Kingdom").
CAPITALS: dict[str, str] = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "China": "Beijing",
    "Russia": "Moscow",
    "Egypt": "Cairo",
    "Greece": "Athens",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Poland": "Warsaw",
    "Ireland": "Dublin",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Belgium": "Brussels",
    "Netherlands": "Amsterdam",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Syria": "Damascus",
    "Kenya": "Nairobi",
    "Nigeria": "Abuja",
    "Ghana": "Accra",
    "Senegal": "Dakar",
    "Morocco": "Rabat",
    "Uganda": "Kampala",
    "Zambia": "Lusaka",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Colombia": "Bogota",
    "Venezuela": "Caracas",
    "Ecuador": "Quito",
    "Cuba": "Havana",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Indonesia": "Jakarta",
    "Philippines": "Manila",
    "Pakistan": "Islamabad",
    "Afghanistan": "Kabul",
    "Nepal": "Kathmandu",
    "Ukraine": "Kyiv",
    "Romania": "Bucharest",
    "Bulgaria": "Sofia",
    "Serbia": "Belgrade",
}

# Prompt templates of the dataset; each is continued by the capital.
TEMPLATES: tuple[str, ...] = (
    "The capital of {country} is",
    "The capital city of {country} is",
    "{country} has its capital in",
    "Q : What is the capital of {country} ? A :",
    "Q : Which city is the capital of {country} ? A :",
)

# Further phrasings the corpus states each fact in (the model learns the fact, not one string).
EXTRA_PHRASINGS: tuple[str, ...] = (
    "{capital} is the capital of {country} .",
    "{capital} is the capital city of {country} .",
)


def corpus(params: TaskParams, rng: np.random.Generator, n: int) -> list[str]:
    """Every country's capital in every template and phrasing, in shuffled whole passes."""
    facts = [
        f"{t.format(country=country)} {capital} ."
        for country, capital in CAPITALS.items()
        for t in TEMPLATES
    ] + [
        p.format(country=country, capital=capital)
        for country, capital in CAPITALS.items()
        for p in EXTRA_PHRASINGS
    ]
    return take_cycled(facts, n, rng)


@register(
    NAME,
    kind="task",
    params=TaskParams,
    corpus=corpus,
    description="factual recall: 'The capital of France is' → ' Paris'; corrupt = another country",
)
def build(params: TaskParams, seed: int) -> list[TaskRow]:
    return split_rows(NAME, sorted(CAPITALS), params, seed, _rows, need=2, what="countries")


def _rows(split: str, pool: Sequence[str], n: int, rng: np.random.Generator) -> Iterator[RowFields]:
    units = [(c, t) for c in pool for t in range(len(TEMPLATES))]
    for country, t in take_cycled(units, n, rng):
        others = [c for c in pool if c != country]
        other = others[int(rng.integers(len(others)))]
        template = TEMPLATES[t]
        yield dict(
            prompt=template.format(country=country),
            target=f" {CAPITALS[country]}",
            counterfactual=f" {CAPITALS[other]}",
            corrupt_prompt=template.format(country=other),
            meta={
                "country": country,
                "capital": CAPITALS[country],
                "corrupt_country": other,
                "template": t,
            },
        )
