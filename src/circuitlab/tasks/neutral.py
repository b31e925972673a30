"""Neutral prompts: the default prompts of universal-neuron detection (`blacklist.prompts`) and
of the side-effect measurements (`steering.neutral_prompts`, `compare.neutral_prompts`).

No torch here: the settings modules import this for their defaults.

The prompts are unrelated to every task family (no capitals, names, agreement frames,
repeated spans, requests or sentiment words) and use only words of the toy corpus's filler
vocabulary (`circuitlab.models.toy.corpus.FILLER_*`), so the toy model's word-level tokenizer
knows every word. They are written as the corpus writes sentences: lower case, words separated
by single spaces, and a finished sentence ends in " ."; some stop mid-sentence, so the last
position is not always the full stop. For a real model give prompts of your own in the config.
"""

from __future__ import annotations

NEUTRAL_PROMPTS: tuple[str, ...] = (
    "the farmer painted a small boat near the hill .",
    "my friend heard a quiet song at night .",
    "a bird watched the river in the morning",
    "the old man carried a red ball after lunch .",
    "our neighbour found the garden",
    "the girl followed the old",
    "the teacher liked the moon at night .",
    "a farmer saw the house after",
    "the child painted the window again .",
    "the cat heard a bird in the garden .",
    "my friend carried the small",
    "the dog watched a farmer near the river .",
    "our neighbour liked a quiet",
    "the road near the hill .",
    "in the morning the child heard",
    "after lunch my friend painted a tree .",
    "at night the old man watched",
    "a bird followed the cat again .",
    "the girl found a red ball in the house .",
    "our neighbour carried the old window",
    "the farmer heard the river near",
    "a small boat .",
    "the child liked the teacher after lunch .",
    "near the hill a quiet bird saw the moon .",
)
