"""Steering evaluation on the test split: dose-response, side effects and controls, with CIs.

A *condition* is a steering method as a function `multiplier → context manager` (neuron
steering of a circuit, CAA at one layer, or one of their random controls). For each multiplier
every condition is run on:

- the evaluated task's (or behaviour's) test prompts: target probability, logit difference
  (target − counterfactual), accuracy (argmax is the target); for a behaviour also the
  behaviour rate — the probability of the behaviour's first token (the answer of its
  `polarity: positive` rows) on all, positive and negative prompts — and a rule-based check of
  greedy generated text (a regex, case-insensitive);
- a neutral prompt set: KL(steered ‖ unsteered) of the next-token distribution;
- the other tasks' test prompts: accuracy (one row of the task × task leakage matrix).

The random controls (≥ 5 seeds) are averaged per prompt, then every number gets a 95 %
percentile bootstrap interval over prompts; `delta` (steered − control) is bootstrapped paired.
Effects are also reported against the unsteered model, run once without any hook.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from circuitlab.progress import bar as progress_bar
from circuitlab.prompts import PromptBatch, batches, encode_prompts, encode_rows
from circuitlab.stats import bootstrap_ci, kl_divergence
from circuitlab.steering.neurons import (
    SteeringError,
    generate,
    last_logits,
    token_ids,
)

if TYPE_CHECKING:
    from circuitlab.models.loading import LoadedModel
    from circuitlab.steering.settings import SideEffectBudget
    from circuitlab.types import TaskRow

#: A steering method: multiplier → context manager active during the forward passes (hooks
#: that act at the last prompt token read it from `circuitlab.steering.using_last`).
Steerer = Callable[[float], AbstractContextManager[Any]]
PerPrompt = dict[str, np.ndarray]

TASK_METRICS = ("target_prob", "logit_diff", "accuracy")
BEHAVIOUR_METRICS = (
    "behaviour_rate",
    "behaviour_rate_positive",
    "behaviour_rate_negative",
    "text_rate",
)


def mkey(m: float) -> str:
    """The key of a multiplier in reports: ``m=0``, ``m=0.5``, ``m=-2``."""
    return f"m={m:g}"


# ---------------------------------------------------------------------------- prompt sets


@dataclass(frozen=True)
class EvalSet:
    """Test prompts of one task or behaviour, encoded once."""

    name: str
    rows: tuple[TaskRow, ...]
    batches: tuple[PromptBatch, ...]

    @classmethod
    def build(cls, lm: LoadedModel, name: str, rows: Sequence[TaskRow], batch_size: int) -> EvalSet:
        if not rows:
            raise SteeringError(f"{name}: no test prompts to evaluate on")
        return cls(
            name,
            tuple(rows),
            tuple(encode_rows(b, lm.tokenizer) for b in batches(list(rows), batch_size)),
        )

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Neutral:
    """Neutral prompts (unrelated to every task), right-padded batches."""

    batches: tuple[tuple[Tensor, Tensor, Tensor], ...]

    @classmethod
    def build(cls, lm: LoadedModel, prompts: Sequence[str], batch_size: int) -> Neutral:
        if not prompts:
            raise SteeringError("the neutral prompt set is empty")
        return cls(
            tuple(
                encode_prompts(lm.tokenizer, prompts[i : i + batch_size])
                for i in range(0, len(prompts), batch_size)
            )
        )


@dataclass(frozen=True)
class Behaviour:
    """What counts as the behaviour: its first token and a text rule."""

    word: str  # the positive rows' answer, e.g. " Sorry"
    token: int
    pattern: re.Pattern[str]
    positive: np.ndarray  # [n_test] bool: row polarity is positive
    prompts: tuple[str, ...]
    max_new_tokens: int

    @classmethod
    def build(
        cls,
        lm: LoadedModel,
        name: str,
        rows: Sequence[TaskRow],
        pattern: str | None,
        max_new_tokens: int,
    ) -> Behaviour:
        pol = [r.meta.get("polarity") for r in rows]
        if "positive" not in pol or "negative" not in pol:
            raise SteeringError(
                f"{name}: a behaviour needs test rows with meta.polarity 'positive' and "
                f"'negative' (found {pol.count('positive')} and {pol.count('negative')})"
            )
        words = sorted({r.target for r in rows if r.meta.get("polarity") == "positive"})
        if len(words) != 1:
            raise SteeringError(
                f"{name}: the positive rows must share one answer (the behaviour's first "
                f"token), got {words[:5]}"
            )
        word = words[0]
        text = pattern or rf"^\W*{re.escape(word.strip())}\b"
        try:
            compiled = re.compile(text, re.IGNORECASE)
        except re.error as exc:
            raise SteeringError(f"{name}: bad text pattern {text!r} ({exc})") from exc
        return cls(
            word,
            token_ids(lm.tokenizer, [word])[0],
            compiled,
            np.array([p == "positive" for p in pol]),
            tuple(r.prompt for r in rows),
            max_new_tokens,
        )


# ----------------------------------------------------------------------- per-prompt runs


def _task_scores(lm: LoadedModel, es: EvalSet) -> tuple[PerPrompt, Tensor]:
    probs_t, diff, correct, logps = [], [], [], []
    for b in es.batches:
        logits = last_logits(lm, b.input_ids, b.attention_mask, b.last).cpu()
        logp = logits.log_softmax(-1)
        rows = torch.arange(len(b))
        probs_t.append(logp[rows, b.target].exp())
        diff.append(logits[rows, b.target] - logits[rows, b.counterfactual])
        correct.append((logits.argmax(-1) == b.target).float())
        logps.append(logp)
    out = {
        "target_prob": torch.cat(probs_t).numpy().astype(np.float64),
        "logit_diff": torch.cat(diff).numpy().astype(np.float64),
        "accuracy": torch.cat(correct).numpy().astype(np.float64),
    }
    return out, torch.cat(logps)


def _neutral_logp(lm: LoadedModel, neutral: Neutral) -> Tensor:
    return torch.cat(
        [
            last_logits(lm, ids, mask, last).cpu().log_softmax(-1)
            for ids, mask, last in neutral.batches
        ]
    )


def run_once(
    lm: LoadedModel,
    main: EvalSet,
    others: Sequence[EvalSet],
    neutral: Neutral,
    neutral_ref: Tensor | None,
    behaviour: Behaviour | None,
    *,
    generate_text: bool = True,
) -> tuple[PerPrompt, Tensor]:
    """Per-prompt numbers of the model as it is now (under whatever steering is active);
    also returns the neutral log-probs (the reference when run unsteered)."""
    out, logp = _task_scores(lm, main)
    nlogp = _neutral_logp(lm, neutral)
    ref = neutral_ref if neutral_ref is not None else nlogp
    out["kl_neutral"] = kl_divergence(nlogp, ref).clamp_min(0.0).numpy().astype(np.float64)
    for o in others:
        out[f"leakage/{o.name}"] = _task_scores(lm, o)[0]["accuracy"]
    if behaviour is not None:
        rate = logp[:, behaviour.token].exp().numpy().astype(np.float64)
        out["behaviour_rate"] = rate
        out["behaviour_rate_positive"] = rate[behaviour.positive]
        out["behaviour_rate_negative"] = rate[~behaviour.positive]
        if generate_text:
            texts = generate(lm, list(behaviour.prompts), behaviour.max_new_tokens)
            out["text_rate"] = np.array(
                [bool(behaviour.pattern.search(t)) for t in texts], dtype=np.float64
            )
            out["_texts"] = np.array(texts[:3], dtype=object)
    return out, nlogp


def _mean_over(runs: Sequence[PerPrompt]) -> PerPrompt:
    keys = [k for k in runs[0] if not k.startswith("_")]
    return {k: np.mean([r[k] for r in runs], axis=0) for k in keys}


@dataclass
class DoseResponse:
    """Per-prompt numbers of the unsteered model and of each condition at each multiplier."""

    multipliers: list[float]
    unsteered: PerPrompt
    steered: dict[float, PerPrompt] = field(default_factory=dict)
    control: dict[float, PerPrompt] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)


def dose_response(
    lm: LoadedModel,
    steered: Steerer,
    controls: Sequence[Steerer],
    multipliers: Sequence[float],
    main: EvalSet,
    others: Sequence[EvalSet],
    neutral: Neutral,
    behaviour: Behaviour | None = None,
    *,
    identity: float | None = None,
) -> DoseResponse:
    """Run the steered condition and every control at every multiplier (see module doc).

    `identity` is the multiplier that leaves the model exactly as it is (1 for neuron
    steering, 0 for CAA; tested bit-identical): there every condition reuses the unsteered run.
    """
    if not controls:
        raise SteeringError("steering is only reported beside random controls; give some")
    with torch.no_grad():
        base, ref = run_once(lm, main, others, neutral, None, behaviour)
        result = DoseResponse(list(multipliers), base)
        if "_texts" in base:
            result.samples["unsteered"] = [str(t) for t in base["_texts"]]
        runs = sum(1 + len(controls) for m in multipliers if m != identity)
        done = progress_bar(
            total=runs, desc="steering: multipliers × (steered + controls)", unit="run"
        )
        for m in multipliers:
            if identity is not None and m == identity:
                same = {k: v for k, v in base.items() if not k.startswith("_")}
                same["kl_neutral"] = np.zeros_like(base["kl_neutral"])
                result.steered[m], result.control[m] = same, dict(same)
                if "unsteered" in result.samples:
                    result.samples[mkey(m)] = list(result.samples["unsteered"])
                continue
            done.set_postfix_str(f"multiplier {m:g}")
            with steered(m):
                run, _ = run_once(lm, main, others, neutral, ref, behaviour)
            done.update()
            result.steered[m] = _mean_over([run])
            if "_texts" in run:
                result.samples[mkey(m)] = [str(t) for t in run["_texts"]]
            ctrl = []
            for make in controls:
                with make(m):
                    ctrl.append(run_once(lm, main, others, neutral, ref, behaviour)[0])
                done.update()
            result.control[m] = _mean_over(ctrl)
        done.close()
    return result


# -------------------------------------------------------------------------------- summary


def summarize(
    dr: DoseResponse, *, resamples: int, seed: int, level: float = 0.95
) -> dict[str, Any]:
    """`{metric: {m=…: {steered, control, delta, steered_effect, control_effect}}}` with
    bootstrap intervals, plus the unsteered value of each metric."""

    def ci(x: np.ndarray) -> dict[str, float]:
        return bootstrap_ci(x, resamples=resamples, seed=seed, level=level)

    out: dict[str, Any] = {}
    for metric in (k for k in dr.unsteered if not k.startswith("_")):
        base = dr.unsteered[metric]
        per_m: dict[str, Any] = {"unsteered": ci(base)}
        for m in dr.multipliers:
            s, c = dr.steered[m][metric], dr.control[m][metric]
            per_m[mkey(m)] = {
                "steered": ci(s),
                "control": ci(c),
                "delta": ci(s - c),
                "steered_effect": ci(s - base),
                "control_effect": ci(c - base),
            }
        out[metric] = per_m
    return out


def side_effects(metrics: Mapping[str, Any], m: float, budget: SideEffectBudget) -> dict[str, Any]:
    """The side effects of steering at multiplier `m` and whether they fit `budget`: the mean
    neutral-prompt KL, the largest fall of another task's accuracy (0 when none falls or no
    other task was measured), and `in_budget`."""
    kl = float(metrics["kl_neutral"][mkey(m)]["steered"]["mean"])
    drops = [
        -float(cells[mkey(m)]["steered_effect"]["mean"])
        for key, cells in metrics.items()
        if key.startswith("leakage/")
    ]
    drop = max([0.0, *drops])
    return {
        "kl_neutral": kl,
        "accuracy_drop": drop,
        "in_budget": bool(kl <= budget.max_kl and drop <= budget.max_accuracy_drop),
    }


def budget_table(
    metrics: Mapping[str, Any], multipliers: Sequence[float], budget: SideEffectBudget
) -> dict[str, Any]:
    """The budget and, per multiplier, its side effects and whether they fit (the report's
    `budget` key; the dose-response plot marks the points outside it)."""
    return {
        "max_kl": budget.max_kl,
        "max_accuracy_drop": budget.max_accuracy_drop,
        "multipliers": {mkey(m): side_effects(metrics, m, budget) for m in multipliers},
    }


def verdict(
    dr: DoseResponse,
    metrics: Mapping[str, Any],
    primary: str,
    neutral_m: float,
    *,
    budget: SideEffectBudget,
    min_effect: float = 0.0,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Does steering beat its control on the primary metric within the side-effect budget?

    Per direction — `suppress` (multipliers below the unsteered one `neutral_m`) and `amplify`
    (above) — only multipliers whose side effects fit `budget` are candidates; a point outside
    it is never counted, however large its effect (a broken model moves every metric). Among
    the k candidates the verdict takes the best one: the largest effect beyond control in the
    direction's sense among those that beat the control, else the largest effect. Because the
    best of k is chosen on the test prompts, its delta interval is a Bonferroni-corrected one,
    at level ``1 − (1 − level) / k``. It *beats* its control when that interval excludes 0 on
    the direction's side and its mean is at least `min_effect` (a saturated metric beats
    nothing by 1e-5). A direction with no candidate reports its mildest multiplier (least KL)
    with ``in_budget: false`` and ``beats_control: false``.
    """
    out: dict[str, Any] = {"primary": primary, "unsteered": metrics[primary]["unsteered"]["mean"]}
    for label, sign in (("suppress", -1), ("amplify", 1)):
        side = [m for m in dr.multipliers if (m - neutral_m) * sign > 0]
        if not side:
            continue
        costs = {m: side_effects(metrics, m, budget) for m in side}
        ok = [m for m in side if costs[m]["in_budget"]]
        k_level = 1.0 - (1.0 - level) / max(len(ok), 1)
        deltas = {
            m: bootstrap_ci(
                dr.steered[m][primary] - dr.control[m][primary],
                resamples=resamples,
                seed=seed,
                level=k_level,
            )
            for m in ok
        }
        winners = [m for m in ok if beats(deltas[m], sign, min_effect)]
        pool = winners or ok
        if pool:
            m = max(pool, key=lambda x: (sign * deltas[x]["mean"], -abs(x - neutral_m)))
            delta, wins = deltas[m], m in winners
        else:
            m = min(side, key=lambda x: (costs[x]["kl_neutral"], abs(x - neutral_m)))
            delta, wins = metrics[primary][mkey(m)]["delta"], False
        cell = metrics[primary][mkey(m)]
        out[label] = {
            "multiplier": m,
            "steered_effect": cell["steered_effect"],
            "control_effect": cell["control_effect"],
            "delta": delta,
            "beats_control": wins,
            "in_budget": bool(ok),
            "candidates": len(ok),
            "confidence": k_level if ok else level,
            "kl_neutral": costs[m]["kl_neutral"],
            "kl_neutral_control": metrics["kl_neutral"][mkey(m)]["control"]["mean"],
            "accuracy_drop": costs[m]["accuracy_drop"],
        }
    return out


def beats(delta: Mapping[str, float], sign: int, min_effect: float) -> bool:
    """Delta's interval excludes 0 on the `sign` side and its mean is at least `min_effect`."""
    if sign < 0:
        return bool(delta["hi"] < 0 and delta["mean"] <= -min_effect)
    return bool(delta["lo"] > 0 and delta["mean"] >= min_effect)


def leakage_row(metrics: Mapping[str, Any], multipliers: Sequence[float]) -> dict[str, Any]:
    """`{other task: {m=…: steered accuracy − unsteered}}` — one row of the leakage matrix."""
    return {
        key.split("/", 1)[1]: {
            mkey(m): cells[mkey(m)]["steered_effect"]["mean"] for m in multipliers
        }
        for key, cells in metrics.items()
        if key.startswith("leakage/")
    }


def no_steering(_m: float) -> AbstractContextManager[None]:
    return nullcontext()
