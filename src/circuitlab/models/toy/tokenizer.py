"""The toy model's word-level tokenizer (HF `tokenizers` WordLevel as `PreTrainedTokenizerFast`).

Words are split on whitespace with punctuation isolated, so every word of the task corpus is
one token and `" Paris"` (a target with its leading space) encodes to the single id of `Paris`.
`tokenizer(prompt)` prepends `<bos>`, as Llama tokenizers do, so `filter_bos` means the same
thing on the toy model as on a hub model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from circuitlab.errors import DatasetError

SPECIAL = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = SPECIAL


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )


def words(texts: Iterable[str]) -> Counter[str]:
    """Count the word-level tokens of `texts` exactly as the tokenizer will split them."""
    pre = _pre_tokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(piece for piece, _ in pre.pre_tokenize_str(text))
    return counts


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer whose vocabulary is every word in `texts`, in a stable order.

    Ids: the four special tokens first, then words by descending frequency, ties broken
    alphabetically — so the same corpus always gives the same ids.
    """
    counts = words(texts)
    if not counts:
        raise DatasetError("cannot build a tokenizer from an empty corpus")
    ordered = sorted(counts, key=lambda w: (-counts[w], w))
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for w in ordered:
        if w not in vocab:
            vocab[w] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = _pre_tokenizer()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="right",
        model_max_length=512,
    )
