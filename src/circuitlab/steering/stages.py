"""The steering stages as pure functions (config slice, inputs → report), called by the CLI.

- `neuron_steering`: a circuit of the train split, steered on the test split against random
  neuron sets matched by layer and count (and position, with ``positions="circuit"``); below
  multiplier 1 the whole circuit (`steering.suppress`), above it the neurons that support the
  metric by the gradient (`steering.amplify`, `steering.support`; `circuitlab.steering.signs`).
- `build_caa`: CAA vectors from the train split minus a validation part (grouped by the
  behaviour's matched pair, so a pair never straddles the two), then the layer and multiplier
  chosen on the validation part: the largest mean rise of the behaviour rate whose mean
  neutral KL stays within `caa.max_kl` (default: the steering budget's `max_kl`; if none does,
  the cell of least KL, flagged `within_budget: false`).
- `caa_steering`: the chosen layer's vector on the test split, against norm-matched random
  vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from circuitlab.steering.caa import (
    activation_weighted_vectors,
    add_vector,
    check_layer,
    control_vectors,
    neuron_differences,
)
from circuitlab.steering.evaluate import (
    BEHAVIOUR_METRICS,
    TASK_METRICS,
    Behaviour,
    DoseResponse,
    EvalSet,
    Neutral,
    Steerer,
    beats,
    budget_table,
    dose_response,
    leakage_row,
    mkey,
    run_once,
    side_effects,
    summarize,
    verdict,
)
from circuitlab.steering.neurons import NeuronSet, SteeringError, steer_neurons
from circuitlab.steering.signs import sign_agreement, split_by_sign, stored_scores, support_scores

if TYPE_CHECKING:
    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.models.loading import LoadedModel
    from circuitlab.steering.settings import CaaConfig, SteeringConfig
    from circuitlab.types import TaskRow


def _cap(rows: Sequence[TaskRow], cap: int | None) -> list[TaskRow]:
    return list(rows) if cap is None else list(rows)[:cap]


def _sets(
    lm: LoadedModel,
    name: str,
    test: Sequence[TaskRow],
    others: Mapping[str, Sequence[TaskRow]],
    cfg: SteeringConfig,
    *,
    is_behaviour: bool,
) -> tuple[EvalSet, list[EvalSet], Neutral, Behaviour | None]:
    main = EvalSet.build(lm, name, _cap(test, cfg.max_prompts), cfg.batch_size)
    other = [
        EvalSet.build(lm, o, _cap(rows, cfg.max_prompts), cfg.batch_size)
        for o, rows in sorted(others.items())
        if o != name
    ]
    neutral = Neutral.build(lm, cfg.neutral_prompts, cfg.batch_size)
    beh = None
    if is_behaviour:
        beh = Behaviour.build(lm, name, main.rows, cfg.text_patterns.get(name), cfg.max_new_tokens)
    return main, other, neutral, beh


def _report(
    dr: DoseResponse,
    cfg: SteeringConfig,
    *,
    primary: str,
    neutral_m: float,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    metrics = summarize(dr, resamples=cfg.bootstrap_resamples, seed=cfg.seed, level=cfg.confidence)
    summary = verdict(
        dr,
        metrics,
        primary,
        neutral_m,
        budget=cfg.budget,
        min_effect=cfg.min_effect,
        resamples=cfg.bootstrap_resamples,
        seed=cfg.seed,
        level=cfg.confidence,
    )
    return {
        **extra,
        "multipliers": list(dr.multipliers),
        "unsteered_multiplier": neutral_m,
        "random_seeds": cfg.random_seeds,
        "bootstrap": {"resamples": cfg.bootstrap_resamples, "confidence": cfg.confidence},
        "metrics": metrics,
        "leakage": leakage_row(metrics, dr.multipliers),
        "budget": budget_table(metrics, dr.multipliers, cfg.budget),
        "summary": summary,
        "samples": dr.samples,
    }


#: report keys that stay in the artifact (data/steering/…) and its plot, not in the metrics:
#: the dose-response grid (every metric × multiplier × steered/control, with intervals) and the
#: generated texts. DVC metrics hold what a person compares across runs (`summary`, leakage).
ARTIFACT_ONLY = ("samples", "metrics")


def metrics_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report's scalars a person compares across runs: what goes through `tracking`."""
    keep: dict[str, Any] = {}
    for key, value in report.items():
        if key in ARTIFACT_ONLY:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        keep[key] = value
    return keep


# ------------------------------------------------------------------------ neuron steering


def neuron_sets(
    lm: LoadedModel,
    circuit: NeuronCircuit,
    train: Sequence[TaskRow],
    cfg: SteeringConfig,
    *,
    is_behaviour: bool = False,
) -> tuple[dict[str, NeuronSet], dict[str, Any]]:
    """The neurons each direction scales (`suppress`, `amplify`: the whole circuit or its
    supporters by `cfg.support`, measured where steering acts — per neuron over every position
    for ``positions: all``, per cell for ``circuit``; a behaviour's support is for its own
    direction) and what the report says about the signs. A direction whose set is empty (no
    supporter) steers nothing: `steer_set` is then a no-op."""
    full = NeuronSet.from_circuit(circuit).validate(lm.dims)
    if cfg.positions == "all":
        full = NeuronSet.from_pairs(full.pairs())
    choice = {"suppress": cfg.suppress, "amplify": cfg.amplify}
    info: dict[str, Any] = {"support": cfg.support, "signs": dict(choice)}
    sets = {label: full for label in choice}
    if "supporters" in choice.values():
        scores = support_scores(
            lm, circuit, train, cfg.support, positions=cfg.positions, behaviour=is_behaviour,
            batch_size=cfg.batch_size,
        )  # fmt: skip
        supporters, opposers = split_by_sign(scores)
        info |= {
            "n_supporters": len(supporters),
            "n_opposers": len(opposers),
            "sign_agreement": sign_agreement(stored_scores(circuit, cfg.positions), scores),
        }
        for label, which in choice.items():
            if which == "supporters":
                sets[label] = supporters
    info["n_steered"] = {label: len(ns) for label, ns in sets.items()}
    return sets, info


def steer_set(
    lm: LoadedModel, neurons: NeuronSet, m: float, positions: str
) -> AbstractContextManager[Any]:
    """`steer_neurons`, or nothing for an empty set (a circuit without supporters)."""
    if not len(neurons):
        return nullcontext()
    return steer_neurons(lm, neurons, m, positions=positions)  # type: ignore[arg-type]


def neuron_steering(
    lm: LoadedModel,
    circuit: NeuronCircuit,
    test: Sequence[TaskRow],
    others: Mapping[str, Sequence[TaskRow]],
    cfg: SteeringConfig,
    *,
    name: str,
    is_behaviour: bool,
    train: Sequence[TaskRow] = (),
) -> dict[str, Any]:
    """Dose-response of steering `circuit`'s neurons on `test`, side effects, controls.

    A multiplier below 1 scales the `cfg.suppress` set, one above 1 the `cfg.amplify` set (the
    whole circuit or its supporters by `cfg.support`, which for ``gradient`` reads `train`);
    each direction's random controls are matched to its own set by layer and count, drawn
    outside the whole circuit."""
    whole = NeuronSet.from_circuit(circuit).validate(lm.dims)  # fails before any run
    main, other, neutral, beh = _sets(lm, name, test, others, cfg, is_behaviour=is_behaviour)
    sets, signs = neuron_sets(lm, circuit, train, cfg, is_behaviour=is_behaviour)
    avoid = whole.pairs()
    controls = {
        label: [ns.random_matched(lm.dims, seed=cfg.seed * 1000 + s, avoid=avoid)
                for s in range(cfg.random_seeds)]
        for label, ns in sets.items()
    }  # fmt: skip

    def factory(pick: Callable[[str], NeuronSet]) -> Steerer:
        return lambda m: steer_set(lm, pick("amplify" if m > 1 else "suppress"), m, cfg.positions)

    dr = dose_response(
        lm,
        factory(sets.__getitem__),
        [factory(lambda label, s=s: controls[label][s]) for s in range(cfg.random_seeds)],
        cfg.multipliers,
        main,
        other,
        neutral,
        beh,
        identity=1.0,
    )
    full = NeuronSet.from_pairs(avoid) if cfg.positions == "all" else whole
    per_layer = {str(ly): len(v) for ly, v in full.per_layer().items()}
    return _report(
        dr,
        cfg,
        primary="behaviour_rate" if is_behaviour else "logit_diff",
        neutral_m=1.0,
        extra={
            "name": name,
            "kind": "behaviour" if is_behaviour else "task",
            "method": circuit.method,
            "steering": "neurons",
            "positions": cfg.positions,
            "n_test": len(main),
            "n_neurons": len(full),
            "neurons_per_layer": per_layer,
            "signs": signs,
            "metric_names": list(TASK_METRICS + (BEHAVIOUR_METRICS if is_behaviour else ())),
        },
    )


# ------------------------------------------------------------------------------------ CAA


def split_validation(
    rows: Sequence[TaskRow], fraction: float, seed: int
) -> tuple[list[TaskRow], list[TaskRow]]:
    """Train rows → (fit, validation), by group (`meta.pair`, else the row id)."""
    groups = sorted({str(r.meta.get("pair", r.id)) for r in rows})
    rng = np.random.default_rng(seed)
    n_val = max(1, round(fraction * len(groups)))
    if len(groups) < 2:
        raise SteeringError("CAA needs at least two train pairs to keep a validation part")
    n_val = min(n_val, len(groups) - 1)
    val = {groups[i] for i in rng.permutation(len(groups))[:n_val]}
    fit = [r for r in rows if str(r.meta.get("pair", r.id)) not in val]
    held = [r for r in rows if str(r.meta.get("pair", r.id)) in val]
    return fit, held


def _polar(rows: Sequence[TaskRow], name: str) -> tuple[list[str], list[str]]:
    pos = [r.prompt for r in rows if r.meta.get("polarity") == "positive"]
    neg = [r.prompt for r in rows if r.meta.get("polarity") == "negative"]
    if not pos or not neg:
        raise SteeringError(
            f"{name}: CAA needs rows with meta.polarity 'positive' and 'negative' "
            f"(found {len(pos)} and {len(neg)})"
        )
    return pos, neg


def build_caa(
    lm: LoadedModel,
    train: Sequence[TaskRow],
    caa: CaaConfig,
    steering: SteeringConfig,
    *,
    name: str,
    seed: int = 0,
) -> tuple[dict[str, Tensor], dict[str, str], dict[str, Any]]:
    """Vectors (`resid`, `mlp_out`, `neuron_diff`, `activation_weighted`) of the fit part, the
    safetensors metadata (with the chosen `layer` and `multiplier`) and the selection report."""
    if not train:
        raise SteeringError(f"{name}: no train rows to build CAA vectors from")
    fit, val = split_validation(train, caa.validation_fraction, seed)
    pos, neg = _polar(fit, name)
    _polar(val, f"{name} (validation part)")
    bs = caa.batch_size
    if caa.site not in ("resid", "mlp_out"):
        lm.needs_adapter(f"caa.site {caa.site!r}")  # before any vector is computed
    vectors = {
        "resid": control_vectors(lm, pos, neg, site="resid", batch_size=bs),
        "mlp_out": control_vectors(lm, pos, neg, site="mlp_out", batch_size=bs),
    }
    if lm.adapter is not None:  # the neuron vectors read the MLP internals
        diffs = neuron_differences(lm, pos, neg, batch_size=bs)
        vectors["neuron_diff"] = diffs
        vectors["activation_weighted"] = activation_weighted_vectors(lm, diffs)
    layers = caa.layers if caa.layers is not None else list(range(lm.dims.n_layers))
    for layer in layers:
        check_layer(lm, layer)
    max_kl = caa.max_kl if caa.max_kl is not None else steering.budget.max_kl
    cfg = steering.model_copy(update={"batch_size": bs})
    main, _, neutral, beh = _sets(lm, name, val, {}, cfg, is_behaviour=True)
    with torch.no_grad():
        base, ref = run_once(lm, main, [], neutral, None, beh, generate_text=False)
        grid: dict[str, Any] = {}
        best: tuple[float, float, int] | None = None  # (rise, -|m|, layer) for max()
        chosen: tuple[int, float] | None = None
        for layer in layers:
            vec = vectors[caa.site][layer]
            grid[f"layer={layer}"] = {}
            for m in (m for m in caa.multipliers if m != 0):
                with add_vector(lm, layer, vec, m, positions=caa.positions):
                    run, _ = run_once(lm, main, [], neutral, ref, beh, generate_text=False)
                rise = float((run["behaviour_rate"] - base["behaviour_rate"]).mean())
                kl = float(run["kl_neutral"].mean())
                ok = kl <= max_kl
                grid[f"layer={layer}"][mkey(m)] = {"rate_rise": rise, "kl_neutral": kl, "ok": ok}
                key = (rise, -abs(m), -layer)
                if ok and (best is None or key > best):
                    best, chosen = key, (layer, m)
    within_budget = chosen is not None
    if chosen is None:  # nothing within budget: the least costly cell, flagged in the report
        _, lk, mk = min(
            (c["kl_neutral"], lk, mk) for lk, cells in grid.items() for mk, c in cells.items()
        )
        chosen = (int(lk.split("=")[1]), float(mk.split("=")[1]))
    layer, m = chosen
    meta = {
        "format": "circuitlab.caa/1",
        "behaviour": name,
        "site": caa.site,
        "layer": str(layer),
        "multiplier": f"{m:g}",
        "positions": caa.positions,
        "n_positive": str(len(pos)),
        "n_negative": str(len(neg)),
        "n_validation": str(len(val)),
        "resid": "mean difference of the residual stream after each layer, last prompt token",
        "mlp_out": "mean difference of each MLP's output, last prompt token",
        "neuron_diff": "mean difference of the neuron activations (down-projection input)",
        "activation_weighted": "W_down @ neuron_diff per layer",
    }
    for key in ("neuron_diff", "activation_weighted"):
        if key not in vectors:  # the transformer_lens backend: not computed
            meta[key] = "not computed: needs circuitlab's architecture adapter"
    selection = {
        "layer": layer,
        "multiplier": m,
        "site": caa.site,
        "n_fit": len(fit),
        "n_validation": len(val),
        "within_budget": within_budget,
        "max_kl": max_kl,
        "validation_rate_unsteered": float(base["behaviour_rate"].mean()),
        "validation_rate_rise": grid[f"layer={layer}"][mkey(m)]["rate_rise"],
        "validation_kl_neutral": grid[f"layer={layer}"][mkey(m)]["kl_neutral"],
        "vector_norms": {
            site: {str(ly): float(v[ly].norm()) for ly in range(v.shape[0])}
            for site, v in vectors.items()
        },
        "grid": grid,
    }
    return vectors, meta, selection


def random_vectors(vector: Tensor, seeds: Sequence[int]) -> list[Tensor]:
    """Random Gaussian directions with `vector`'s norm, one per seed."""
    out = []
    for s in seeds:
        g = torch.randn(vector.shape, generator=torch.Generator().manual_seed(int(s)))
        out.append(g / g.norm() * vector.float().norm())
    return out


def caa_steering(
    lm: LoadedModel,
    vectors: Mapping[str, Tensor],
    meta: Mapping[str, str],
    test: Sequence[TaskRow],
    others: Mapping[str, Sequence[TaskRow]],
    caa: CaaConfig,
    steering: SteeringConfig,
    *,
    name: str,
) -> dict[str, Any]:
    """Dose-response of the chosen CAA vector on the test split vs norm-matched random vectors."""
    try:
        layer, chosen_m = int(meta["layer"]), float(meta["multiplier"])
        site = meta.get("site", caa.site)
        vec = vectors[site][layer]
    except (KeyError, ValueError, IndexError) as exc:
        raise SteeringError(
            f"{name}: the CAA vectors lack their selection (layer/multiplier/site metadata or "
            f"the '{caa.site}' tensor): {exc}; rebuild them with `circuitlab caa`"
        ) from exc
    check_layer(lm, layer)
    main, other, neutral, beh = _sets(lm, name, test, others, steering, is_behaviour=True)
    seeds = [steering.seed * 1000 + s for s in range(caa.random_seeds)]

    def factory(v: Tensor) -> Steerer:
        return lambda m: add_vector(lm, layer, v, m, positions=caa.positions)  # type: ignore[arg-type]

    mults = sorted(set(caa.multipliers) | {chosen_m})
    dr = dose_response(
        lm, factory(vec), [factory(r) for r in random_vectors(vec, seeds)], mults, main, other,
        neutral, beh, identity=0.0,
    )  # fmt: skip
    report = _report(
        dr,
        steering,
        primary="behaviour_rate",
        neutral_m=0.0,
        extra={
            "name": name,
            "kind": "behaviour",
            "method": "caa",
            "steering": "vector",
            "positions": caa.positions,
            "layer": layer,
            "site": site,
            "chosen_multiplier": chosen_m,
            "vector_norm": float(vec.norm()),
            "n_test": len(main),
            "metric_names": list(TASK_METRICS + BEHAVIOUR_METRICS),
        },
    )
    cell = report["metrics"]["behaviour_rate"][mkey(chosen_m)]
    cost = side_effects(report["metrics"], chosen_m, steering.budget)
    wins = beats(cell["delta"], 1 if chosen_m > 0 else -1, steering.min_effect)
    report["summary"]["chosen"] = {  # chosen on validation prompts: no correction for choice
        "multiplier": chosen_m,
        "steered_effect": cell["steered_effect"],
        "control_effect": cell["control_effect"],
        "delta": cell["delta"],
        "beats_control": bool(wins and cost["in_budget"]),
        "in_budget": cost["in_budget"],
        "candidates": 1,
        "confidence": steering.confidence,
        "kl_neutral": cost["kl_neutral"],
        "accuracy_drop": cost["accuracy_drop"],
    }
    return report


# -------------------------------------------------------------------------------- summary


def leakage_matrix(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The task × task leakage matrix and the steering verdicts of one model's reports.

    Rows are the steered `name/method`; columns the other tasks; cells the change of their
    accuracy against the unsteered model at the multiplier each direction's verdict was judged
    at (its best within the side-effect budget). `counts` says, per direction, how many rows
    beat their control within budget and how many had no multiplier within budget at all.
    """
    if not reports:
        raise SteeringError("no steering reports to summarise")
    matrix: dict[str, Any] = {"suppress": {}, "amplify": {}}
    verdicts: dict[str, Any] = {}
    counts = {label: {"rows": 0, "beat": 0, "no_budget": 0} for label in matrix}
    for rep in reports:
        row = f"{rep['name']}/{rep['method']}"
        summary = rep["summary"]
        verdicts[row] = {"primary": summary["primary"]}
        for label in ("suppress", "amplify"):
            arm = summary.get(label)
            if arm is None:
                continue
            verdicts[row].update(
                {
                    f"{label}_beats_control": arm["beats_control"],
                    f"{label}_delta": arm["delta"]["mean"],
                    f"{label}_multiplier": arm["multiplier"],
                    f"{label}_in_budget": arm["in_budget"],
                }
            )
            counts[label]["rows"] += 1
            counts[label]["beat"] += int(bool(arm["beats_control"]))
            counts[label]["no_budget"] += int(not arm["in_budget"])
            key = mkey(arm["multiplier"])
            matrix[label][row] = {
                other: cells[key] for other, cells in rep.get("leakage", {}).items()
            }
    return {"leakage": matrix, "verdicts": verdicts, "counts": counts, "n_reports": len(reports)}
