"""Per-tokenizer row checks: equal lengths, one-token answers, fail vs drop."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from circuitlab.errors import DatasetError
from circuitlab.tasks import (
    REGISTRY,
    TaskRow,
    TokenCheckReport,
    build_rows,
    check_for_tokenizer,
    get_family,
)

_PRE = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])


def _corpus(n: int = 2500) -> list[str]:
    rng = np.random.default_rng(0)
    out: list[str] = []
    for name in sorted(REGISTRY):
        family = get_family(name)
        out += family.corpus(family.params(), rng, n)
    return out


@pytest.fixture(scope="module")
def word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the corpus of every family, like the toy model's."""
    words = sorted({w for s in _corpus() for w in s.split()})
    vocab = {w: i for i, w in enumerate(["[UNK]", "[BOS]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = _PRE
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="[BOS]")
    wrapped.name_or_path = "toy-words"
    return wrapped


@pytest.fixture(scope="module")
def tiny_bpe() -> PreTrainedTokenizerFast:
    """A byte-level BPE with so few merges that capitals are several tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(200), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok)
    wrapped.name_or_path = "tiny-bpe"
    return wrapped


def _rows(name: str = "capitals", **params: int) -> list[TaskRow]:
    return build_rows(name, {"n_train": 8, "n_test": 4, **params}, seed=0)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_family_fits_the_word_tokenizer(
    name: str, word_tokenizer: PreTrainedTokenizerFast
) -> None:
    rows = build_rows(name, None, seed=0)
    kept, report = check_for_tokenizer(rows, word_tokenizer, task=name)
    assert kept == rows
    assert (report.n_rows, report.n_kept, report.n_dropped) == (len(rows), len(rows), 0)
    assert report.reasons == {} and report.offending == {}


def _bad_rows() -> list[TaskRow]:
    rows = _rows()
    two_tokens = rows[1].model_copy(update={"target": " Paris Rome"})
    longer = rows[2].model_copy(update={"corrupt_prompt": rows[2].corrupt_prompt + " ,"})
    same = rows[3].model_copy(update={"counterfactual": " " + rows[3].target})  # "  Paris"
    unknown = rows[4].model_copy(update={"counterfactual": " Atlantis"})
    return [rows[0], two_tokens, longer, same, unknown, *rows[5:]]


def test_fail_lists_offending_rows(word_tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(DatasetError) as err:
        check_for_tokenizer(_bad_rows(), word_tokenizer, task="capitals")
    msg = str(err.value)
    assert "task capitals" in msg and "'toy-words'" in msg and "4 of 12 row(s)" in msg
    assert "datasets.on_invalid: drop" in msg
    assert "capitals-train-0001: target_not_one_token (target ' Paris Rome' is 2 tokens)" in msg
    assert "capitals-train-0002: length_mismatch (prompt is" in msg
    assert "capitals-train-0003: same_token" in msg
    assert "capitals-train-0004: unknown_token" in msg
    assert "capitals-train-0000" not in msg and "… and" not in msg


def test_drop_counts_per_reason(word_tokenizer: PreTrainedTokenizerFast) -> None:
    bad = _bad_rows()
    kept, report = check_for_tokenizer(bad, word_tokenizer, task="capitals", on_invalid="drop")
    assert [r.id for r in kept] == [bad[0].id, *(r.id for r in bad[5:])]
    assert (report.n_rows, report.n_kept, report.n_dropped) == (12, 8, 4)
    assert report.reasons == {
        "target_not_one_token": 1,
        "length_mismatch": 1,
        "same_token": 1,
        "unknown_token": 1,
    }
    assert report.offending_ids == [r.id for r in bad[1:5]]
    metrics = report.metrics()
    assert metrics["n_dropped"] == 4 and metrics["dropped_length_mismatch"] == 1
    assert metrics["dropped_counterfactual_not_one_token"] == 0
    # JSON round trip, and the dump is valid metrics input (numbers, strings, dicts)
    assert TokenCheckReport.model_validate_json(report.model_dump_json()) == report
    dumped = report.model_dump(mode="json")
    assert all(isinstance(v, str) for v in dumped["offending"].values())


def test_multi_token_answers_are_never_cut(tiny_bpe: PreTrainedTokenizerFast) -> None:
    rows = _rows("capitals", n_train=20, n_test=10)
    with pytest.raises(DatasetError) as err:
        check_for_tokenizer(rows, tiny_bpe, task="capitals")
    msg = str(err.value)
    assert "'tiny-bpe'" in msg and "target_not_one_token" in msg
    assert "… and 10 more" in msg  # 30 offending rows, 20 listed
    with pytest.raises(DatasetError, match="every train row was dropped"):
        check_for_tokenizer(rows, tiny_bpe, task="capitals", on_invalid="drop")


def test_answer_merging_with_the_prompt_is_caught(word_tokenizer: PreTrainedTokenizerFast) -> None:
    rows = _rows()
    glued = rows[0].model_copy(update={"target": rows[0].target.strip()})  # no leading space
    kept, report = check_for_tokenizer(
        [glued, *rows[1:]], word_tokenizer, task="t", on_invalid="drop"
    )
    assert kept == rows[1:]
    assert report.offending[glued.id].startswith(
        f"target_not_one_token (target {glued.target!r} merges with the end of the prompt)"
    )


def test_tokenizer_is_called_in_batches(word_tokenizer: PreTrainedTokenizerFast) -> None:
    calls: list[int] = []

    class Counting:
        name_or_path = "counting"
        unk_token_id = word_tokenizer.unk_token_id

        def __call__(self, texts: list[str], **kw: object) -> object:
            calls.append(len(texts))
            return word_tokenizer(texts, **kw)

    rows = _rows(n_train=30, n_test=30)
    kept, _ = check_for_tokenizer(rows, Counting(), task="capitals")  # type: ignore[arg-type]
    assert kept == rows and calls == [60, 60, 60, 60]


def test_bad_switch_value(word_tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(DatasetError, match="on_invalid"):
        check_for_tokenizer(_rows(), word_tokenizer, task="x", on_invalid="skip")  # type: ignore[arg-type]
