"""Rows → padded batches: each prompt's own last position, one-token answers, clear errors."""

from __future__ import annotations

import pytest
import torch

from circuitlab.errors import DatasetError
from circuitlab.models.toy import build_tokenizer
from circuitlab.prompts import batch_from_ids, encode_rows
from circuitlab.types import TaskRow


def row(i: int, prompt: str, corrupt: str, target: str = " Paris", cf: str = " Rome") -> TaskRow:
    return TaskRow(
        id=f"r{i}",
        split="train",
        prompt=prompt,
        target=target,
        counterfactual=cf,
        corrupt_prompt=corrupt,
    )


TOK = build_tokenizer(["The capital of France is Paris Rome .", "Italy has Rome as capital ."])


def test_padding_and_last_positions() -> None:
    rows = [
        row(0, "The capital of France is", "The capital of Italy is"),
        row(1, "Italy has", "France has", target=" Rome", cf=" Paris"),
    ]
    b = encode_rows(rows, TOK)
    assert b.input_ids.shape == b.corrupt_ids.shape == (2, 6)
    assert b.last.tolist() == [5, 2]
    assert b.attention_mask.sum(1).tolist() == [6, 3]
    assert (b.input_ids[1, 3:] == TOK.pad_token_id).all()
    vocab = TOK.get_vocab()
    assert b.target.tolist() == [vocab["Paris"], vocab["Rome"]]
    assert b.counterfactual.tolist() == [vocab["Rome"], vocab["Paris"]]
    assert torch.equal(b.input_ids[:, 0], torch.full((2,), TOK.bos_token_id))


def test_bad_rows_are_listed() -> None:
    rows = [
        row(0, "The capital of France is", "The capital of Italy is"),
        row(1, "The capital of France is", "Italy is"),
        row(2, "The capital of France is", "The capital of Italy is", target=" Paris Rome"),
    ]
    with pytest.raises(DatasetError) as info:
        encode_rows(rows, TOK)
    msg = str(info.value)
    assert "r1" in msg and "r2" in msg and "r0:" not in msg
    with pytest.raises(DatasetError, match="no rows"):
        encode_rows([], TOK)


def test_batch_from_ids_equals_the_encoded_batch() -> None:
    rows = [
        row(0, "The capital of France is", "The capital of Italy is"),
        row(1, "Italy has", "France has", target=" Rome", cf=" Paris"),
    ]
    enc = encode_rows(rows, TOK)
    clean = [enc.input_ids[i, : n + 1].tolist() for i, n in enumerate(enc.last.tolist())]
    corrupt = [enc.corrupt_ids[i, : n + 1].tolist() for i, n in enumerate(enc.last.tolist())]
    b = batch_from_ids(clean, corrupt, enc.target, enc.counterfactual.tolist(),
                       ids=enc.ids, pad_id=TOK.pad_token_id)  # fmt: skip
    for name in ("input_ids", "attention_mask", "last", "target", "counterfactual", "corrupt_ids"):
        assert torch.equal(getattr(b, name), getattr(enc, name)), name
    assert b.ids == enc.ids and b.has_answers and b.has_corrupt
    square = batch_from_ids(torch.tensor([[1, 2], [3, 4]]))  # a [B, S] tensor, no padding
    assert square.last.tolist() == [1, 1] and square.ids == ("0", "1")
    assert not square.has_answers and not square.has_corrupt


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clean": [[1, 2]], "corrupt": [[1]]}, "prompt 0: the clean prompt has 2 tokens"),
        ({"clean": [[1, 2]], "corrupt": [[1, 2], [3, 4]]}, "1 clean prompts but 2 corrupt"),
        ({"clean": [[1, -2]]}, "negative token id"),
        ({"clean": [[]]}, "clean prompt 0 is empty"),
        ({"clean": []}, "no clean prompts"),
        ({"clean": [["a"]]}, "one list of ints per prompt"),
        ({"clean": torch.ones(3, dtype=torch.long)}, r"\[B, S\] tensor"),
        ({"clean": [[1], [2]], "answer": [3]}, "answer: one token id per prompt \\(2\\)"),
        ({"clean": [[1]], "ids": ["a", "b"]}, "2 ids for 1 prompts"),
    ],
)
def test_batch_from_ids_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        batch_from_ids(**kwargs)


def test_missing_answers_and_corrupt_prompts_fail_where_they_are_needed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from circuitlab.acdc import get_metric, patchable, prepare
    from tiny_models import build_tiny

    pm = patchable(build_tiny("LlamaForCausalLM", tmp_path))
    batch = batch_from_ids([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(DatasetError, match="pass corrupt= to batch_from_ids"):
        prepare(pm, batch, "resample")
    ctx = prepare(pm, batch, "zero")
    assert get_metric("kl")(ctx.clean_logits[None], ctx).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DatasetError, match="logit_diff metric reads the answer tokens"):
        get_metric("logit_diff")(ctx.clean_logits[None], ctx)
