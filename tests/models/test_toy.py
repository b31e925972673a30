"""The embedded default model: tokenizer, corpus and a (tiny) deterministic training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuitlab.errors import ConfigError
from circuitlab.models.evaluate import evaluate_task
from circuitlab.models.loading import load_model
from circuitlab.models.toy import build_corpus, build_tokenizer, build_toy_model
from circuitlab.models.toy.settings import ToyArchitecture, ToyCorpus, ToyModelConfig, ToyTraining
from circuitlab.prompts import encode_rows
from circuitlab.tasks import build_rows

TINY = ToyModelConfig(
    source="toy",
    architecture=ToyArchitecture(n_layers=1, d_model=32, n_heads=4, n_kv_heads=2, d_mlp=64),
    training=ToyTraining(steps=15, batch_size=8, warmup_steps=2, log_every=5),
    corpus=ToyCorpus(sentences_per_family=400, filler_sentences=10),  # covers every entity
)
FAMILIES = {"capitals": {}, "sva": {}}


def test_tokenizer_one_token_per_word_and_bos() -> None:
    tok = build_tokenizer(["The capital of France is Paris .", "Q : the key ? A : is ."])
    ids = tok("The capital of France is")["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 6
    assert tok("The capital of France is Paris")["input_ids"][:-1] == ids
    assert (
        tok(" Paris", add_special_tokens=False)["input_ids"]
        == tok("Paris", add_special_tokens=False)["input_ids"]
    )
    assert tok("zebra", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "The capital of France is"


def test_tokenizer_ids_are_stable() -> None:
    texts = ["b a c .", "a a b ."]
    assert build_tokenizer(texts).get_vocab() == build_tokenizer(list(reversed(texts))).get_vocab()


def test_corpus_is_seeded_and_weighted() -> None:
    cfg = ToyCorpus(sentences_per_family=40, weights={"sva": 2.5}, filler_sentences=5)
    a = build_corpus(FAMILIES, cfg, seed=1)
    assert a == build_corpus(FAMILIES, cfg, seed=1)
    assert a != build_corpus(FAMILIES, cfg, seed=2)
    assert len(a) == 40 + 100 + 5
    with pytest.raises(ConfigError, match="not enabled"):
        build_corpus(FAMILIES, ToyCorpus(weights={"ioi": 2.0}), seed=0)


def test_training_is_deterministic_and_learns(tmp_path: Path) -> None:
    m1, tok, r1 = build_toy_model(TINY, FAMILIES, seed=0, progress=False)
    m2, _, r2 = build_toy_model(TINY, FAMILIES, seed=0, progress=False)
    for (n, p), q in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(p, q), n
    assert r1.losses == r2.losses and r1.loss_steps == [5, 10, 15]
    assert r1.losses[-1] < r1.losses[0]
    assert m1.config.num_key_value_heads == 2 and m1.config._attn_implementation == "eager"

    m1.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.adapter.family == "llama"
    rows = build_rows("sva", {"n_train": 4, "n_test": 4}, seed=0)
    batch = encode_rows(rows, loaded.tokenizer)
    with torch.no_grad():
        a = m1(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        b = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.equal(a, b)
    scores = evaluate_task(loaded.model, loaded.tokenizer, rows, batch_size=3)
    assert set(scores) == {"train", "test"} and scores["test"]["n"] == 4
