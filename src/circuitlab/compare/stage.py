"""CAA ↔ circuit, per behaviour: pure functions (no disk, no tracking).

Three questions, each answered beside a null or a reference:

1. **Do the steering vector's neurons coincide with the circuit's?** (the seed's
   `decompose_cv_to_neurons` / `compare_circuit_to_cv`). A residual-space vector ``v`` of layer
   ``l`` is projected on that layer's down-projection columns, ``v·W[:, i] / ‖W[:, i]‖``; a
   neuron-space vector (the per-neuron activation difference) is its own score. Per layer: the
   overlap of the top-k |score| neurons with the circuit's neurons, the variance explained
   (share of Σ score² on the circuit's neurons); overall: the total overlap, the mean variance
   explained over all layers, and the seed's top-50 overlap (the circuit's 50 largest-|attribution|
   neurons against the vector's 50 largest |score| of the per-layer top-k lists). Every figure
   gets a one-sided permutation p-value against random neuron sets with the circuit's per-layer
   sizes (``(1 + #{null ≥ observed}) / (1 + permutations)``); the per-layer overlap also gets
   its exact hypergeometric p-value, which the permutation value estimates.
2. **How many neurons does it take to write the MLP-output difference?** The seed's projection
   is not a decomposition (the columns are not orthogonal), so beside it: a sparse
   non-negative decomposition onto the signed columns ``[W, −W]`` (greedy non-negative
   matching pursuit with an NNLS refit on the growing support; one sign per neuron), R² against
   the number of neurons; the least-squares fit on the seed's top-k projection columns; the
   truncation of the exact per-neuron difference to its top-k; and the circuit's own neurons.
3. **Which steers better per unit of side effect?** Circuit-neuron steering (multiply the
   circuit's activations), CAA (add the residual vector at one layer) and the vector rebuilt
   from the circuit neurons alone (``Σ_i Δa_i W[:, i]`` at each circuit layer), beside random
   neurons matched to the circuit by layer and position: for a range of multipliers, the
   behaviour effect (change of the logit difference behaviour answer − contrast answer, 95 %
   bootstrap interval over prompts) on the contrast prompts (inducing) and on the behaviour
   prompts (suppressing), and the side effect (KL(steered ‖ unsteered) of the next-token distribution
   on neutral prompts); then each method's KL at a matched effect (the largest effect every
   method — not the control — reaches), per direction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from torch import Tensor

from circuitlab.compare.decompose import decompose_layer, rebuilt_vector
from circuitlab.compare.head_to_head import (
    Probe,
    caa_steer,
    matched_effect,
    multi_layer_steer,
    neuron_steer,
    pick_caa_layer,
    sweep_method,
)
from circuitlab.compare.overlap import (
    circuit_mask,
    compare_vector,
    down_proj_weights,
    neuron_scores,
    top_circuit_mask,
    vector_space,
)
from circuitlab.compare.settings import CompareConfig
from circuitlab.errors import ArtifactError, ConfigError, DatasetError
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.models.loading import LoadedModel
from circuitlab.progress import bar as progress_bar
from circuitlab.steering.evaluate import EvalSet, Neutral, Steerer
from circuitlab.steering.settings import SteeringConfig
from circuitlab.steering.stages import neuron_sets
from circuitlab.types import TaskRow

T = TypeVar("T")


def behaviour_probe(
    lm: LoadedModel,
    rows: Sequence[TaskRow],
    neutral: Sequence[str],
    max_prompts: int,
    batch_size: int = 32,
) -> Probe:
    """The behaviour prompts (at most `max_prompts`, both polarities), encoded as the steering
    evaluation runs them, with each row's sign (+1 behaviour, −1 contrast) and the neutral
    prompts."""
    use = [r for r in rows if r.meta.get("polarity") in ("positive", "negative")][:max_prompts]
    if not use:
        raise DatasetError(
            "no behaviour rows with meta.polarity 'positive' or 'negative' in this split; "
            "a comparison needs behaviour prompts"
        )
    sign = np.array([1.0 if r.meta["polarity"] == "positive" else -1.0 for r in use])
    return Probe(
        prompts=EvalSet.build(lm, "behaviour", use, batch_size),
        sign=sign,
        neutral=Neutral.build(lm, list(neutral), batch_size),
    )


def check_inputs(
    lm: LoadedModel,
    circuits: Mapping[str, NeuronCircuit],
    vectors: Mapping[str, Tensor],
    cfg: CompareConfig,
) -> dict[str, Tensor]:
    """The circuits' `[L, d_mlp]` masks after checking every input against the model."""
    dims = lm.dims
    needed = sorted({*cfg.vectors, "resid", "mlp_out", "neuron_diff"})
    missing = [k for k in needed if k not in vectors]
    if missing:
        raise ArtifactError(
            f"the CAA vectors lack {missing} (have {sorted(vectors)}); rerun the `caa` rule"
        )
    for name in needed:
        vector_space(name, vectors[name], dims)
    if not circuits:
        raise ArtifactError("no circuit given to compare the vectors with")
    if cfg.caa_layer is not None and not cfg.caa_layer < dims.n_layers:
        raise ConfigError(
            f"compare.caa_layer={cfg.caa_layer} is outside the model (layers 0..{dims.n_layers - 1})"
        )
    return {name: circuit_mask(c, dims, f"the {name} circuit") for name, c in circuits.items()}


def compare_behaviour(
    lm: LoadedModel,
    rows: Sequence[TaskRow],
    circuits: Mapping[str, NeuronCircuit],
    vectors: Mapping[str, Tensor],
    cfg: CompareConfig,
    steering: SteeringConfig | None = None,
) -> dict[str, Any]:
    """The whole comparison for one behaviour (see the module docstring): a nested dict of
    numbers (no lists), ready for `tracking.log_metrics` and the plots. With `steering` (the
    pipeline passes the config's steering section), a circuit is steered as the steering stage
    steers it (the same neurons per direction: `steering.suppress`/`amplify`/`support`) and the
    matched effect uses only sweep points within its budget's KL."""
    dims = lm.dims
    masks = check_inputs(lm, circuits, vectors, cfg)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    if not test:
        raise DatasetError("the behaviour has no test rows; the head-to-head is reported on them")
    w = down_proj_weights(lm)
    vec = {k: v.float().cpu() for k, v in vectors.items()}
    scores = {vname: neuron_scores(vname, vec[vname], w, dims) for vname in cfg.vectors}
    # steps: each overlap test, the decomposition, the CAA layer, each method's sweep
    steps = len(circuits) * len(cfg.vectors) + 2 + 1 + 3 * len(circuits)
    done = progress_bar(total=steps, desc="compare", unit="step")

    overlap: dict[str, Any] = {}
    for cname, circuit in circuits.items():
        top = top_circuit_mask(circuit, dims, cfg.top_n)
        done.set_postfix_str(f"overlap of {cname} with the vectors (permutation nulls)")
        overlap[cname] = {
            vname: _step(
                done,
                compare_vector(
                    scores[vname],
                    masks[cname],
                    top,
                    top_k=cfg.top_k,
                    top_n=cfg.top_n,
                    permutations=cfg.permutations,
                    seed=cfg.seed,
                ),
            )
            for vname in cfg.vectors
        }

    done.set_postfix_str("sparse decomposition per layer")
    decomposition = {
        str(ly): decompose_layer(
            vec["mlp_out"][ly],
            w[ly].cpu(),  # one layer on the host at a time (the NNLS fits run in numpy)
            vec["neuron_diff"][ly],
            {c: m[ly] for c, m in masks.items()},
            cfg.sparsity,
            signed=cfg.signed,
        )
        for ly in range(dims.n_layers)
    }
    done.update()

    done.set_postfix_str("CAA layer")
    probe = behaviour_probe(lm, test, cfg.neutral_prompts, cfg.max_prompts, cfg.batch_size)
    layer_effects: dict[str, float] = {}
    if cfg.caa_layer is not None:
        caa_layer = cfg.caa_layer
    else:
        fit = behaviour_probe(
            lm, train or test, cfg.neutral_prompts, cfg.max_prompts, cfg.batch_size
        )
        caa_layer, layer_effects = pick_caa_layer(lm, vec["resid"], fit, cfg.vector_positions)
    done.update()
    methods: dict[str, tuple[Steerer, list[float], float]] = {
        "caa": (
            caa_steer(lm, caa_layer, vec["resid"][caa_layer], cfg.vector_positions),
            list(cfg.vector_multipliers),
            0.0,
        )
    }
    signs: dict[str, Any] = {}
    for cname, circuit in circuits.items():
        sets = None
        if steering is not None:
            alike = steering.model_copy(update={"positions": cfg.neuron_positions})
            sets, signs[cname] = neuron_sets(lm, circuit, train, alike, is_behaviour=True)
        methods[f"{cname}_neurons"] = (
            neuron_steer(lm, circuit, cfg.neuron_positions, sets=sets),
            list(cfg.neuron_multipliers),
            1.0,
        )
        methods[f"{cname}_random_neurons"] = (
            neuron_steer(lm, circuit, cfg.neuron_positions, random_seed=cfg.seed, sets=sets),
            list(cfg.neuron_multipliers),
            1.0,
        )
        layers = sorted({ly for ly, _, _ in circuit.neurons})
        methods[f"{cname}_vector"] = (
            multi_layer_steer(
                lm,
                rebuilt_vector(vec["neuron_diff"], w, masks[cname]),
                layers,
                cfg.vector_positions,
            ),
            list(cfg.vector_multipliers),
            0.0,
        )
    curves = {}
    for name, (steer, mults, _) in methods.items():
        done.set_postfix_str(f"dose-response of {name}")
        curves[name] = _step(
            done,
            sweep_method(
                lm, steer, mults, probe, resamples=cfg.bootstrap_resamples, seed=cfg.seed,
                level=cfg.confidence,
            ),
        )  # fmt: skip
    done.close()
    neutral = {name: m[2] for name, m in methods.items()}
    # controls are drawn and reported, but the matched level is set by the methods
    compared = {k: v for k, v in curves.items() if not k.endswith("_random_neurons")}
    return {
        "n_test_prompts": len(probe),
        "n_neutral_prompts": sum(len(b[0]) for b in probe.neutral.batches),
        "bootstrap": {"resamples": cfg.bootstrap_resamples, "confidence": cfg.confidence},
        "circuit_sizes": {c: int(m.sum()) for c, m in masks.items()},
        "overlap": overlap,
        "decomposition": decomposition,
        "caa": {
            "layer": caa_layer,
            "layer_chosen": cfg.caa_layer is None,
            "layer_effects": layer_effects,
            "vector_norm": float(vec["resid"][caa_layer].norm()),
        },
        "sweep": {name: {f"{p['multiplier']:g}": p for p in pts} for name, pts in curves.items()},
        "neutral_multiplier": neutral,
        "neuron_signs": signs,
        "matched": matched_effect(
            compared, neutral, max_kl=steering.budget.max_kl if steering is not None else None
        ),
    }


def _step(bar: Any, value: T) -> T:
    """``value``, after counting one step of ``bar``."""
    bar.update()
    return value


def metrics_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison's scalars a person compares across runs (DVC metrics, W&B summary): sizes,
    the CAA layer, each overlap's total and p, the matched-effect side effects. The sweeps, the
    per-layer overlaps and decompositions stay in the artifact (data/compare/…) and its plots."""
    return {
        "n_test_prompts": report["n_test_prompts"],
        "n_neutral_prompts": report["n_neutral_prompts"],
        "circuit_sizes": report["circuit_sizes"],
        "caa": {k: report["caa"][k] for k in ("layer", "layer_chosen", "vector_norm")},
        "overlap": {
            circuit: {
                vector: {k: v[k] for k in ("total_overlap", "total_overlap_p") if k in v}
                for vector, v in vectors.items()
            }
            for circuit, vectors in report["overlap"].items()
        },
        "matched": report["matched"],
    }


def sweep_points(report: Mapping[str, Any], method: str) -> list[dict[str, Any]]:
    """A method's sweep from a report, ordered by multiplier (for plots and readers)."""
    return sorted(report["sweep"][method].values(), key=lambda p: p["multiplier"])
