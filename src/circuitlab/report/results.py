"""RESULTS.md: the results tables of a run, written from its artifacts (`make results`).

Every number here is read from ``data/`` — the metrics files the stages wrote — never typed by
hand, and each table is stamped with what it came from: the model's weights (sha256 of
``model.safetensors``, or the hub reference) and the commit(s) recorded in the provenance of
the metrics files it reads (`circuitlab.tracking`), so a table cannot silently outlive the run
that made it. Tables of stages that did not run are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from circuitlab.acdc.scores import EdgeEvaluation
from circuitlab.artifact import Artifact, Metrics
from circuitlab.blacklist.metrics import BlacklistMetrics
from circuitlab.compare.artifact import CompareReport
from circuitlab.errors import ArtifactError
from circuitlab.io import file_hash, read_json, require
from circuitlab.lrp.metrics import FaithfulnessMetrics, LrpCircuitMetrics
from circuitlab.models.metrics import EvaluationMetrics
from circuitlab.report.format import beats_random, interval_cell, plus_minus
from circuitlab.steering.artifact import Interval, SteeringReport

_File = TypeVar("_File", bound=Artifact | Metrics)


@cache
def _json(path: Path) -> Any:
    """Each file is read once: for its table and for the commit stamp."""
    return read_json(path)


def load(kind: type[_File], path: Path, rule: str | None = None) -> _File:
    """The file at ``path`` through its typed model (a missing file names ``rule``, or the
    model's own rule)."""
    require(path, rule or kind.RULE)
    return kind.parse(_json(path), str(path), rule)


@dataclass
class Table:
    title: str
    note: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    #: the metrics file of each row, whose provenance record stamps the table
    sources: list[Path] = field(default_factory=list)

    def add(self, source: Path, *cells: str) -> None:
        self.rows.append(list(cells))
        self.sources.append(source)


def num(value: Any, digits: int = 3) -> str:
    """A number for a table: None → '—', floats with ``digits`` significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def interval(cell: Interval | None, digits: int = 3) -> str:
    """``mean [lo, hi]`` of a bootstrap interval (`circuitlab.report.format.interval_cell`)."""
    return interval_cell(cell, digits, num)


def model_stamp(data: Path, model: str) -> str:
    """``sha256 <12 hex>`` of the model's weights (a trained model) or of its hub reference."""
    weights = data / "models" / model / "model.safetensors"
    reference = data / "models" / f"{model}.json"
    if weights.exists():
        return f"weights sha256 `{file_hash(weights)[:12]}`"
    if reference.exists():
        ref = read_json(reference)
        digest = file_hash(reference)[:12]
        return f"hub `{ref.get('id')}` revision `{ref.get('revision')}` (reference `{digest}`)"
    raise ArtifactError(f"model {model!r} has neither {weights} nor {reference}")


def commits(sources: Iterable[Path]) -> str:
    """The commit(s) in the provenance record of the metrics files ``sources`` (marked when the
    tree was dirty)."""
    found: set[str] = set()
    for path in sources:
        env = (_json(path).get("provenance") or {}).get("environment") or {}
        commit = env.get("commit")
        if commit:
            found.add(commit[:7] + (" (dirty)" if env.get("dirty") else ""))
    return ", ".join(f"`{c}`" for c in sorted(found)) or "unknown"


def _models(data: Path) -> list[str]:
    folder = data / "metrics" / "evaluate_model"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def _layer(item: tuple[str, int]) -> int:
    return int(item[0])


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.exists() else []


def accuracy_table(data: Path, model: str) -> Table:
    t = Table(
        "Task accuracy",
        "top-1 accuracy and mean logit difference (target − counterfactual) on the test split",
        ["task", "accuracy", "logit diff", "prompts"],
    )
    for path in _files(data / "metrics" / "evaluate_model" / model):
        test = load(EvaluationMetrics, path).test
        t.add(path, path.stem, num(test.accuracy), num(test.logit_diff),
              num(test.n))  # fmt: skip
    return t


def blacklist_table(data: Path, model: str) -> Table:
    t = Table(
        "Universal-neuron blacklist",
        "neurons in the top-k |activation| of most prompts unrelated to any task (left out of "
        "every neuron circuit), per layer, and their stability on a disjoint half of the prompts",
        ["neurons", "per layer", "prompts", "stability"],
    )
    path = data / "metrics" / "blacklist" / f"{model}.json"
    if path.exists():
        b = load(BlacklistMetrics, path)
        layers = ", ".join(f"L{k}: {v}" for k, v in sorted(b.per_layer.items(), key=_layer))
        t.add(path, num(b.n_neurons), layers or "—", num(b.n_prompts),
              num(b.stability))  # fmt: skip
    return t


def lrp_table(data: Path, model: str) -> Table:
    t = Table(
        "LRP neuron circuits: faithfulness",
        "area under the faithfulness curve over circuit sizes (ablating everything else), "
        "against random neurons matched by layer and position; smallest size (share of the "
        "analysed neurons) whose circuit reaches the target faithfulness",
        [
            "task",
            "neurons",
            "mean abl.: area / random",
            "zero abl.: area / random",
            "smallest size",
        ],
    )
    for path in _files(data / "metrics" / "lrp_faithfulness" / model):
        f = load(FaithfulnessMetrics, path)
        circuit = load(LrpCircuitMetrics, data / "metrics" / "lrp_circuit" / model / path.name)
        mean, zero = (f.ablations.get(k) for k in ("mean", "zero"))
        t.add(
            path,
            path.stem,
            num(circuit.n_neurons),
            f"{num(mean.area)} / {num(mean.random_area)}" if mean else "—",
            f"{num(zero.area)} / {num(zero.random_area)}" if zero else "—",
            num(mean.smallest_size_reaching_target) if mean else "—",
        )
    return t


CALIBRATION = ("grad_x_act", "lrp_full", "lrp_half", "lrp_cp_attn")


def calibration_table(data: Path, model: str) -> Table:
    t = Table(
        "LRP calibration",
        "Spearman ρ between each attribution and the measured effect of ablating single "
        "neurons drawn at random, with a 95 % bootstrap interval over the drawn neurons",
        ["task", "neurons", *CALIBRATION],
    )
    for path in _files(data / "metrics" / "lrp_faithfulness" / model):
        cal = load(FaithfulnessMetrics, path).calibration
        rho = cal.rho()
        cells = []
        for name in CALIBRATION:
            band = cal.bounds(name) if name in rho else None
            cells.append(
                num(rho.get(name), 2) + (f" [{num(band.lo, 2)}, {num(band.hi, 2)}]" if band else "")
            )
        t.add(path, path.stem, num(cal.n_neurons), *cells)
    return t


def mib_table(data: Path, model: str) -> Table:
    t = Table(
        "Edge methods on MIB's yardstick (CPR ↑, CMD ↓)",
        "every edge method's circuits at MIB's sizes (0.1 % … 100 % of the edges, top scores, "
        "pruned to what connects input and logits), faithfulness on the test split; CPR = area "
        "under the signed ranking's curve, CMD = area between the |score| ranking's curve and "
        "1 (`circuitlab.acdc.mib`); best CPR first; random = equal-size random edge sets, 95 % "
        "t interval over seeds; 'beats' = outside that interval on the better side",
        ["task", "method", "CPR", "beats random", "CMD", "beats random"],
    )
    for path in _files(data / "metrics" / "acdc_evaluate" / model):
        report = load(EdgeEvaluation, path)
        mib = report.mib
        if mib is None:
            continue
        rand = mib.random
        for method in mib.by_cpr():
            c = mib.methods[method]
            t.add(
                path,
                path.stem,
                method,
                num(c.cpr),
                _yes(beats_random(c.cpr, rand.cpr_mean, rand.cpr_ci, higher=True)),
                num(c.cmd),
                _yes(beats_random(c.cmd, rand.cmd_mean, rand.cmd_ci, higher=False)),
            )
        t.add(
            path,
            path.stem,
            "random edges",
            plus_minus(rand.cpr_mean, rand.cpr_ci),
            "",
            plus_minus(rand.cmd_mean, rand.cmd_ci),
            "",
        )
    return t


def _yes(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "no")


def acdc_table(data: Path, model: str) -> Table:
    t = Table(
        "Edge circuits at their reference size (ACDC family, EAP, head pruning)",
        "each method's reference circuit on the test split (the one drawn; the methods are "
        "compared at every size in the table above): edges kept, KL to the clean run, "
        "recovered logit difference, and the mean recovery of random edge sets of that size",
        ["task", "method", "edges", "KL", "recovery", "random recovery"],
    )
    for path in _files(data / "metrics" / "acdc_evaluate" / model):
        report = load(EdgeEvaluation, path)
        for method, res in report.methods.items():
            ref = res.reference
            t.add(
                path,
                path.stem,
                method,
                f"{num(ref.n_edges)} / {num(report.n_edges)}",
                num(ref.kl),
                num(ref.recovery),
                num(ref.random.recovery_mean),
            )
    return t


def steering_table(data: Path, model: str) -> Table:
    t = Table(
        "Steering: circuits and CAA against their controls, within the side-effect budget",
        "change of the primary metric beyond the matched random control (steered − control "
        "effect, bootstrap interval over prompts, Bonferroni-corrected for the multipliers it "
        "was chosen from) when amplifying and when suppressing, each at its best multiplier "
        "whose side effects fit `steering.budget` (KL on neutral prompts, other tasks' "
        "accuracy); 'none in budget' when no multiplier fits. A point outside the budget is "
        "never counted",
        ["name", "method", "metric", "amplify Δ", "at ×", "beats", "suppress Δ", "at ×", "beats",
         "KL (amplify)"],
    )  # fmt: skip
    root = data / "steering" / model
    counts = {"arms": 0, "beat": 0, "none": 0}
    for path in sorted(root.glob("*/*.json")) if root.exists() else []:
        rule = "caa_steering" if path.stem == "caa" else "steering"
        summary = load(SteeringReport, path, rule).summary
        cells: list[str] = []
        for arm in (summary.amplify, summary.suppress):
            if arm is None:
                cells += ["—", "—", "—"]
                continue
            counts["arms"] += 1
            counts["beat"] += int(arm.beats_control)
            counts["none"] += int(not arm.in_budget)
            if not arm.in_budget:
                cells += ["none in budget", "—", "no"]
            else:
                cells += [interval(arm.delta), num(arm.multiplier), num(arm.beats_control)]
        amplify = summary.amplify
        t.add(
            data / "metrics" / "steering" / model / path.parent.name / path.name,
            path.parent.name,
            path.stem,
            summary.primary,
            *cells,
            num(amplify.kl_neutral) if amplify else "—",
        )
    if counts["arms"]:
        t.note += (
            f". {counts['beat']} of {counts['arms']} (row, direction) verdicts beat their "
            f"control within the budget; {counts['none']} had no multiplier within it"
        )
    return t


def compare_table(data: Path, model: str) -> Table:
    t = Table(
        "CAA vs circuit at a matched effect",
        "per behaviour and direction: the largest effect every method reaches, and the KL side "
        "effect each method pays for it (lower is better)",
        ["behaviour", "direction", "matched effect", "best", "KL per method"],
    )
    for path in _files(data / "compare" / model):
        for direction, m in load(CompareReport, path).matched.items():
            kls = ", ".join(f"{name} {num(v.kl)}" for name, v in sorted(m.methods.items()))
            t.add(data / "metrics" / "compare" / model / path.name, path.stem, direction,
                  num(m.effect), str(m.best), kls)  # fmt: skip
    return t


def _verdict_cell(value: bool | str | None) -> str:
    """A verdict's value on one seed: yes/no, a method's name, or — (that seed has none)."""
    return value if isinstance(value, str) else num(value)


def robustness_table(data: Path, model: str) -> Table:
    path = data / "metrics" / "robustness" / f"{model}.json"
    if not path.exists():
        return Table("", "", [])
    from circuitlab.robustness.artifact import RobustnessSummary

    summary = load(RobustnessSummary, path)
    seeds = [str(s) for s in summary.seeds]
    t = Table(
        "Verdicts over training seeds (`make robustness`)",
        f"every verdict above judged on the same architecture, corpus and schedule trained "
        f"with seeds {', '.join(seeds)} (models {', '.join(summary.models[s] for s in seeds)}): "
        f"{summary.n_robust} of {summary.n_verdicts} agree on every seed; the ones that differ "
        "first, each seed's value, and the figure's mean (standard deviation) over the seeds",
        ["verdict", "agree", *[f"seed {s}" for s in seeds], "figure"],
    )
    for key, v in sorted(summary.verdicts.items(), key=lambda kv: (kv[1].robust, kv[0])):
        values = [_verdict_cell(v.values.get(s)) for s in seeds]
        figure = f"{num(v.spread.mean)} ({num(v.spread.sd, 2)})"
        t.add(path, key, f"{v.agree} / {len(seeds)}", *values, figure)
    return t


TABLES = (
    accuracy_table,
    blacklist_table,
    lrp_table,
    calibration_table,
    mib_table,
    acdc_table,
    steering_table,
    compare_table,
    robustness_table,
)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_results(data: str | Path, models: Sequence[str] = ()) -> str:
    """The text of RESULTS.md for the run in ``data`` (pure apart from reading it): every model
    of the run, or only `models`."""
    data = Path(data)
    _json.cache_clear()  # this run's files
    found = _models(data)
    missing = [m for m in models if m not in found]
    if missing:
        raise ArtifactError(
            f"{data} has no evaluation of model(s) {', '.join(missing)}; it has: "
            f"{', '.join(found) or 'none'}"
        )
    models = list(models) or found
    if not models:
        raise ArtifactError(
            f"{data} holds no model evaluation (data/metrics/evaluate_model/): run "
            "`make reproduce` first"
        )
    out = [
        "# Results",
        "",
        "Generated by `make results` (`circuitlab results`) from the artifacts in `data/`; do "
        "not edit by hand. Each table names the model weights and the commit its numbers came "
        "from. Speed figures are in [BENCHMARKS.md](BENCHMARKS.md).",
    ]
    for model in models:
        stamp = model_stamp(data, model)
        out += ["", f"## Model `{model}`", ""]
        for build in TABLES:
            table = build(data, model)
            if not table.rows:
                continue
            out += [
                f"### {table.title}",
                "",
                f"{table.note[0].upper()}{table.note[1:]}. Model `{model}`, {stamp}; commit "
                f"{commits(table.sources)}.",
                "",
                markdown_table(table.header, table.rows),
                "",
            ]
    return "\n".join(out).rstrip() + "\n"
