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
   t interval over prompts) on the contrast prompts (inducing) and on the behaviour prompts
   (suppressing), and the side effect (KL(unsteered ‖ steered) of the next-token distribution
   on neutral prompts); then each method's KL at a matched effect (the largest effect every
   method — not the control — reaches), per direction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from scipy import optimize, stats
from torch import Tensor

from circuitlab.compare.settings import CompareConfig
from circuitlab.errors import ArtifactError, ConfigError, DatasetError
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.models.adapters import ModelDims
from circuitlab.models.loading import LoadedModel
from circuitlab.progress import bar as progress_bar
from circuitlab.stats import kl_divergence
from circuitlab.steering.evaluate import Steerer
from circuitlab.types import TaskRow

Space = Literal["model", "neuron"]

#: CAA artifact keys and the space each lives in (see `circuitlab.steering.caa`).
VECTOR_SPACES: dict[str, Space] = {
    "resid": "model",
    "mlp_out": "model",
    "neuron_diff": "neuron",
    "activation_weighted": "model",  # W_down @ neuron_diff
}

_EPS = 1e-8

T = TypeVar("T")


# --------------------------------------------------------------------------- inputs
def down_proj_weights(lm: LoadedModel) -> Tensor:
    """Every layer's down projection through the adapter, `[L, d_model, d_mlp]` float32 (CPU)."""
    adapter = lm.needs_adapter("CAA vs circuit (W_down)")
    with torch.no_grad():
        return torch.stack(
            [
                adapter.down_proj_weight(lm.model, layer).detach().float().cpu()
                for layer in range(lm.dims.n_layers)
            ]
        )


def circuit_mask(circuit: NeuronCircuit, dims: ModelDims, what: str = "circuit") -> Tensor:
    """`[L, d_mlp]` bool: the circuit's neurons (positions collapsed).

    Raises ArtifactError for an empty circuit or a neuron outside the model.
    """
    if not circuit.neurons:
        raise ArtifactError(f"{what} has no neurons; nothing to compare a steering vector with")
    pairs = torch.tensor(sorted({(ly, n) for ly, _, n in circuit.neurons}), dtype=torch.long)
    bad_layer = sorted({int(x) for x in pairs[:, 0] if not 0 <= x < dims.n_layers})
    if bad_layer:
        raise ArtifactError(
            f"{what} has neurons in layer(s) {bad_layer}, outside the model's "
            f"{dims.n_layers} layers (0…{dims.n_layers - 1}); was it discovered on another model?"
        )
    bad_neuron = sorted({int(x) for x in pairs[:, 1] if not 0 <= x < dims.d_mlp})
    if bad_neuron:
        raise ArtifactError(
            f"{what} has neuron indices {bad_neuron[:5]} outside the model's d_mlp={dims.d_mlp}; "
            "was it discovered on another model?"
        )
    mask = torch.zeros(dims.n_layers, dims.d_mlp, dtype=torch.bool)
    mask[pairs[:, 0], pairs[:, 1]] = True
    return mask


def top_circuit_mask(circuit: NeuronCircuit, dims: ModelDims, n: int) -> Tensor:
    """`[L, d_mlp]` bool: the circuit's `n` largest-|attribution| distinct (layer, neuron)."""
    best: dict[tuple[int, int], float] = {}
    for (ly, _, neuron), value in circuit.neurons.items():
        best[(ly, neuron)] = max(best.get((ly, neuron), 0.0), abs(value))
    order = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    mask = torch.zeros(dims.n_layers, dims.d_mlp, dtype=torch.bool)
    for (ly, neuron), _ in order:
        mask[ly, neuron] = True
    return mask


def vector_space(name: str, vector: Tensor, dims: ModelDims) -> Space:
    """Which space a CAA vector lives in: by its known key, else by its last dimension."""
    if name in VECTOR_SPACES:
        space = VECTOR_SPACES[name]
    elif dims.d_model != dims.d_mlp and vector.shape[-1] in (dims.d_model, dims.d_mlp):
        space = "model" if vector.shape[-1] == dims.d_model else "neuron"
    else:
        raise ArtifactError(
            f"vector {name!r} of shape {tuple(vector.shape)}: cannot tell whether it is a "
            f"residual (d_model={dims.d_model}) or a neuron (d_mlp={dims.d_mlp}) vector"
        )
    width = dims.d_model if space == "model" else dims.d_mlp
    if tuple(vector.shape) != (dims.n_layers, width):
        raise ArtifactError(
            f"vector {name!r} has shape {tuple(vector.shape)}, but the model needs "
            f"[{dims.n_layers}, {width}] (n_layers × {'d_model' if space == 'model' else 'd_mlp'}); "
            "were the CAA vectors computed on another model?"
        )
    if not bool(torch.isfinite(vector).all()):
        raise ArtifactError(f"vector {name!r} has NaN or infinite entries")
    return space


# ----------------------------------------------------------------------- projection
def column_projections(vectors: Tensor, w_down: Tensor) -> Tensor:
    """The seed's projection: `[L, d_mlp]` with entry `v_l · W_l[:, i] / (‖W_l[:, i]‖ + ε)`."""
    if vectors.ndim != 2 or w_down.ndim != 3 or vectors.shape[0] != w_down.shape[0]:
        raise ArtifactError(
            f"vectors {tuple(vectors.shape)} and down projections {tuple(w_down.shape)} do not "
            "match: need [L, d_model] and [L, d_model, d_mlp]"
        )
    if vectors.shape[1] != w_down.shape[1]:
        raise ArtifactError(
            f"vectors have width {vectors.shape[1]} but the model's d_model is {w_down.shape[1]}"
        )
    proj = torch.einsum("ld,ldn->ln", vectors.float(), w_down.float())
    return proj / (w_down.float().norm(dim=1) + _EPS)


def neuron_scores(name: str, vector: Tensor, w_down: Tensor, dims: ModelDims) -> Tensor:
    """`[L, d_mlp]` per-neuron scores of a CAA vector (projection, or the vector itself)."""
    space = vector_space(name, vector, dims)
    return column_projections(vector, w_down) if space == "model" else vector.float()


def top_k_mask(scores: Tensor, k: int) -> Tensor:
    """`[L, d_mlp]` bool: each layer's k largest |score| (ties broken by index)."""
    k = min(k, scores.shape[-1])
    idx = _stable_topk(scores.abs(), k)
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)


def global_top_mask(scores: Tensor, per_layer: Tensor, n: int) -> Tensor:
    """The n largest |score| over all layers among the per-layer top-k (`per_layer` mask)."""
    mag = torch.where(per_layer, scores.abs(), torch.full_like(scores, -1.0)).flatten()
    n = min(n, int(per_layer.sum()))
    idx = _stable_topk(mag[None], n)[0]
    out = torch.zeros(mag.shape, dtype=torch.bool)
    out[idx] = True
    return out.view(scores.shape)


def _stable_topk(mag: Tensor, k: int) -> Tensor:
    """Top-k indices along the last axis; equal values keep the lower index first."""
    return torch.sort(mag, dim=-1, descending=True, stable=True).indices[..., :k]


# ------------------------------------------------------------------ overlap statistics
def overlap_statistics(
    sq: Tensor, topk: Tensor, global_top: Tensor, masks: Tensor, top_masks: Tensor
) -> dict[str, Tensor]:
    """Overlap figures of (a batch of) neuron sets, vectorised over leading dims.

    Args:
        sq: `[L, D]` squared scores. topk: `[L, D]` per-layer top-k of the vector.
        global_top: `[L, D]` the vector's global top-n. masks: `[..., L, D]` neuron sets.
        top_masks: `[..., L, D]` the sets' top-n parts (for the top-n overlap).
    """
    overlap = (masks & topk).sum(-1)  # [..., L]
    total_sq = sq.sum(-1)  # [L]
    safe = torch.where(total_sq > _EPS, total_sq, torch.ones_like(total_sq))
    ve = torch.where(total_sq > _EPS, (masks * sq).sum(-1) / safe, torch.zeros_like(total_sq))
    return {
        "overlap": overlap,
        "total_overlap": overlap.sum(-1),
        "variance_explained": ve,
        "mean_variance_explained": ve.mean(-1),
        "top_overlap": (top_masks & global_top).sum((-1, -2)),
    }


def random_masks(sizes: Tensor, d: int, n: int, generator: torch.Generator) -> Tensor:
    """`[n, L, d]` bool: per layer a uniformly random set of `sizes[l]` of `d` neurons."""
    ranks = torch.rand(n, len(sizes), d, generator=generator).argsort(-1).argsort(-1)
    return ranks < sizes[None, :, None]


def permutation_null(
    sq: Tensor,
    topk: Tensor,
    global_top: Tensor,
    circuit: Tensor,
    circuit_top: Tensor,
    permutations: int,
    seed: int,
    chunk_cells: int = 1 << 23,
) -> dict[str, Tensor]:
    """The overlap statistics of `permutations` random sets with the circuit's per-layer sizes
    (and, for the top-n overlap, the per-layer sizes of the circuit's top-n part). Seeded and
    chunked so at most `chunk_cells` mask cells are alive at a time."""
    gen = torch.Generator().manual_seed(seed)
    sizes, top_sizes = circuit.sum(-1), circuit_top.sum(-1)
    n_layers, d = circuit.shape
    per_chunk = max(1, chunk_cells // (n_layers * d))
    parts: list[dict[str, Tensor]] = []
    done = 0
    while done < permutations:
        n = min(per_chunk, permutations - done)
        parts.append(
            overlap_statistics(
                sq,
                topk,
                global_top,
                random_masks(sizes, d, n, gen),
                random_masks(top_sizes, d, n, gen),
            )
        )
        done += n
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def p_value(null: Tensor, observed: Tensor) -> Tensor:
    """One-sided permutation p-value with the add-one correction, along the first axis."""
    obs = observed.double()
    tol = 1e-9 * obs.abs() + 1e-12  # float noise must not turn a tie into a miss
    hits = (null.double() >= obs - tol).sum(0)
    return (1.0 + hits.double()) / (1.0 + null.shape[0])


def hypergeom_p(overlap: Tensor, d: int, k: Tensor | int, sizes: Tensor) -> list[float]:
    """Exact P(overlap ≥ observed) of a random `sizes[l]`-set with a fixed k-set in `d`."""
    ks = k if isinstance(k, Tensor) else torch.full_like(sizes, int(k))
    return [
        float(stats.hypergeom.sf(int(o) - 1, d, int(kk), int(n)))
        for o, kk, n in zip(overlap.tolist(), ks.tolist(), sizes.tolist(), strict=True)
    ]


def compare_vector(
    scores: Tensor,
    circuit: Tensor,
    circuit_top: Tensor,
    *,
    top_k: int,
    top_n: int,
    permutations: int,
    seed: int,
) -> dict[str, Any]:
    """All overlap figures of one vector's `[L, D]` scores against one circuit, with p-values."""
    n_layers, d = scores.shape
    sq = scores.double().square()
    topk = top_k_mask(scores, top_k)
    gtop = global_top_mask(scores, topk, top_n)
    obs = overlap_statistics(sq, topk, gtop, circuit, circuit_top)
    null = permutation_null(sq, topk, gtop, circuit, circuit_top, permutations, seed)
    p = {key: p_value(null[key], obs[key]) for key in obs}
    sizes = circuit.sum(-1)
    exact = hypergeom_p(obs["overlap"], d, topk.sum(-1), sizes)
    layers = {}
    for ly in range(n_layers):
        layers[str(ly)] = {
            "n_circuit": int(sizes[ly]),
            "overlap": int(obs["overlap"][ly]),
            "expected_overlap": float(sizes[ly]) * float(topk[ly].sum()) / d,
            "overlap_p": float(p["overlap"][ly]),
            "overlap_p_hypergeom": exact[ly],
            "variance_explained": float(obs["variance_explained"][ly]),
            "variance_explained_null_mean": float(null["variance_explained"][:, ly].mean()),
            "variance_explained_p": float(p["variance_explained"][ly]),
        }
    n_checked = int(topk.sum())
    return {
        "layers": layers,
        "total_overlap": int(obs["total_overlap"]),
        "total_checked": n_checked,
        "total_overlap_null_mean": float(null["total_overlap"].double().mean()),
        "total_overlap_p": float(p["total_overlap"]),
        "mean_variance_explained": float(obs["mean_variance_explained"]),
        "mean_variance_explained_null_mean": float(null["mean_variance_explained"].mean()),
        "mean_variance_explained_p": float(p["mean_variance_explained"]),
        "top_overlap": int(obs["top_overlap"]),
        "top_overlap_of": int(min(int(gtop.sum()), int(circuit_top.sum()))),
        "top_overlap_null_mean": float(null["top_overlap"].double().mean()),
        "top_overlap_p": float(p["top_overlap"]),
    }


# ---------------------------------------------------------------- decomposition
def r_squared(target: np.ndarray, fit: np.ndarray) -> float:
    """Share of ‖target‖² reconstructed: 1 − ‖target − fit‖² / ‖target‖² (no centring: the
    target is a difference vector, its zero is meaningful)."""
    denom = float(target @ target)
    if denom <= _EPS:
        return 0.0
    resid = target - fit
    return 1.0 - float(resid @ resid) / denom


def sparse_nonnegative(
    target: Tensor, columns: Tensor, sparsity: Sequence[int], *, signed: bool = True
) -> dict[int, dict[str, Any]]:
    """Greedy non-negative matching pursuit with an NNLS refit on the growing support.

    Each step adds the neuron whose (normalised) column correlates best with the residual, in
    the sign of that correlation (only positive correlations when `signed` is False), then refits
    all coefficients with `scipy.optimize.nnls` on the signed columns. Supports are nested, so
    R² never decreases with k. Returns, for each k of `sparsity` (capped at the number of
    usable neurons), R², the support (neuron indices), signs and coefficients.
    """
    y = target.double().numpy()
    w = columns.double().numpy()  # [d_model, D]
    d = w.shape[1]
    norms = np.linalg.norm(w, axis=0)
    unit = w / np.where(norms > _EPS, norms, 1.0)
    ks = sorted({min(int(k), d) for k in sparsity if k >= 1})
    out: dict[int, dict[str, Any]] = {}
    support: list[int] = []
    signs: list[float] = []
    coef = np.zeros(0)
    fit = np.zeros_like(y)
    chosen = np.zeros(d, dtype=bool)
    for step in range(1, (ks[-1] if ks else 0) + 1):
        corr = unit.T @ (y - fit)
        score = np.abs(corr) if signed else corr.copy()
        score[chosen | (norms <= _EPS)] = -np.inf
        best = int(np.argmax(score))
        if not np.isfinite(score[best]) or score[best] <= 1e-12:
            break  # nothing left that reduces the residual
        chosen[best] = True
        support.append(best)
        signs.append(1.0 if corr[best] >= 0 or not signed else -1.0)
        a = w[:, support] * np.asarray(signs)[None, :]
        coef, _ = optimize.nnls(a, y)
        fit = a @ coef
        if step in ks:
            out[step] = _fit_record(y, fit, support, signs, coef)
    final = _fit_record(y, fit, support, signs, coef)
    for k in ks:  # stopped early: the larger supports are the last one
        out.setdefault(k, final)
    return out


def _fit_record(
    y: np.ndarray, fit: np.ndarray, support: list[int], signs: list[float], coef: np.ndarray
) -> dict[str, Any]:
    return {
        "r2": r_squared(y, fit),
        "support": list(support),
        "signs": list(signs),
        "coef": [float(c) for c in coef],
        "nnz": int((coef > 0).sum()),
    }


def least_squares_r2(target: Tensor, columns: Tensor) -> float:
    """R² of the unconstrained least-squares fit of `target` on `columns` (`[d_model, k]`)."""
    if columns.shape[1] == 0:
        return 0.0
    y = target.double().numpy()
    a = columns.double().numpy()
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return r_squared(y, a @ coef)


def decompose_layer(
    mlp_diff: Tensor,
    w: Tensor,
    neuron_diff: Tensor | None,
    circuits: Mapping[str, Tensor],
    sparsity: Sequence[int],
    *,
    signed: bool,
) -> dict[str, Any]:
    """R² against sparsity for one layer's MLP-output difference (`[d_model]`), `w` `[d_model, D]`.

    Curves (keyed by k): `nnls` (sparse non-negative), `projection_lstsq` (least squares on the
    seed's top-k projection columns), `neuron_diff_topk` (the exact per-neuron difference
    truncated to its top-k |Δa_i|·‖W[:, i]‖, when the difference is given); `neuron_diff_full`
    (all neurons: a consistency check, ≈ 1); per circuit (`circuits`: name → `[D]` mask):
    `lstsq` (least squares on its columns) and `rebuilt` (Σ over its neurons of Δa_i W[:, i]).
    """
    y = mlp_diff.double().numpy()
    nn_fit = sparse_nonnegative(mlp_diff, w, sparsity, signed=signed)
    proj = (column_projections(mlp_diff[None], w[None])[0]).abs()
    order = _stable_topk(proj[None], proj.shape[0])[0]
    ks = sorted(nn_fit)
    out: dict[str, Any] = {
        "nnls": {str(k): nn_fit[k]["r2"] for k in ks},
        "nnls_nnz": {str(k): nn_fit[k]["nnz"] for k in ks},
        "projection_lstsq": {str(k): least_squares_r2(mlp_diff, w[:, order[:k]]) for k in ks},
        "circuits": {},
    }
    wd = w.double().numpy()
    nd = neuron_diff.double().numpy() if neuron_diff is not None else None
    if nd is not None:
        contrib = np.abs(nd) * np.linalg.norm(wd, axis=0)
        top = np.argsort(-contrib, kind="stable")
        out["neuron_diff_topk"] = {str(k): r_squared(y, wd[:, top[:k]] @ nd[top[:k]]) for k in ks}
        out["neuron_diff_full"] = r_squared(y, wd @ nd)
    for name, mask in circuits.items():
        keep = mask.numpy().astype(bool)
        entry: dict[str, Any] = {
            "size": int(keep.sum()),
            "lstsq": least_squares_r2(mlp_diff, w[:, mask]),
        }
        if nd is not None:
            entry["rebuilt"] = r_squared(y, wd[:, keep] @ nd[keep])
        out["circuits"][name] = entry
    return out


# ------------------------------------------------------------ circuit-rebuilt vector
def rebuilt_vector(neuron_diff: Tensor, w_down: Tensor, circuit: Tensor) -> Tensor:
    """`[L, d_model]`: per layer, Σ over the circuit's neurons of Δa_i · W_l[:, i]."""
    if neuron_diff.shape != circuit.shape or w_down.shape[0] != circuit.shape[0]:
        raise ArtifactError(
            f"neuron differences {tuple(neuron_diff.shape)}, circuit mask "
            f"{tuple(circuit.shape)} and down projections {tuple(w_down.shape)} do not match"
        )
    return torch.einsum("ldn,ln->ld", w_down.float(), neuron_diff.float() * circuit)


# --------------------------------------------------------------------- head to head
@dataclass(frozen=True)
class TextBatch:
    """Right-padded prompts (`circuitlab.prompts.encode_prompts`) and their last positions."""

    input_ids: Tensor
    attention_mask: Tensor
    last: Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @classmethod
    def of(cls, tokenizer: Any, prompts: Sequence[str]) -> TextBatch:
        from circuitlab.prompts import encode_prompts

        return cls(*encode_prompts(tokenizer, list(prompts)))


def last_log_probs(lm: LoadedModel, batch: TextBatch, batch_size: int = 32) -> Tensor:
    """`[n, vocab]` log-probabilities at each prompt's last position (CPU float32), under
    whatever steering context is active (the steering hooks see each batch's `last`)."""
    from circuitlab.steering.neurons import last_logits

    out = []
    for start in range(0, len(batch), batch_size):
        sl = slice(start, start + batch_size)
        logits = last_logits(lm, batch.input_ids[sl], batch.attention_mask[sl], batch.last[sl])
        out.append(torch.log_softmax(logits, -1).cpu())
    return torch.cat(out)


@dataclass(frozen=True)
class Probe:
    """What a steering method is measured on: behaviour prompts with their answer tokens, and
    the neutral prompts the side effect is read from."""

    behaviour: TextBatch
    positive: Tensor  # [n] token id of the behaviour's answer (e.g. " Sorry")
    negative: Tensor  # [n] token id of the contrast answer (e.g. " Sure")
    neutral: TextBatch
    is_positive: Tensor  # [n] bool: the prompt shows the behaviour (polarity "positive")


def _t(values: Tensor) -> tuple[float, float]:
    from circuitlab.stats import t_interval

    return t_interval(values.double().tolist())


#: Which prompts each direction is measured on: inducing the behaviour where it is absent
#: (contrast prompts), suppressing it where it is present (behaviour prompts).
DIRECTIONS: dict[str, tuple[str, int]] = {
    "increase": ("effect_negative", 1),
    "decrease": ("effect_positive", -1),
}


def sweep_method(
    lm: LoadedModel,
    steer: Steerer,
    multipliers: Sequence[float],
    probe: Probe,
    *,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Effect and side effect of one method at each multiplier (the unsteered run once).

    Effect = change of the logit difference behaviour answer − contrast answer, on all
    prompts (`effect`), on the behaviour prompts (`effect_positive`) and on the contrast
    prompts (`effect_negative`), each with its 95 % t half-width; side effect = mean
    KL(unsteered ‖ steered) of the next token on the neutral prompts.
    """
    idx = torch.arange(len(probe.behaviour))
    groups = {"effect": slice(None), "effect_positive": probe.is_positive,
              "effect_negative": ~probe.is_positive}  # fmt: skip

    def measure(ctx: AbstractContextManager[Any]) -> tuple[Tensor, Tensor]:
        with ctx:
            lp = last_log_probs(lm, probe.behaviour, batch_size)
            neutral = last_log_probs(lm, probe.neutral, batch_size)
        return lp[idx, probe.positive] - lp[idx, probe.negative], neutral

    base_ld, base_neutral = measure(nullcontext())
    points = []
    for m in multipliers:
        ld, neutral = measure(steer(float(m)))
        delta = ld - base_ld
        kl = kl_divergence(base_neutral, neutral).clamp(min=0.0)
        side, side_ci = _t(kl)
        point: dict[str, Any] = {"multiplier": float(m), "kl": side, "kl_ci": side_ci}
        for key, sel in groups.items():
            part = delta[sel]
            mean, half = _t(part) if len(part) else (float("nan"), float("nan"))
            point[key], point[f"{key}_ci"] = mean, half
        point["logit_diff"] = float(ld.mean())
        points.append(point)
    return points


def _crossing(points: Sequence[Mapping[str, Any]], target: float, key: str) -> float | None:
    """KL where a method's effect first reaches `target` (|effect| increasing away from the
    unsteered point), linearly interpolated; None if it never does."""
    prev_e, prev_k = 0.0, 0.0
    for p in points:
        e, k = abs(p[key]), p["kl"]
        if e >= target:
            if e == prev_e:
                return float(k)
            return float(prev_k + (k - prev_k) * (target - prev_e) / (e - prev_e))
        prev_e, prev_k = e, k
    return None


def _direction(points: Sequence[Mapping[str, Any]], neutral: float, sign: int) -> list[Any]:
    """The sweep's points on one side of the neutral multiplier whose effect has sign `sign`,
    ordered away from the neutral multiplier."""
    side = [p for p in points if (p["multiplier"] - neutral) * sign > 0]
    side.sort(key=lambda p: abs(p["multiplier"] - neutral))
    return side


def matched_effect(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    neutral: Mapping[str, float],
    directions: Mapping[str, tuple[str, int]] = DIRECTIONS,
) -> dict[str, Any]:
    """Per direction (`increase`: more behaviour on the contrast prompts, `decrease`: less on
    the behaviour prompts): the largest |effect| every method reaches that way, each method's
    KL there (linear interpolation along its sweep, walking away from the unsteered multiplier
    on the side that goes furthest) and its effect per unit KL; `best` has the smallest KL."""
    out: dict[str, Any] = {}
    for name, (key, sign) in directions.items():
        sides = {}
        for method, points in curves.items():
            by_side = [
                [p for p in _direction(points, neutral[method], s) if _num(p[key]) * sign > 0]
                for s in (1, -1)
            ]
            sides[method] = max(by_side, key=lambda ps: max((abs(p[key]) for p in ps), default=0))
        reach = {m: max((abs(p[key]) for p in ps), default=0.0) for m, ps in sides.items()}
        target = min(reach.values()) if reach else 0.0
        entry: dict[str, Any] = {"measured_on": key, "effect": target if target > 0 else None}
        entry["methods"] = {}
        for method, ps in sides.items():
            kl = _crossing(ps, target, key) if target > 0 else None
            entry["methods"][method] = {
                "max_effect": reach[method],
                "kl": kl,
                "effect_per_kl": (target / kl) if kl and kl > 0 else None,
            }
        ranked = [(v["kl"], m) for m, v in entry["methods"].items() if v["kl"] is not None]
        entry["best"] = min(ranked)[1] if ranked else None
        out[name] = entry
    return out


def _num(x: Any) -> float:
    return float(x) if x is not None and math.isfinite(float(x)) else 0.0


def caa_steer(lm: LoadedModel, layer: int, vector: Tensor, positions: str) -> Steerer:
    from circuitlab.steering.caa import add_vector

    def steer(m: float) -> AbstractContextManager[Any]:
        return add_vector(lm, layer, vector, m, positions=positions)  # type: ignore[arg-type]

    return steer


def multi_layer_steer(
    lm: LoadedModel, vectors: Tensor, layers: Sequence[int], positions: str
) -> Steerer:
    """Add `vectors[l]` at every layer of `layers` at once (the circuit-rebuilt vector)."""
    from circuitlab.steering.caa import add_vector

    @contextmanager
    def steer(m: float) -> Iterator[None]:
        with ExitStack() as stack:
            for layer in layers:
                stack.enter_context(
                    add_vector(lm, layer, vectors[layer], m, positions=positions)  # type: ignore[arg-type]
                )
            yield

    return steer


def neuron_steer(
    lm: LoadedModel, circuit: NeuronCircuit, positions: str, *, random_seed: int | None = None
) -> Steerer:
    """Multiply the circuit's neurons by m; with `random_seed`, a random control instead: as
    many other neurons per layer (and position) as the circuit has there."""
    from circuitlab.steering.neurons import NeuronSet, steer_neurons

    neurons = NeuronSet.from_circuit(circuit)
    if random_seed is not None:
        neurons = neurons.random_matched(lm.dims, random_seed)

    def steer(m: float) -> AbstractContextManager[Any]:
        return steer_neurons(lm, neurons, m, positions=positions)  # type: ignore[arg-type]

    return steer


def pick_caa_layer(
    lm: LoadedModel, vector: Tensor, probe: Probe, positions: str, batch_size: int = 32
) -> tuple[int, dict[str, float]]:
    """The layer whose vector, added with multiplier 1, moves the behaviour most (on `probe`,
    which should be train prompts: layer choice is a fit, report on the test split)."""
    effects = {}
    for layer in range(lm.dims.n_layers):
        pts = sweep_method(
            lm, caa_steer(lm, layer, vector[layer], positions), [1.0], probe, batch_size=batch_size
        )
        effects[str(layer)] = pts[0]["effect"]
    best = max(effects, key=lambda k: (effects[k], -int(k)))
    return int(best), effects


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def check_multipliers(values: Sequence[Any], what: str) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: multiplier {v!r} is not a number") from None
        if not math.isfinite(f):
            raise ConfigError(f"{what}: multiplier {v!r} is not finite")
        out.append(f)
    return out


# ------------------------------------------------------------------------------ stage
def behaviour_probe(
    lm: LoadedModel, rows: Sequence[TaskRow], neutral: Sequence[str], max_prompts: int
) -> Probe:
    """The behaviour prompts (at most `max_prompts`, both polarities) with each one's behaviour
    answer (a positive row's target, a negative row's counterfactual) and contrast answer."""
    from circuitlab.prompts import encode_rows

    use = [r for r in rows if r.meta.get("polarity") in ("positive", "negative")][:max_prompts]
    if not use:
        raise DatasetError(
            "no behaviour rows with meta.polarity 'positive' or 'negative' in this split; "
            "a comparison needs behaviour prompts"
        )
    batch = encode_rows(use, lm.tokenizer)
    positive = torch.tensor([r.meta["polarity"] == "positive" for r in use])
    return Probe(
        behaviour=TextBatch(batch.input_ids, batch.attention_mask, batch.last),
        positive=torch.where(positive, batch.target, batch.counterfactual),
        negative=torch.where(positive, batch.counterfactual, batch.target),
        neutral=TextBatch.of(lm.tokenizer, neutral),
        is_positive=positive,
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
) -> dict[str, Any]:
    """The whole comparison for one behaviour (see the module docstring): a nested dict of
    numbers (no lists), ready for `tracking.log_metrics` and the plots."""
    dims = lm.dims
    masks = check_inputs(lm, circuits, vectors, cfg)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    if not test:
        raise DatasetError("the behaviour has no test rows; the head-to-head is reported on them")
    w = down_proj_weights(lm)
    vec = {k: v.float().cpu() for k, v in vectors.items()}
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
                    neuron_scores(vname, vec[vname], w, dims),
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
            w[ly],
            vec["neuron_diff"][ly],
            {c: m[ly] for c, m in masks.items()},
            cfg.sparsity,
            signed=cfg.signed,
        )
        for ly in range(dims.n_layers)
    }
    done.update()

    done.set_postfix_str("CAA layer")
    probe = behaviour_probe(lm, test, cfg.neutral_prompts, cfg.max_prompts)
    layer_effects: dict[str, float] = {}
    if cfg.caa_layer is not None:
        caa_layer = cfg.caa_layer
    else:
        fit = behaviour_probe(lm, train or test, cfg.neutral_prompts, cfg.max_prompts)
        caa_layer, layer_effects = pick_caa_layer(
            lm, vec["resid"], fit, cfg.vector_positions, cfg.batch_size
        )
    done.update()
    methods: dict[str, tuple[Steerer, list[float], float]] = {
        "caa": (
            caa_steer(lm, caa_layer, vec["resid"][caa_layer], cfg.vector_positions),
            list(cfg.vector_multipliers),
            0.0,
        )
    }
    for cname, circuit in circuits.items():
        methods[f"{cname}_neurons"] = (
            neuron_steer(lm, circuit, cfg.neuron_positions),
            list(cfg.neuron_multipliers),
            1.0,
        )
        methods[f"{cname}_random_neurons"] = (
            neuron_steer(lm, circuit, cfg.neuron_positions, random_seed=cfg.seed),
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
        curves[name] = _step(done, sweep_method(lm, steer, mults, probe, batch_size=cfg.batch_size))
    done.close()
    neutral = {name: m[2] for name, m in methods.items()}
    # controls are drawn and reported, but the matched level is set by the methods
    compared = {k: v for k, v in curves.items() if not k.endswith("_random_neurons")}
    return {
        "n_test_prompts": len(probe.behaviour),
        "n_neutral_prompts": len(probe.neutral),
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
        "matched": matched_effect(compared, neutral),
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
