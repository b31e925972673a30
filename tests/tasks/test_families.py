"""Task families: determinism, splits disjoint by entity, row shape, corpus consistency."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from circuitlab.errors import ConfigError, DatasetError
from circuitlab.tasks import (
    REGISTRY,
    TaskParams,
    TaskRow,
    build_rows,
    capitals,
    families,
    get_family,
    induction,
    ioi,
    parse_rows,
    refusal,
    sentiment,
    sva,
)
from circuitlab.tasks.base import register

NAMES = sorted(REGISTRY)
SMALL = {"n_train": 24, "n_test": 12}

ONE_PASS = {  # corpus sentences in one whole pass over the facts
    "capitals": len(capitals.CAPITALS) * (len(capitals.TEMPLATES) + len(capitals.EXTRA_PHRASINGS)),
    "refusal": len(refusal.PAIRS) * 2 * len(refusal.TEMPLATES),
    "sentiment": len(sentiment.PAIRS) * 2 * len(sentiment.TEMPLATES) * len(sentiment.NOUNS),
}


def _ioi_entities(row: TaskRow) -> set[str]:
    return {row.meta["io"], row.meta["s"], *row.meta["corrupt_names"]}


def _words(row: TaskRow) -> set[str]:
    return set(row.prompt.split()) | set(row.corrupt_prompt.split()) | {row.counterfactual.strip()}


ENTITIES: dict[str, Callable[[TaskRow], set[str]]] = {
    "capitals": lambda r: {r.meta["country"], r.meta["corrupt_country"]},
    "ioi": _ioi_entities,
    "sva": lambda r: {r.meta["lemma"]},
    "induction": _words,
    "refusal": lambda r: {str(r.meta["pair"])},
    "sentiment": lambda r: {str(r.meta["pair"])},
}


def test_registry_has_every_family() -> None:
    assert set(NAMES) == set(ENTITIES)
    assert {f.name for f in families("task")} == {"capitals", "ioi", "sva", "induction"}
    assert {f.name for f in families("behaviour")} == {"refusal", "sentiment"}
    assert all(f.description for f in families())
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        get_family("nope")
    with pytest.raises(RuntimeError, match="registered twice"):
        register("ioi", kind="task", params=TaskParams, corpus=ioi.corpus, description="x")(
            ioi.build
        )


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name: str) -> None:
    a = build_rows(name, SMALL, seed=0)
    assert a == build_rows(name, SMALL, seed=0)
    assert [r.prompt for r in a] != [r.prompt for r in build_rows(name, SMALL, seed=1)]
    # train rows do not depend on the size of the test split
    more_test = build_rows(name, {**SMALL, "n_test": 30}, seed=0)
    assert [r for r in a if r.split == "train"] == [r for r in more_test if r.split == "train"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 7])
def test_splits_sizes_and_disjoint_entities(name: str, seed: int) -> None:
    rows = build_rows(name, SMALL, seed=seed)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    assert len(train) == SMALL["n_train"] and len(test) == SMALL["n_test"]
    entities = ENTITIES[name]
    train_entities = set().union(*map(entities, train))
    test_entities = set().union(*map(entities, test))
    assert train_entities and test_entities
    assert not train_entities & test_entities


@pytest.mark.parametrize("name", NAMES)
def test_row_shape(name: str) -> None:
    rows = build_rows(name, {"n_train": 64, "n_test": 64}, seed=3)
    assert [r.id for r in rows[:2]] == [f"{name}-train-0000", f"{name}-train-0001"]
    assert rows[-1].id == f"{name}-test-0063"
    for r in rows:
        assert len(r.prompt.split()) == len(r.corrupt_prompt.split()), r.id
        assert r.prompt != r.corrupt_prompt, r.id
        assert len(r.prompt.split()) <= 24, r.id
        for answer in (r.target, r.counterfactual):
            assert re.fullmatch(r" [A-Za-z]+", answer), (r.id, answer)
        assert r.target != r.counterfactual
        assert "  " not in r.prompt and r.prompt == r.prompt.strip()
    # whole passes over the units before any row repeats
    prompts = Counter((r.split, r.prompt) for r in rows)
    assert max(prompts.values()) == 1, prompts.most_common(3)


def test_capitals_rows() -> None:
    for r in build_rows("capitals", None, seed=0):
        assert r.target == f" {capitals.CAPITALS[r.meta['country']]}"
        assert r.counterfactual == f" {capitals.CAPITALS[r.meta['corrupt_country']]}"
        assert r.corrupt_prompt == r.prompt.replace(r.meta["country"], r.meta["corrupt_country"])


def test_ioi_rows() -> None:
    rows = build_rows("ioi", {"n_train": 200, "n_test": 50}, seed=0)
    assert {r.meta["order"] for r in rows} == {"ABBA", "BABA"}
    assert {r.meta["template"] for r in rows} == set(range(len(ioi.TEMPLATES)))
    for r in rows:
        words = r.prompt.split()
        names = [w for w in words if w in ioi.NAMES]
        assert len(names) == 3 and names[2] == r.meta["s"], r.id
        assert sorted(names[:2]) == sorted([r.meta["io"], r.meta["s"]])
        assert (r.target, r.counterfactual) == (f" {r.meta['io']}", f" {r.meta['s']}")
        corrupt = [w for w in r.corrupt_prompt.split() if w in ioi.NAMES]
        assert corrupt == r.meta["corrupt_names"]
        assert len(set(corrupt)) == 3 and not set(corrupt) & {r.meta["io"], r.meta["s"]}


def test_sva_rows() -> None:
    rows = build_rows("sva", {"n_train": 100, "n_test": 40}, seed=0)
    singular = {s for s, _ in sva.SUBJECTS}
    att_singular = {s for s, _ in sva.ATTRACTORS}
    assert {r.meta["number"] for r in rows} == {"singular", "plural"}
    for r in rows:
        subj, att = r.prompt.split()[1], r.prompt.split()[-1]
        is_singular = subj in singular
        assert r.target == (" is" if is_singular else " are"), r.id
        assert (att in att_singular) != is_singular, r.id  # attractor has the other number
        corrupt = r.corrupt_prompt.split()
        assert corrupt[1] == r.meta["corrupt_subject"] and corrupt[1] != subj
        assert corrupt[2:] == r.prompt.split()[2:]


def test_induction_rows() -> None:
    rows = build_rows("induction", {"n_train": 30, "n_test": 30, "seq_len": 5}, seed=0)
    for r in rows:
        words, corrupt = r.prompt.split(), r.corrupt_prompt.split()
        assert len(words) == 9 and words[5:] == words[:4] and len(set(words[:5])) == 5
        assert r.target == f" {words[4]}"
        assert r.counterfactual.strip() not in words + corrupt
        assert corrupt[:5] == words[:5] and len(set(corrupt)) == 9
    with pytest.raises(ConfigError, match="seq_len"):
        build_rows("induction", {"seq_len": 20}, seed=0)
    with pytest.raises(ConfigError, match="seq_len: Input should be greater than or equal to 2"):
        build_rows("induction", {"seq_len": 1}, seed=0)


@pytest.mark.parametrize("name", ["refusal", "sentiment"])
def test_behaviour_rows_are_matched_pairs(name: str) -> None:
    rows = build_rows(name, {"n_train": 40, "n_test": 21}, seed=0)
    for split in ("train", "test"):
        part = [r for r in rows if r.split == split]
        pol = Counter(r.meta["polarity"] for r in part)
        assert abs(pol["positive"] - pol["negative"]) <= 1
    by_prompt = {r.prompt: r for r in rows}
    for r in rows:
        assert r.meta["polarity"] in ("positive", "negative")
        partner = by_prompt.get(r.corrupt_prompt)
        if partner is not None:  # the odd last row may miss its partner
            assert partner.corrupt_prompt == r.prompt
            assert (partner.target, partner.counterfactual) == (r.counterfactual, r.target)
            assert partner.meta["polarity"] != r.meta["polarity"]
    positive = {"refusal": " Sorry", "sentiment": " positive"}[name]
    assert all((r.target == positive) == (r.meta["polarity"] == "positive") for r in rows)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_is_deterministic_and_sized(name: str) -> None:
    fam = get_family(name)
    a = fam.corpus(fam.params(), np.random.default_rng(5), 50)
    assert len(a) == 50 and all(isinstance(s, str) and s for s in a)
    assert a == fam.corpus(fam.params(), np.random.default_rng(5), 50)
    for s in a:
        assert "  " not in s and s == s.strip() and s.split()[-1] == ".", s


def test_capitals_corpus_states_every_fact() -> None:
    n_facts = ONE_PASS["capitals"]
    text = capitals.corpus(TaskParams(), np.random.default_rng(0), n_facts)
    assert len(set(text)) == n_facts  # one whole pass: every fact in every phrasing
    for country, capital in capitals.CAPITALS.items():
        for t in capitals.TEMPLATES:
            assert f"{t.format(country=country)} {capital} ." in text


@pytest.mark.parametrize("name", sorted(ONE_PASS))
def test_memorised_corpus_contains_every_row_answer(name: str) -> None:
    """For fact-like families one pass of the corpus holds each dataset prompt with its answer."""
    fam, n = get_family(name), ONE_PASS[name]
    text = set(fam.corpus(fam.params(), np.random.default_rng(0), n))
    for r in build_rows(name, None, seed=0):
        assert any(s.startswith(r.prompt + r.target + " ") for s in text), r.id


def test_algorithmic_corpora_are_consistent() -> None:
    rng = np.random.default_rng(0)
    for s in ioi.corpus(TaskParams(), rng, 200):
        names = [w for w in s.split() if w in ioi.NAMES]
        a, b, subj, answer = names
        assert subj in (a, b) and answer in (a, b) and answer != subj and a != b, s
    singular = {s for s, _ in sva.SUBJECTS}
    att_singular = {s for s, _ in sva.ATTRACTORS}
    seen_attractor_numbers = set()
    for s in sva.corpus(TaskParams(), rng, 300):
        words = s.split()
        verb = next(w for w in words if w in ("is", "are"))
        assert verb == ("is" if words[1] in singular else "are"), s
        if len(words) > 5:
            seen_attractor_numbers.add((words[1] in singular, words[-4] in att_singular))
    assert len(seen_attractor_numbers) == 4  # attractors of both numbers for both subjects
    params = induction.InductionParams()
    shapes = set()
    for s in induction.corpus(params, rng, 200):
        words = s.split()[:-1]
        length = len(set(words))  # distinct words, repeated as a whole
        repeats = len(words) // length
        assert repeats in (2, 3) and words == words[:length] * repeats, s
        shapes.add((length, repeats))
    assert {(params.seq_len, 2), (params.seq_len, 3)} <= shapes


def test_corpus_covers_every_entity() -> None:
    rng = np.random.default_rng(0)
    vocab = set()
    for name in NAMES:
        fam = get_family(name)
        vocab.update(w for s in fam.corpus(fam.params(), rng, 3000) for w in s.split())
    assert set(ioi.NAMES) <= vocab
    assert {w for pair in sva.SUBJECTS for w in pair} <= vocab
    assert set(induction.WORDS) <= vocab
    assert {w for p in refusal.PAIRS for req in p for w in req.split()} <= vocab
    assert {w for pair in sentiment.PAIRS for w in pair} <= vocab


def test_induction_words_are_used_by_no_other_family() -> None:
    rng = np.random.default_rng(0)
    others = {
        w
        for name in NAMES
        if name != "induction"
        for s in get_family(name).corpus(get_family(name).params(), rng, 2000)
        for w in s.split()
    }
    assert not set(induction.WORDS) & others


def test_request_pairs_have_equal_length() -> None:
    for harmful, harmless in refusal.PAIRS:
        assert len(harmful.split()) == len(harmless.split()), (harmful, harmless)
    assert len({w for p in sentiment.PAIRS for w in p}) == 2 * len(sentiment.PAIRS)


def test_bad_params_and_rows_are_reported() -> None:
    with pytest.raises(ConfigError, match="n_train"):
        build_rows("capitals", {"n_train": 0}, seed=0)
    with pytest.raises(
        ConfigError, match="n_tran: unknown key; allowed keys here: n_test, n_train"
    ):
        build_rows("capitals", {"n_tran": 3}, seed=0)
    with pytest.raises(ConfigError, match="test_fraction"):
        build_rows("ioi", {"test_fraction": 0.05}, seed=0)
    with pytest.raises(ConfigError, match="seed"):
        build_rows("ioi", None, seed=-1)
    good = build_rows("capitals", {"n_train": 2, "n_test": 1}, seed=0)
    raw = [r.model_dump() for r in good]
    assert parse_rows(raw, "x.jsonl") == good
    raw[1] = {**raw[1], "counterfactual": raw[1]["target"]}
    del raw[2]["target"]
    with pytest.raises(DatasetError) as err:
        parse_rows(raw, "data/datasets/capitals.jsonl")
    msg = str(err.value)
    assert "capitals.jsonl: 2 invalid row(s)" in msg
    assert good[1].id in msg and good[2].id in msg and "target" in msg
