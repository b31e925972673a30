"""Rows → padded batches: each prompt's own last position, one-token answers, clear errors."""

from __future__ import annotations

import pytest
import torch

from circuitlab.errors import DatasetError
from circuitlab.models.toy import build_tokenizer
from circuitlab.prompts import encode_rows
from circuitlab.tasks.base import TaskRow


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
