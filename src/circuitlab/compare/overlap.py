"""Do a steering vector's neurons coincide with a circuit's? A residual-space vector is projected
on its layer's down-projection columns (the seed's `decompose_cv_to_neurons`); per layer the
overlap of its top-k neurons with the circuit's and the variance on them, overall the total and
the top-50 overlap, each with a permutation p-value against random neuron sets of the circuit's
per-layer sizes (and the exact hypergeometric p-value the permutation one estimates)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from scipy import stats
from torch import Tensor

from circuitlab.devices import to_device_of
from circuitlab.errors import ArtifactError
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.models.adapters import ModelDims
from circuitlab.models.loading import LoadedModel

Space = Literal["model", "neuron"]

#: CAA artifact keys and the space each lives in (see `circuitlab.steering.caa`).
VECTOR_SPACES: dict[str, Space] = {
    "resid": "model",
    "mlp_out": "model",
    "neuron_diff": "neuron",
    "activation_weighted": "model",  # W_down @ neuron_diff
}

EPS = 1e-8


class DownProjections:
    """Each layer's down projection `[d_model, d_mlp]`, float32 on the layer's own device,
    made when a layer is read and dropped after use.

    A stacked `[L, d_model, d_mlp]` float32 copy on the host would be 7.5 GB for an 8B model;
    the comparison needs only small per-layer results from it (a projection `[d_mlp]`, a
    rebuilt vector `[d_model]`), so it works one layer at a time on the model's device. The
    functions taking it take a stacked `[L, d_model, d_mlp]` tensor alike (tests, small models).
    """

    def __init__(self, lm: LoadedModel) -> None:
        self._lm = lm
        self._adapter = lm.needs_adapter("CAA vs circuit (W_down)")

    def __len__(self) -> int:
        return self._lm.dims.n_layers

    def __getitem__(self, layer: int) -> Tensor:
        if not -len(self) <= layer < len(self):
            raise IndexError(f"layer {layer} out of range for a {len(self)}-layer model")
        return self._adapter.down_proj_weight(self._lm.model, layer).detach().float()


def down_proj_weights(lm: LoadedModel) -> DownProjections:
    """Every layer's down projection through the adapter, read per layer (see
    `DownProjections`)."""
    return DownProjections(lm)


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
def column_projections(vectors: Tensor, w_down: Tensor | DownProjections) -> Tensor:
    """The seed's projection: `[L, d_mlp]` with entry `v_l · W_l[:, i] / (‖W_l[:, i]‖ + ε)`.

    `w_down`: `[L, d_model, d_mlp]` or `DownProjections`; each layer is projected on its
    weight's device, and only the `[d_mlp]` result reaches the host.
    """
    if vectors.ndim != 2 or vectors.shape[0] != len(w_down):
        raise ArtifactError(
            f"vectors {tuple(vectors.shape)} and {len(w_down)} layers of down projections do "
            "not match: need [L, d_model] and L layers of [d_model, d_mlp]"
        )
    out = []
    for layer, v in enumerate(vectors):
        w = w_down[layer].float()
        if w.ndim != 2 or w.shape[0] != v.shape[0]:
            raise ArtifactError(
                f"vectors have width {v.shape[0]} but layer {layer}'s down projection is "
                f"{tuple(w.shape)}; need [d_model, d_mlp]"
            )
        proj = torch.einsum("ld,ldn->ln", to_device_of(v, w).float()[None], w[None])[0]
        out.append((proj / (w.norm(dim=0) + EPS)).cpu())
    return torch.stack(out)


def neuron_scores(
    name: str, vector: Tensor, w_down: Tensor | DownProjections, dims: ModelDims
) -> Tensor:
    """`[L, d_mlp]` per-neuron scores of a CAA vector (projection, or the vector itself)."""
    space = vector_space(name, vector, dims)
    return column_projections(vector, w_down) if space == "model" else vector.float()


def top_k_mask(scores: Tensor, k: int) -> Tensor:
    """`[L, d_mlp]` bool: each layer's k largest |score| (ties broken by index)."""
    k = min(k, scores.shape[-1])
    idx = stable_topk(scores.abs(), k)
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)


def global_top_mask(scores: Tensor, per_layer: Tensor, n: int) -> Tensor:
    """The n largest |score| over all layers among the per-layer top-k (`per_layer` mask)."""
    mag = torch.where(per_layer, scores.abs(), torch.full_like(scores, -1.0)).flatten()
    n = min(n, int(per_layer.sum()))
    idx = stable_topk(mag[None], n)[0]
    out = torch.zeros(mag.shape, dtype=torch.bool)
    out[idx] = True
    return out.view(scores.shape)


def stable_topk(mag: Tensor, k: int) -> Tensor:
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
    safe = torch.where(total_sq > EPS, total_sq, torch.ones_like(total_sq))
    ve = torch.where(total_sq > EPS, (masks * sq).sum(-1) / safe, torch.zeros_like(total_sq))
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
