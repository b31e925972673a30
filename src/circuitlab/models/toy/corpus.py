"""The toy model's training corpus: sentences from every task family, plus neutral filler.

Each family's `corpus()` writes complete instances with their answers over *all* entities
(a test prompt may ask for any fact, but the exact combination of an algorithmic test prompt —
names in IOI, nouns in SVA, words in induction — is drawn fresh, so accuracy on the test split
measures generalisation there). Filler keeps the model from being a pure task classifier.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from circuitlab.errors import ConfigError
from circuitlab.models.toy.settings import ToyCorpus
from circuitlab.tasks import get_family
from circuitlab.tasks.base import TaskParams, family_params

FILLER_SUBJECTS = (
    "the cat",
    "the dog",
    "a bird",
    "the child",
    "my friend",
    "the teacher",
    "a farmer",
    "the old man",
    "the girl",
    "our neighbour",
)
FILLER_VERBS = ("saw", "liked", "found", "watched", "painted", "carried", "heard", "followed")
FILLER_OBJECTS = (
    "the river",
    "a tree",
    "the house",
    "a small boat",
    "the garden",
    "the moon",
    "a red ball",
    "the window",
    "the road",
    "a quiet song",
)
FILLER_TAILS = ("", " in the morning", " at night", " after lunch", " near the hill", " again")


def filler(rng: np.random.Generator, n: int) -> list[str]:
    parts = (FILLER_SUBJECTS, FILLER_VERBS, FILLER_OBJECTS, FILLER_TAILS)
    picks = [rng.integers(len(p), size=n) for p in parts]
    return [
        f"{FILLER_SUBJECTS[a]} {FILLER_VERBS[b]} {FILLER_OBJECTS[c]}{FILLER_TAILS[d]} ."
        for a, b, c, d in zip(*picks, strict=True)
    ]


def build_corpus(
    families: Mapping[str, TaskParams | Mapping[str, object] | None], cfg: ToyCorpus, seed: int
) -> list[str]:
    """Sentences from each named family (in sorted order) and filler, shuffled with `seed`."""
    unknown = sorted(set(cfg.weights) - set(families))
    if unknown:
        raise ConfigError(
            f"corpus weights name families that are not enabled: {unknown}; "
            f"enabled: {', '.join(sorted(families))}"
        )
    rng = np.random.default_rng([seed, 7919])
    sentences: list[str] = []
    for name in sorted(families):
        family = get_family(name)
        params = family_params(family, families[name])
        n = max(1, round(cfg.sentences_per_family * cfg.weights.get(name, 1.0)))
        sentences.extend(family.corpus(params, rng, n))
    sentences.extend(filler(rng, cfg.filler_sentences))
    order = rng.permutation(len(sentences))
    return [sentences[i] for i in order]
