"""Edge-circuit artifacts: ``data/circuits/{model}/{task}/{method}.json`` and its DOT picture.

One format for every method (ACDC variants, head pruning, EAP), so evaluation and comparison
read them alike:

* ``edges`` — every edge of the graph in storage order (`circuitlab.acdc.graph`);
* ``scores`` — ``{edge: score}``, *higher = more important*: ACDC's prune score (the smallest
  τ at which the edge was removed; ``"inf"`` = never removed, i.e. in every circuit), EAP's
  ``|score|``, head pruning's ``|Δmetric|`` of the edge's source head (``"inf"`` for edges out
  of ``Resid Start`` and the MLPs, which head pruning never removes). JSON has no infinity,
  so ``inf`` is written as the string ``"inf"`` and read back as ``math.inf``;
* ``circuits`` — the kept edge sets: one per τ (ACDC), per size (EAP: top-n by score) or one
  (head pruning: every edge not leaving a pruned head). An ACDC circuit also has
  ``n_near_tau`` (decisions within float rounding of τ) and, for exact ACDC with
  ``acdc.trace``, its per-edge ``trace`` (`circuitlab.acdc.trace`: columns ``edge`` — a storage
  index into ``edges`` —, ``baseline``, ``faithfulness``, ``removed``, ``near_tau``, one entry
  per check in visiting order). Which one is the *reference* (drawn,
  compared between methods) is not part of discovery: `CircuitArtifact.reference_index`
  picks it from ``acdc.reference_tau`` when the circuits are evaluated, so changing that key
  reruns no discovery;
* ``n_prompts`` (used) and ``n_prompts_available`` (train rows there were: discovery samples
  at most ``acdc.n_prompts`` of them);
* ``metric_values``, ``n_forward``, ``n_backward``, ``seconds``, ``params``, ``details``
  (the method's own extras, e.g. fast ACDC's speculation statistics, EAP's sign convention).

`save_circuit` / `load_circuit` round-trip it (a malformed file is an `ArtifactError`);
`to_dot` draws one circuit (nodes grouped by graph layer); `render_png` renders the
DOT text with the `graphviz` package only when the ``dot`` executable exists.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import StringConstraints, model_validator

from circuitlab.acdc.graph import Node
from circuitlab.acdc.trace import EdgeTrace
from circuitlab.artifact import Artifact
from circuitlab.errors import ArtifactError, ConfigError
from circuitlab.io import atomic_path, write_text_atomic
from circuitlab.types import StrictModel

# the file's format (`CircuitFile`) — 2: no stored reference (chosen at evaluation); 3: per-edge
# traces, n_prompts_available
# what a score means is the method's to say (`circuitlab.acdc.registry`): ``prune_tau`` (τ
# sweeps), ``abs_attribution`` (attribution methods), ``head_delta`` (head pruning), …
ScoreKind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]


@dataclass(frozen=True)
class EdgeCircuit:
    """One kept edge set: its label (``tau=0.01``, ``top=40``, ``heads``), τ if any, the
    kept edges (storage order), the discovery metric it reached on the train split and, for
    ACDC, its near-τ decisions and per-edge trace."""

    label: str
    kept: tuple[str, ...]
    tau: float | None = None
    faithfulness: float | None = None
    n_near_tau: int | None = None
    trace: EdgeTrace | None = None


@dataclass(frozen=True)
class CircuitArtifact:
    method: str
    model: str
    task: str
    edges: tuple[str, ...]
    scores: tuple[float, ...]
    score_kind: ScoreKind
    circuits: tuple[EdgeCircuit, ...]
    n_forward: int
    n_backward: int
    seconds: float
    n_prompts: int
    n_prompts_available: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metric_values: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def reference_index(self, reference_tau: float) -> int:
        """The circuit compared and drawn: a τ sweep's circuit at the τ closest to
        ``reference_tau`` (log scale, first on ties); otherwise the first circuit (head
        pruning's only one, EAP's smallest size)."""
        taus = [c.tau for c in self.circuits]
        if self.score_kind != "prune_tau" or any(t is None for t in taus):
            return 0
        return nearest(taus, reference_tau)  # type: ignore[arg-type]

    def reference_circuit(self, reference_tau: float) -> EdgeCircuit:
        return self.circuits[self.reference_index(reference_tau)]

    def scores_by_name(self) -> dict[str, float]:
        return dict(zip(self.edges, self.scores, strict=True))

    def to_json(self) -> dict[str, Any]:
        return self.to_file().to_json()

    def to_file(self) -> CircuitFile:
        """The artifact as its file model (`CircuitFile`)."""
        return CircuitFile.build(
            method=self.method,
            model=self.model,
            task=self.task,
            n_edges=len(self.edges),
            edges=list(self.edges),
            scores={e: _dump_score(s) for e, s in zip(self.edges, self.scores, strict=True)},
            score_kind=self.score_kind,
            circuits=[
                {
                    "label": c.label,
                    "tau": c.tau,
                    "n_kept": len(c.kept),
                    "faithfulness": c.faithfulness,
                    "n_near_tau": c.n_near_tau,
                    "kept": list(c.kept),
                    "trace": c.trace.to_json() if c.trace is not None else None,
                }
                for c in self.circuits
            ],
            metric_values=dict(self.metric_values),
            n_forward=self.n_forward,
            n_backward=self.n_backward,
            seconds=self.seconds,
            n_prompts=self.n_prompts,
            n_prompts_available=self.n_prompts_available,
            params=dict(self.params),
            details=dict(self.details),
        )

    @classmethod
    def from_json(cls, data: Any, where: str = "circuit") -> CircuitArtifact:
        """Validate a JSON object (`CircuitFile`); ArtifactError naming ``where``, each bad
        field and the rule to rerun otherwise."""
        return cls.from_file(CircuitFile.parse(data, where))

    @classmethod
    def from_file(cls, f: CircuitFile) -> CircuitArtifact:
        return cls(
            method=f.method,
            model=f.model,
            task=f.task,
            edges=tuple(f.edges),
            scores=tuple(_load_score(f.scores[e]) for e in f.edges),
            score_kind=f.score_kind,
            circuits=tuple(
                EdgeCircuit(
                    c.label,
                    tuple(c.kept),
                    c.tau,
                    c.faithfulness,
                    c.n_near_tau,
                    EdgeTrace.from_json(c.trace.model_dump()) if c.trace is not None else None,
                )
                for c in f.circuits
            ),
            n_forward=f.n_forward,
            n_backward=f.n_backward,
            seconds=f.seconds,
            n_prompts=f.n_prompts,
            n_prompts_available=f.n_prompts_available,
            params=dict(f.params),
            metric_values=dict(f.metric_values),
            details=dict(f.details),
        )


class _Trace(StrictModel):
    edge: list[int]
    baseline: list[float]
    faithfulness: list[float]
    removed: list[bool]
    near_tau: list[bool]

    @model_validator(mode="after")
    def _columns(self) -> _Trace:
        n = len(self.edge)
        if any(
            len(c) != n for c in (self.baseline, self.faithfulness, self.removed, self.near_tau)
        ):
            raise ValueError("trace columns differ in length")
        return self


class _Circuit(StrictModel):
    label: str
    tau: float | None
    n_kept: int
    faithfulness: float | None
    n_near_tau: int | None
    kept: list[str]
    trace: _Trace | None


class CircuitFile(Artifact):
    """``data/circuits/{model}/{task}/{method}.json`` as written: the fields of
    `CircuitArtifact` in JSON form (``"inf"`` scores, counts beside lists), checked for
    consistency (scores and kept edges name the graph's edges, at least one circuit)."""

    FORMAT: ClassVar[str] = "circuitlab.edge_circuit/3"
    RULE: ClassVar[str] = "acdc_circuit"

    method: str
    model: str
    task: str
    n_edges: int
    edges: list[str]
    scores: dict[str, float | Literal["inf"] | None]
    score_kind: ScoreKind
    circuits: list[_Circuit]
    metric_values: dict[str, float | None]
    n_forward: int
    n_backward: int
    seconds: float
    n_prompts: int
    n_prompts_available: int | None
    params: dict[str, Any]
    details: dict[str, Any]

    @model_validator(mode="after")
    def _consistent(self) -> CircuitFile:
        if set(self.scores) != set(self.edges) or len(self.edges) != self.n_edges:
            raise ValueError(f"scores and edges do not name the same {self.n_edges} edges")
        if not self.circuits:
            raise ValueError("no circuits")
        known = set(self.edges)
        for c in self.circuits:
            unknown = [e for e in c.kept if e not in known]
            if unknown or len(c.kept) != c.n_kept:
                raise ValueError(
                    f"circuit {c.label!r} keeps unknown edges {unknown[:3]} "
                    f"or n_kept={c.n_kept} != {len(c.kept)}"
                )
            if c.trace is not None and not all(0 <= e < self.n_edges for e in c.trace.edge):
                raise ValueError(f"circuit {c.label!r}: trace edge index out of range")
        return self


def _dump_score(value: float) -> float | str | None:
    if math.isinf(value) and value > 0:
        return "inf"
    return None if not math.isfinite(value) else value


def _load_score(value: float | str | None) -> float:
    if value == "inf" or value is None:  # null: written by hand; treat as never pruned
        return math.inf
    return float(value)


def save_circuit(path: str | Path, artifact: CircuitArtifact) -> Path:
    return artifact.to_file().save(path)


def load_circuit(path: str | Path, rule: str | None = None) -> CircuitArtifact:
    return CircuitArtifact.from_file(CircuitFile.load(path, rule))


# ------------------------------------------------------------------------------ picture
def node_layer(name: str, n_layers: int) -> int:
    """auto-circuit's graph layer of a node name (Resid Start 0 … Resid End 2L+1)."""
    try:
        return Node.parse(name).graph_layer(n_layers)
    except ConfigError:
        raise ArtifactError(f"cannot place node {name!r} in a layer") from None


def to_dot(artifact: CircuitArtifact, circuit: EdgeCircuit) -> str:
    """DOT text of one of the artifact's circuits: the nodes its edges touch, one rank per
    graph layer (embeddings at the top, unembedding at the bottom)."""
    pairs = [e.split("->", 1) for e in circuit.kept]
    names = sorted({n for p in pairs for n in p})
    dsts = (Node.parse(e.split("->")[-1]) for e in artifact.edges)
    n_layers = (
        max((d.layer for d in dsts if d.kind == "mlp" and d.layer is not None), default=0) + 1
    )
    by_layer: dict[int, list[str]] = {}
    for n in names:
        by_layer.setdefault(node_layer(n, n_layers), []).append(n)
    title = (
        f"{artifact.model} / {artifact.task}: {artifact.method} "
        f"({circuit.label}, {len(pairs)} edges)"
    )
    lines = [
        "digraph circuit {",
        f'  label="{title}"; labelloc=t; rankdir=TB;',
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontsize=10];',
    ]
    for layer in sorted(by_layer):
        members = " ".join(f'"{n}";' for n in by_layer[layer])
        lines.append(f"  subgraph layer_{layer} {{ rank=same; {members} }}")
    lines += [f'  "{s}" -> "{d}";' for s, d in pairs]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_png(dot_text: str, path: str | Path) -> bool:
    """Render DOT to PNG with the graphviz package when the ``dot`` executable exists;
    returns whether it rendered (False, silently, when Graphviz is not installed)."""
    if shutil.which("dot") is None:
        return False
    import graphviz

    png = graphviz.Source(dot_text).pipe(format="png")
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return True


def write_dot(path: str | Path, artifact: CircuitArtifact, circuit: EdgeCircuit) -> str:
    text = to_dot(artifact, circuit)
    write_text_atomic(path, text)
    return text


def nearest(taus: Sequence[float], target: float) -> int:
    """Index of the τ closest to ``target`` on a log scale (first on ties)."""
    return min(range(len(taus)), key=lambda i: abs(math.log(taus[i]) - math.log(target)))
