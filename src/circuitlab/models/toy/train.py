"""Train the embedded default model: a small Llama with grouped-query attention, on CPU.

`train_toy_model` is a pure function of (config, corpus, tokenizer): seeded and single-process,
so the same inputs give bit-identical weights on the same machine, with any thread count.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from circuitlab.errors import ConfigError
from circuitlab.models.toy.corpus import build_corpus
from circuitlab.models.toy.settings import ToyArchitecture, ToyModelConfig, ToyTraining
from circuitlab.models.toy.tokenizer import build_tokenizer
from circuitlab.progress import bar as progress_bar


@dataclass(frozen=True)
class TrainResult:
    model: LlamaForCausalLM
    losses: list[float]  # mean loss over each `log_every` window
    loss_steps: list[int]
    seconds: float
    n_sequences: int


def make_llama(arch: ToyArchitecture, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.d_model,
        intermediate_size=arch.d_mlp,
        num_hidden_layers=arch.n_layers,
        num_attention_heads=arch.n_heads,
        num_key_value_heads=arch.n_kv_heads,
        max_position_embeddings=arch.max_seq_len,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.02,
    )
    return LlamaForCausalLM(config)


def encode_corpus(
    corpus: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize every sentence as `<bos> … <eos>`, right-padded; returns (ids, lengths)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: ~3x faster than the Python wrapper
        enc = [e.ids for e in backend.encode_batch(list(corpus), add_special_tokens=True)]
    else:
        enc = tokenizer(list(corpus), add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    seqs = [[*ids, eos] for ids in enc]
    too_long = [i for i, s in enumerate(seqs) if len(s) > max_len]
    if too_long:
        raise ConfigError(
            f"{len(too_long)} corpus sentence(s) exceed max_seq_len={max_len} tokens "
            f"(first: {corpus[too_long[0]]!r}); raise toy architecture.max_seq_len"
        )
    # one vectorised fill instead of a tensor per sentence (290,000 of them by default)
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), tokenizer.pad_token_id, dtype=torch.long)
    filled = torch.arange(ids.shape[1]) < lengths[:, None]
    ids[filled] = torch.tensor(list(itertools.chain.from_iterable(seqs)), dtype=torch.long)
    return ids, lengths


def lr_at(step: int, cfg: ToyTraining) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_toy_model(
    arch: ToyArchitecture,
    cfg: ToyTraining,
    corpus: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    *,
    threads: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a fresh Llama on `corpus` (one sentence per sequence) and return it in eval mode,
    with ``cfg.threads`` torch threads, else ``threads`` (the job's cores), else torch's
    default: the weights are the same for any count (MKL's strict reproducible branch,
    `circuitlab.provenance.numerics`)."""
    if not corpus:
        raise ConfigError("the toy corpus is empty")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads or threads_before)
    try:
        torch.manual_seed(cfg.seed)
        model = make_llama(arch, tokenizer)
        model.config._attn_implementation = "sdpa"
        ids, lengths = encode_corpus(corpus, tokenizer, arch.max_seq_len)
        gen = torch.Generator().manual_seed(cfg.seed)
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            betas=(0.9, 0.98),
        )
        model.train()
        losses, loss_steps, window = [], [], []
        start = time.perf_counter()
        bar = progress_bar(range(cfg.steps), desc="train toy model", unit="step", enabled=progress)
        for step in bar:
            idx = torch.randint(len(ids), (cfg.batch_size,), generator=gen)
            width = int(lengths[idx].max())
            batch = ids[idx, :width]
            mask = batch != tokenizer.pad_token_id
            labels = batch.masked_fill(~mask, -100)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            out = model(input_ids=batch, attention_mask=mask.long(), labels=labels)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            window.append(out.loss.detach())
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                mean = float(torch.stack(window).mean())
                losses.append(mean)
                loss_steps.append(step + 1)
                window.clear()
                bar.set_postfix(loss=f"{mean:.3f}")
        seconds = time.perf_counter() - start
        model.eval()
        model.config._attn_implementation = "eager"
        return TrainResult(model, losses, loss_steps, seconds, len(corpus))
    finally:
        torch.set_num_threads(threads_before)


def build_toy_model(
    cfg: ToyModelConfig,
    family_params: Mapping[str, Any],
    seed: int,
    *,
    threads: int | None = None,
    progress: bool = True,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, TrainResult]:
    """Corpus → tokenizer (the corpus's words) → trained model. Pure and seeded.

    The model depends on the families' corpus parameters only, not on the dataset files: the
    corpus covers every entity by construction, and `check_dataset` rejects any dataset row
    holding a word the tokenizer does not know.
    """
    corpus = build_corpus(family_params, cfg.corpus, seed)
    tokenizer = build_tokenizer(corpus)
    result = train_toy_model(
        cfg.architecture, cfg.training, corpus, tokenizer, threads=threads, progress=progress
    )
    return result.model, tokenizer, result
