"""Evaluate edge circuits on the test split and compare the methods that found them.

For every circuit of every method (each τ of an ACDC sweep, each EAP size, the head-pruning
circuit) the model runs with only the circuit's edges clean (every other edge patched with the
configured ablation), on at most ``n_eval_prompts`` test prompts, and reports:

* ``kl`` — KL(clean ‖ circuit) at the answer position (0 = the full model's answers);
* ``recovery`` — logit-difference recovery ``(ld_circuit − ld_ablated) / (ld_clean −
  ld_ablated)`` (1 = the full model, 0 = everything ablated; None when the model's clean and
  ablated logit differences coincide);
* ``random`` — the same for ``random_seeds`` random edge sets of equal size (uniform over all
  edges): mean and 95 % Student-t half-width.

MIB's yardstick (`circuitlab.acdc.mib`, ``mib`` in the report): every method's circuits at
MIB's percentages of the edges, their faithfulness, CPR and CMD, and the same for random edge
sets (``random_seeds`` per size) — the comparison of methods at every size rather than one.

Agreement between methods: Jaccard of the reference circuits (ACDC at the τ closest to
``reference_tau``; EAP's top-n at the size of ACDC's reference circuit; head pruning's
circuit); the mean Jaccard over the shared τ of two ACDC variants; and the ROC AUC of each
method's edge scores against the reference ACDC circuit's kept edges (``acdc`` if run, else
the first ACDC variant). All circuits are evaluated through `evaluate_masks`, ``batch_size``
edge sets per forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit
from circuitlab.acdc.backend import patchable
from circuitlab.acdc.batch import PreparedBatch
from circuitlab.acdc.discover import sample_rows, top_edges
from circuitlab.acdc.metrics import kl, logit_diff
from circuitlab.acdc.mib import mib_edge_sets
from circuitlab.acdc.patch import evaluate_masks, prepare_rows
from circuitlab.errors import ArtifactError, DatasetError
from circuitlab.models.loading import LoadedModel
from circuitlab.progress import bar as progress_bar
from circuitlab.stats import t_interval
from circuitlab.types import TaskRow

if TYPE_CHECKING:
    # only the annotation: importing the settings loads every method's module, which the
    # evaluation job's code fingerprint does not cover (tests/integration/test_provenance.py)
    from circuitlab.acdc.settings import AcdcConfig


def method_kind(art: CircuitArtifact) -> str:
    """``sweep``, ``ranking`` or ``single`` (`circuitlab.acdc.registry`), as the artifact
    records it (files from before the registry: from the score kind)."""
    kind = art.details.get("kind")
    if isinstance(kind, str):
        return kind
    return {"prune_tau": "sweep", "head_delta": "single"}.get(art.score_kind, "ranking")


def sweep_methods(arts: dict[str, CircuitArtifact]) -> list[str]:
    """The τ-sweep methods among ``arts``, in their order."""
    return [m for m, a in arts.items() if method_kind(a) == "sweep"]


def _kl_and_ld(logits: Tensor, ctx: PreparedBatch) -> Tensor:
    return torch.stack([kl(logits, ctx), logit_diff(logits, ctx)], dim=-1)


def circuit_mask(graph_edges: Sequence[str], kept: Sequence[str]) -> Tensor:
    """Patch mask of a circuit: 1 on every edge *not* kept."""
    keep = set(kept)
    return torch.tensor([0.0 if e in keep else 1.0 for e in graph_edges])


def eval_batch_size(batch_size: int | None, device: torch.device) -> int:
    """Edge sets per forward: ``batch_size``, or by default 1 on a CPU and 16 on a GPU (the
    `AcdcConfig.batch_size` docs give the measurement)."""
    if batch_size is not None:
        return batch_size
    return 16 if device.type == "cuda" else 1


#: the memory one evaluation forward may give its per-set tensors, by default (bytes): the
#: default of `AcdcConfig.eval_memory_gb` (tests/acdc/test_evaluate.py checks they agree)
EVAL_MEMORY_BYTES = 8 * 1024**3
#: tensors of the size of a forward's source outputs ``[E, B, n_sources, S, d]`` it holds at
#: its peak: the sources themselves and a block's ablated − current differences
EVAL_COPIES = 2


def eval_chunks(
    n_sets: int,
    n_prompts: int,
    pair_bytes: int,
    budget: int = EVAL_MEMORY_BYTES,
    batch_size: int = 1,
) -> tuple[int, int]:
    """(edge sets, prompts) per evaluation forward, so that ``sets · prompts · pair_bytes``
    stays within ``budget`` bytes: ``pair_bytes`` is what one edge set on one prompt costs
    (`pair_bytes`). At most ``batch_size`` sets; all prompts while at least one set fits with
    them, else one set on as many prompts as fit (at least one: a budget below one pair is
    exceeded, not refused)."""
    sets = min(batch_size, n_sets)
    pairs = max(1, budget // pair_bytes)  # (set, prompt) pairs that fit
    if pairs >= n_prompts:
        return max(1, min(sets, pairs // n_prompts)), n_prompts
    return 1, pairs


def pair_bytes(ctx: PreparedBatch) -> int:
    """The memory of one edge set on one prompt in a patched forward, in bytes:
    ``EVAL_COPIES · n_sources · S · d · itemsize`` (``S`` the batch's padded length, ``d`` the
    residual width, ``itemsize`` the model dtype's bytes) — the source outputs
    ``[E, B, n_sources, S, d]`` of the forward and, in a block whose destinations differ from
    the mask's majority, the ablated − current differences of up to the same size
    (`circuitlab.acdc.attention.dest_inputs`). The per-destination inputs ``[E, B, R, S, d]``
    (``R`` ≤ a block's destinations) and the weights are small beside them on a real model."""
    pm = ctx.model
    n_sources, seq = len(ctx.graph.sources), ctx.batch.input_ids.shape[1]
    itemsize = torch.empty((), dtype=pm.dtype).element_size()
    return EVAL_COPIES * n_sources * seq * pm.dims.d_model * itemsize


def run_masks(
    ctx: PreparedBatch,
    masks: Tensor,
    batch_size: int | None = None,
    memory_bytes: int = EVAL_MEMORY_BYTES,
) -> Tensor:
    """``[E, 2]`` (KL, logit difference) of E patch masks, at most ``batch_size`` masks per
    forward (`eval_batch_size`) and within ``memory_bytes`` per forward (`eval_chunks`,
    `pair_bytes`): when all prompts with one set exceed it, the prompts are split too and each
    set's metrics are the prompt-weighted mean of its parts' (both metrics are means over
    prompts; equal to one forward up to float rounding of that mean)."""
    batch_size = eval_batch_size(batch_size, ctx.model.device)
    n_prompts = len(ctx.batch)
    sets, prompts = eval_chunks(len(masks), n_prompts, pair_bytes(ctx), memory_bytes, batch_size)
    parts = [ctx] if prompts == n_prompts else [
        ctx.prompts(slice(i, i + prompts)) for i in range(0, n_prompts, prompts)
    ]  # fmt: skip
    out = []
    done = progress_bar(total=len(masks), desc="evaluate edge sets (circuits, random)", unit="set")
    with torch.no_grad():
        for i in range(0, len(masks), sets):
            chunk = masks[i : i + sets]
            values = torch.stack(
                [evaluate_masks(p, chunk, _kl_and_ld).float().cpu() for p in parts]
            )
            if len(parts) > 1:
                share = torch.tensor([len(p.batch) / n_prompts for p in parts])
                values = (values * share[:, None, None]).sum(0, keepdim=True)
            out.append(values[0])
            done.update(len(chunk))
    done.close()
    return torch.cat(out)


def jaccard(a: Sequence[str], b: Sequence[str]) -> float | None:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else None


def auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """ROC AUC of scores (inf = above every finite score) for the labels; None for one class."""
    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        return None
    s = np.asarray(scores, dtype=float)
    finite = s[np.isfinite(s)]
    top = (np.abs(finite).max() if finite.size else 0.0) * 2 + 1
    return float(roc_auc_score(y, np.nan_to_num(s, posinf=top, neginf=-top)))


def _reference_acdc(arts: dict[str, CircuitArtifact]) -> CircuitArtifact | None:
    return next((arts[m] for m in sweep_methods(arts)), None)


def _reference_circuit(
    art: CircuitArtifact, acdc: CircuitArtifact | None, reference_tau: float
) -> EdgeCircuit:
    if method_kind(art) == "ranking" and acdc is not None:
        n = len(acdc.reference_circuit(reference_tau).kept)
        return EdgeCircuit(f"top={n}", top_edges(art.edges, art.scores, n))
    return art.reference_circuit(reference_tau)


def evaluate_circuits(
    lm: LoadedModel,
    rows: Sequence[TaskRow],
    artifacts: Sequence[CircuitArtifact],
    cfg: AcdcConfig,
) -> dict[str, Any]:
    """The faithfulness and agreement report (module doc) as nested dicts of scalars."""
    if not artifacts:
        raise ArtifactError("no edge circuits to evaluate")
    arts = {a.method: a for a in artifacts}
    if len(arts) != len(artifacts):
        raise ArtifactError(f"two circuits of the same method: {[a.method for a in artifacts]}")
    available = [r for r in rows if r.split == "test"]
    test = sample_rows(available, cfg.n_eval_prompts, cfg.seed, setting="acdc.n_eval_prompts")
    if not test:
        raise DatasetError("no test rows to evaluate edge circuits on")
    train = [r for r in rows if r.split == "train"]
    pm = patchable(lm, kv_edges=cfg.kv_edges)
    edges = pm.graph.edges
    for a in artifacts:
        if a.edges != edges:
            raise ArtifactError(
                f"the {a.method} circuit has {len(a.edges)} edges, this model's graph "
                f"{len(edges)} (acdc.kv_edges {cfg.kv_edges!r}): it was discovered on another "
                "model or graph; rerun acdc_circuit"
            )
    ref_rows = train if cfg.ablation == "mean" and train else None
    ctx = prepare_rows(pm, test, cfg.ablation, reference_rows=ref_rows)

    acdc = _reference_acdc(arts)
    circuits = [(a.method, i, c) for a in artifacts for i, c in enumerate(a.circuits)]
    sizes = sorted({len(c.kept) for _, _, c in circuits})
    n_edges = len(edges)
    masks = [torch.zeros(n_edges), torch.ones(n_edges)]
    masks += [circuit_mask(edges, c.kept) for _, _, c in circuits]
    for n in sizes:
        for s in range(cfg.random_seeds):
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + s * 10_007 + n)
            m = torch.ones(n_edges)
            m[torch.randperm(n_edges, generator=g)[:n]] = 0.0
            masks.append(m)
    curve_sets = mib_edge_sets(pm.graph, artifacts, cfg)
    curve_rows = _unique_rows(masks, [(~k).float() for k in curve_sets.keep])
    budget = int(cfg.eval_memory_gb * 1024**3)
    values = run_masks(ctx, torch.stack(masks), cfg.batch_size, budget).tolist()
    (_, ld_clean), (kl_ablated, ld_ablated) = values[0], values[1]
    denom = ld_clean - ld_ablated

    def recovery(ld: float) -> float | None:
        return (ld - ld_ablated) / denom if abs(denom) > 1e-9 else None

    curves = curve_sets.report([recovery(values[i][1]) for i in curve_rows], cfg)

    off = 2 + len(circuits)
    random: dict[int, dict[str, Any]] = {}
    for k, n in enumerate(sizes):
        chunk = values[off + k * cfg.random_seeds : off + (k + 1) * cfg.random_seeds]
        kls = [v[0] for v in chunk]
        recs = [recovery(v[1]) for v in chunk]
        kl_mean, kl_ci = t_interval(kls)
        entry = {"kl_mean": kl_mean, "kl_ci": kl_ci, "recovery_mean": None, "recovery_ci": None}
        if all(r is not None for r in recs):
            entry["recovery_mean"], entry["recovery_ci"] = t_interval(recs)  # type: ignore[arg-type]
        random[n] = entry

    methods: dict[str, Any] = {}
    for (method, i, c), (kl_v, ld_v) in zip(circuits, values[2:off], strict=True):
        m = methods.setdefault(
            method,
            {
                "seconds": round(arts[method].seconds, 4),
                "n_forward": arts[method].n_forward,
                "circuits": {},
            },
        )
        m["circuits"][f"{i:02d}"] = {
            "label": c.label,
            "tau": c.tau,
            "n_edges": len(c.kept),
            "fraction": len(c.kept) / n_edges,
            "kl": kl_v,
            "recovery": recovery(ld_v),
            "random": random[len(c.kept)],
        }
        if i == arts[method].reference_index(cfg.reference_tau):
            m["reference"] = dict(m["circuits"][f"{i:02d}"])
    return {
        "reference_tau": cfg.reference_tau,
        "n_edges": n_edges,
        "n_prompts": len(test),
        "n_prompts_available": len(available),
        "ablation": cfg.ablation,
        "ld_clean": ld_clean,
        "ld_ablated": ld_ablated,
        "kl_ablated": kl_ablated,
        "methods": methods,
        "agreement": agreement(arts, acdc, cfg.reference_tau),
        "mib": curves,
    }


def _unique_rows(masks: list[Tensor], extra: Sequence[Tensor]) -> list[int]:
    """Append each of ``extra`` to ``masks`` unless an equal mask is there; the row of each."""
    seen = {m.numpy().tobytes(): i for i, m in enumerate(masks)}
    rows = []
    for m in extra:
        key = m.numpy().tobytes()
        if key not in seen:
            seen[key] = len(masks)
            masks.append(m)
        rows.append(seen[key])
    return rows


def agreement(
    arts: dict[str, CircuitArtifact], acdc: CircuitArtifact | None, reference_tau: float
) -> dict[str, Any]:
    """Jaccard of reference circuits (all pairs), mean Jaccard over shared τ (ACDC variants),
    ROC AUC of each method's scores against the reference ACDC circuit."""
    refs = {m: _reference_circuit(a, acdc, reference_tau) for m, a in arts.items()}
    out: dict[str, Any] = {
        "reference_method": acdc.method if acdc else None,
        "jaccard": {f"{a}_vs_{b}": jaccard(refs[a].kept, refs[b].kept) for a, b in combinations(refs, 2)},
        "jaccard_over_taus": {},
        "roc_auc": {},
    }  # fmt: skip
    for a, b in combinations(sweep_methods(arts), 2):
        by_tau = {c.tau: c.kept for c in arts[b].circuits}
        js = [jaccard(c.kept, by_tau[c.tau]) for c in arts[a].circuits if c.tau in by_tau]
        js = [j for j in js if j is not None]
        out["jaccard_over_taus"][f"{a}_vs_{b}"] = float(np.mean(js)) if js else None
    if acdc is not None:
        kept = set(acdc.reference_circuit(reference_tau).kept)
        labels = [e in kept for e in acdc.edges]
        for m, a in arts.items():
            if m != acdc.method:
                out["roc_auc"][m] = auc(labels, a.scores)
    return out
