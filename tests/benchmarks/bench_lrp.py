"""LRP attribution benchmark: a batch of prompts on the toy model and on a larger random Llama.

Each case reports
(a) the fast batched attribution (`attribute_batch`) against a plain forward + backward of the
    same batch with the same (eager) attention — goal ≤ 1.5× — and, for honesty either way,
    against a forward + `autograd.grad` with respect to the neuron activations only;
(b) the speed-up of `attribute_rows` over the seed-style per-prompt, per-position reference
    (`tests/lrp_reference.py`) on the same rows — goal ≥ 50×;
(c) that the two produce the same attributions (allclose, rtol 1e-4, atol 1e-5 × the largest
    attribution: batching changes the fp32 summation order; one prompt at a time is bit-identical).

Goals are reported, never asserted; only a failed equivalence check is an error.
Run through `tests/benchmarks/run.py` (which puts `tests/` on `sys.path`).
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from circuitlab.lrp.attribution import (
    AttributionOptions,
    Attributions,
    Metric,
    attribute_batch,
    attribute_rows,
    metric_values,
)
from circuitlab.models import LoadedModel, load_model
from circuitlab.prompts import PromptBatch, encode_rows
from circuitlab.tasks.io import load_rows
from circuitlab.types import TaskRow
from reference.lrp import reference_attribution

ROOT = Path(__file__).resolve().parents[2]
TOY_MODEL = ROOT / "data" / "models" / "toy"
TOY_DATA = ROOT / "data" / "datasets" / "ioi.jsonl"

# Attributions: fp32 sums run in a different order in a batch than one prompt at a time, so the
# absolute tolerance scales with the largest attribution (batch 1 is bit-identical; see batch1_*).
RTOL, ATOL, ATOL_SCALE = 1e-4, 1e-6, 1e-5
METRIC_TOL = 1e-5  # metric values (as in tests/lrp/test_attribution.py)
GOAL_OVERHEAD = 1.5  # (a) fast / plain forward+backward ≤ this
GOAL_SPEEDUP = 50.0  # (b) reference / fast ≥ this

Result = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """Sizes and repeats; `quick` shrinks everything for a smoke run (< 1 min)."""

    n_prompts: int = 32
    repeats: int = 5
    large_layers: int = 8
    slow_s: float = 20.0  # a reference run slower than this is timed once

    @classmethod
    def make(cls, quick: bool, repeats: int | None = None) -> Settings:
        base = cls(n_prompts=8, repeats=2, large_layers=2) if quick else cls()
        return base if repeats is None else dataclasses.replace(base, repeats=repeats)


# --------------------------------------------------------------------------- timing
def measure(
    fn: Callable[[], Any],
    repeats: int,
    *,
    setup: Callable[[], None] | None = None,
    warmup: Callable[[], Any] | None = None,
    slow_s: float | None = None,
) -> tuple[Result, Any]:
    """Median wall time of `repeats` runs of `fn` after one warm-up (`warmup`, default `fn`).

    `setup` runs untimed before every run. When the first timed run exceeds `slow_s`, it is
    the only one. Returns the timing record and the last run's return value.
    """
    if setup is not None:
        setup()
    start = time.perf_counter()
    (warmup or fn)()
    warm_s = time.perf_counter() - start
    runs: list[float] = []
    out = None
    for _ in range(repeats):
        if setup is not None:
            setup()
        out = None  # free the previous result before the next run
        gc.collect()
        start = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - start)
        if slow_s is not None and runs[0] > slow_s:
            break
    record = {"median_s": statistics.median(runs), "runs_s": runs, "warmup_s": warm_s}
    return record, out


def _ratio(name: str, value: float, goal: float | None = None, op: str = "<=") -> Result:
    met = None if goal is None else (value <= goal if op == "<=" else value >= goal)
    return {
        "name": name,
        "value": value,
        "goal": None if goal is None else f"{op} {goal:g}×",
        "met": met,
    }


# ------------------------------------------------------------------------ baselines
def plain_forward_backward(lm: LoadedModel, batch: PromptBatch, metric: Metric) -> None:
    """The usual training step's cost: forward, metric, `backward()` into parameter grads."""
    logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    rows = torch.arange(len(batch), device=logits.device)
    value = metric_values(
        logits[rows, batch.last].float(), batch.target, batch.counterfactual, metric
    )
    value.sum().backward()


def forward_grad_neurons(lm: LoadedModel, batch: PromptBatch, metric: Metric) -> None:
    """Forward, then `autograd.grad` of the metric w.r.t. the neuron activations only (no
    parameter grads, no LRP rules): the least work any gradient-based attribution needs."""
    with lm.adapter.capture_neurons(lm.model, detach=False) as acts:
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        rows = torch.arange(len(batch), device=logits.device)
        value = metric_values(
            logits[rows, batch.last].float(), batch.target, batch.counterfactual, metric
        )
        torch.autograd.grad(value.sum(), [acts[layer] for layer in sorted(acts)])


# ----------------------------------------------------------------------- equivalence
def compare(
    fast: Attributions,
    ref: Sequence[dict],
    ref_metric: Sequence[float],
    unbatched: Attributions | None = None,
) -> Result:
    """(c): the reference's `(layer, offset, neuron) → value` dicts laid onto the fast scores'
    dense grid (absent key = 0), compared elementwise. `unbatched` (the fast code at batch
    size 1, optional) is reported, not judged: it tells float reduction order under batching
    and padding apart from a real difference."""
    dense = torch.zeros_like(fast.scores)
    n_pos = fast.n_positions
    for b, found in enumerate(ref):
        if found:
            idx = torch.tensor(list(found.keys()))
            dense[b, idx[:, 0], idx[:, 1] + n_pos, idx[:, 2]] = torch.tensor(
                list(found.values()), dtype=dense.dtype
            )
    diff = (fast.scores - dense).abs()
    atol = max(ATOL, ATOL_SCALE * dense.abs().max().item())
    big = dense.abs() > atol
    rel = (diff[big] / dense.abs()[big]).max().item() if bool(big.any()) else 0.0
    usage = (diff / (atol + RTOL * dense.abs())).max().item()  # ≤ 1 ⟺ allclose
    ref_m = torch.tensor(list(ref_metric), dtype=fast.metric.dtype)
    scores_ok = torch.allclose(fast.scores, dense, rtol=RTOL, atol=atol)
    metric_ok = torch.allclose(fast.metric, ref_m, rtol=METRIC_TOL, atol=METRIC_TOL)
    mismatched = int(((fast.scores != 0) ^ (dense != 0)).sum())
    out = {
        "name": "(c) fast ≡ reference",
        "passed": bool(scores_ok and metric_ok and len(ref) == fast.scores.shape[0]),
        "max_abs_diff": diff.max().item(),
        "max_rel_diff": rel,  # over values with |ref| > atol
        "tolerance_used": usage,
        "max_abs_value": dense.abs().max().item(),
        "metric_max_abs_diff": (fast.metric - ref_m).abs().max().item(),
        "nonzero_pattern_mismatches": mismatched,
        "n_values": int((dense != 0).sum()),
        "tolerance": f"rtol {RTOL:g}, atol {atol:.3g} ({ATOL_SCALE:g} × max |attribution|)",
    }
    if unbatched is not None and unbatched.scores.shape == dense.shape:
        out["batch1_max_abs_diff"] = (unbatched.scores - dense).abs().max().item()
    return out


# ------------------------------------------------------------------------------ case
def run_case(
    name: str, lm: LoadedModel, rows: Sequence[TaskRow], settings: Settings, source: str = ""
) -> Result:
    """(a), (b) and (c) for one model and one set of rows (one batch of all of them)."""
    opts = AttributionOptions(batch_size=len(rows))  # LRP rules, attention full, logit_diff
    model = lm.model
    batch = encode_rows(rows, lm.tokenizer).to(lm.device)
    n_positions = int(batch.last.max()) + 1
    clear = lambda: model.zero_grad(set_to_none=True)  # noqa: E731
    reps = settings.repeats

    fast_t, _ = measure(lambda: attribute_batch(lm, batch, n_positions, opts), reps)
    plain_t, _ = measure(lambda: plain_forward_backward(lm, batch, opts.metric), reps, setup=clear)
    neur_t, _ = measure(lambda: forward_grad_neurons(lm, batch, opts.metric), reps, setup=clear)
    clear()
    rows_t, fast = measure(lambda: attribute_rows(lm, rows, opts, progress=False), reps)
    ref_t, (ref, ref_metric) = measure(
        lambda: reference_attribution(lm, rows, opts),
        reps,
        warmup=lambda: reference_attribution(lm, rows[:2], opts),
        slow_s=settings.slow_s,
    )
    clear()
    one = attribute_rows(lm, rows, dataclasses.replace(opts, batch_size=1), progress=False)

    lengths = (batch.last + 1).tolist()
    return {
        "case": name,
        "setup": {
            "model": source or lm.spec.id,
            "architecture": type(model).__name__,
            "attn_implementation": model.config._attn_implementation,
            "dtype": str(next(model.parameters()).dtype),
            **dataclasses.asdict(lm.dims),
            "n_params": sum(p.numel() for p in model.parameters()),
            "n_prompts": len(rows),
            "prompt_tokens_min_max": [min(lengths), max(lengths)],
            "padded_length": int(batch.input_ids.shape[1]),
            "options": {
                "metric": opts.metric,
                "attention_rule": opts.attention_rule,
                "lrp": opts.lrp,
            },
            "repeats": reps,
        },
        "timings": [
            {"name": "fast attribute_batch", **fast_t},
            {"name": "plain fwd + backward() (param grads)", **plain_t},
            {"name": "fwd + autograd.grad(neurons only)", **neur_t},
            {"name": "fast attribute_rows", **rows_t},
            {"name": "reference: per prompt, per position", **ref_t},
        ],
        "ratios": [
            _ratio(
                "(a) fast / plain fwd+bwd", fast_t["median_s"] / plain_t["median_s"], GOAL_OVERHEAD
            ),
            _ratio("(a) fast / fwd+grad(neurons)", fast_t["median_s"] / neur_t["median_s"]),
            _ratio(
                "(b) reference / fast", ref_t["median_s"] / rows_t["median_s"], GOAL_SPEEDUP, ">="
            ),
        ],
        "checks": [compare(fast, ref, ref_metric, one)],
    }


# ------------------------------------------------------------------------ the models
def save_word_tokenizer(path: Path, n_words: int) -> None:
    """A word-level tokenizer `<unk> <eos> w0 … w{n_words-1}` (as `tiny_models`, larger)."""
    vocab = {"<unk>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(n_words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>"
    ).save_pretrained(path)


def build_random_llama(path: Path, n_layers: int, vocab: int = 1024, seed: int = 0) -> LoadedModel:
    """A random Llama (d_model 512, d_mlp 2048, 8 heads, 2 kv heads), saved with its tokenizer
    under `path` and loaded back with `load_model` (eager attention). Norm weights are
    perturbed so that none is trivial."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=n_layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=1,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    save_word_tokenizer(path, vocab - 2)
    return load_model(path)


def random_rows(n: int, n_words: int, lo: int = 12, hi: int = 20, seed: int = 0) -> list[TaskRow]:
    """`n` prompts of `lo`–`hi` random words with distinct target and counterfactual words."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(lo, hi + 1, (1,), generator=g))
        words = torch.randint(0, n_words, (length,), generator=g).tolist()
        target, other = torch.randperm(n_words, generator=g)[:2].tolist()
        prompt = " ".join(f"w{w}" for w in words)
        rows.append(
            TaskRow(
                id=f"p{i}",
                split="train",
                prompt=prompt,
                target=f" w{target}",
                counterfactual=f" w{other}",
                corrupt_prompt=prompt,
                meta={},
            )
        )
    return rows


# ------------------------------------------------------------------------- entry point
def run(settings: Settings, log: Callable[[str], None] = print) -> list[Result]:
    """Both cases; a missing toy model is reported as a skipped case."""
    results: list[Result] = []
    if not (TOY_MODEL / "config.json").exists() or not TOY_DATA.exists():
        reason = (
            f"{TOY_MODEL.relative_to(ROOT)} or {TOY_DATA.relative_to(ROOT)} is missing; "
            "run `make reproduce` first to train the toy model and build the datasets"
        )
        log(f"[lrp] skipping case 'toy': {reason}")
        results.append({"case": "toy", "skipped": reason})
    else:
        log(f"[lrp] case 'toy': {settings.n_prompts} ioi train prompts")
        rows = load_rows(TOY_DATA, split="train")[: settings.n_prompts]
        results.append(run_case("toy", load_model(TOY_MODEL), rows, settings, "data/models/toy"))

    name = f"llama-{settings.large_layers}x512"
    log(f"[lrp] case {name!r}: random LlamaForCausalLM, {settings.n_prompts} random prompts")
    with tempfile.TemporaryDirectory(prefix="circuitlab-bench-") as tmp:
        lm = build_random_llama(Path(tmp), settings.large_layers)
        rows = random_rows(settings.n_prompts, lm.model.config.vocab_size - 2)
        results.append(run_case(name, lm, rows, settings, "random weights (temp dir)"))
    return results
