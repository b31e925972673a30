"""What the report reads: `ReportManifest`, the explicit list of artifacts per model and
section (`manifest_for` builds it from the job graph, `circuitlab.jobs`, and the rules' own
outputs; the report rule's inputs are exactly `manifest_paths(manifest)`: nothing is globbed
from ``data/``), and `load_report_inputs`, which reads and validates every listed artifact (a
missing one is an `ArtifactError` naming the rule that makes it)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from circuitlab.errors import ArtifactError
from circuitlab.io import read_json, require
from circuitlab.jobs import Job, is_native, model_jobs, pipeline_jobs
from circuitlab.types import StrictModel

if TYPE_CHECKING:
    from circuitlab.config import Config


# ------------------------------------------------------------------------------ manifest


class TrainingInputs(StrictModel):
    metrics: str  # data/metrics/train_toy_model/{model}.json
    curve: str  # data/plots/train_toy_model/{model}.json


class LrpInputs(StrictModel):
    circuit: str  # data/circuits/{model}/{task}/lrp.json
    metrics: str  # data/metrics/lrp_circuit/{model}/{task}.json
    neurons_plot: str  # data/plots/lrp_circuit/{model}/{task}.png
    faithfulness: str  # data/metrics/lrp_faithfulness/{model}/{task}.json
    faithfulness_plot: str  # data/plots/lrp_faithfulness/{model}/{task}.png


class AcdcInputs(StrictModel):
    circuits: dict[str, str]  # method -> data/circuits/{model}/{task}/{method}.json
    # method -> data/circuits/{model}/{task}/{method}.dot
    dots: dict[str, str] = Field(default_factory=dict)
    evaluation: str  # data/metrics/acdc_evaluate/{model}/{task}.json
    plot: str  # data/plots/acdc_evaluate/{model}/{task}.png


class SteeringInputs(StrictModel):
    results: dict[str, str]  # method -> data/steering/{model}/{name}/{method}.json
    plots: list[str] = Field(default_factory=list)  # PNGs made by the steering rules


class SteeringSummaryInputs(StrictModel):
    metrics: str  # data/metrics/steering/{model}/summary.json
    plot: str  # data/plots/steering/{model}/leakage.png


class RobustnessInputs(StrictModel):
    metrics: str  # data/metrics/robustness/{model}.json
    plot: str  # data/plots/robustness/{model}.png


class CompareInputs(StrictModel):
    result: str  # data/compare/{model}/{behaviour}.json
    plots: list[str] = Field(default_factory=list)


class ModelInputs(StrictModel):
    """One model's artifacts by section; keys are task or behaviour names."""

    training: TrainingInputs | None = None  # toy models only
    backend: Literal["native", "transformer_lens"] = "native"  # circuitlab.models.bridge
    evaluation: dict[str, str] = Field(default_factory=dict)  # metrics/evaluate_model/…
    blacklist: str | None = None  # data/blacklists/{model}.json
    lrp: dict[str, LrpInputs] = Field(default_factory=dict)
    acdc: dict[str, AcdcInputs] = Field(default_factory=dict)
    contrastive: dict[str, str] = Field(default_factory=dict)  # circuits/…/contrastive.json
    steering: dict[str, SteeringInputs] = Field(default_factory=dict)
    steering_summary: SteeringSummaryInputs | None = None
    compare: dict[str, CompareInputs] = Field(default_factory=dict)  # CAA vs circuit
    robustness: RobustnessInputs | None = None  # `make robustness`: verdicts over seeds


class BenchmarkInput(StrictModel):
    rule: str
    job: str  # the job's wildcards, e.g. "toy/capitals"
    path: str  # Snakemake `benchmark:` TSV


class ReportManifest(StrictModel):
    title: str = "circuitlab report"
    models: dict[str, ModelInputs]
    benchmarks: list[BenchmarkInput] = Field(default_factory=list)
    # the rule that makes each kind of file, for errors about missing inputs
    steering_rule: str = "steering"
    compare_rule: str = "compare"


def manifest_paths(manifest: ReportManifest) -> list[str]:
    """Every file the report reads, in a stable order (the report rule's inputs)."""
    out: list[str] = []
    for m in manifest.models.values():
        if m.training is not None:
            out += [m.training.metrics, m.training.curve]
        out += list(m.evaluation.values())
        if m.blacklist is not None:
            out.append(m.blacklist)
        for lrp in m.lrp.values():
            out += [lrp.circuit, lrp.metrics, lrp.neurons_plot, lrp.faithfulness]
            out.append(lrp.faithfulness_plot)
        for acdc in m.acdc.values():
            out += [*acdc.circuits.values(), *acdc.dots.values(), acdc.evaluation, acdc.plot]
        out += list(m.contrastive.values())
        for st in m.steering.values():
            out += [*st.results.values(), *st.plots]
        if m.steering_summary is not None:
            out += [m.steering_summary.metrics, m.steering_summary.plot]
        for cmp in m.compare.values():
            out += [cmp.result, *cmp.plots]
        if m.robustness is not None:
            out += [m.robustness.metrics, m.robustness.plot]
    out += [b.path for b in manifest.benchmarks]
    return list(dict.fromkeys(out))


#: a job's declared outputs by name (a list for a list output), as its rule declares them
OutputsOf = Callable[[Job], dict[str, Any]]
#: a job's `benchmark:` file, or None when its rule declares none
BenchmarkOf = Callable[[Job], "str | None"]


def manifest_for(cfg: Config, outputs: OutputsOf, benchmark: BenchmarkOf) -> ReportManifest:
    """The manifest of every artifact the report of a run of `cfg` shows: the files of the
    jobs of `circuitlab.jobs.pipeline_jobs`, by section, and each job's benchmark (the timing
    table, in job order). `outputs` and `benchmark` read the paths off the Snakemake rules."""
    models: dict[str, dict[str, Any]] = {}
    for m in cfg.active_models():
        jobs = model_jobs(cfg, m)
        files = {job: outputs(job) for job in jobs}
        by_rule: dict[str, list[Job]] = {}
        for job in jobs:
            by_rule.setdefault(job.rule, []).append(job)

        entry: dict[str, Any] = {"evaluation": {}, "lrp": {}, "acdc": {}, "contrastive": {}}
        if not is_native(cfg, m):
            entry["backend"] = "transformer_lens"
        for job in by_rule.get("train_toy_model", []):
            entry["training"] = {"metrics": files[job]["metrics"], "curve": files[job]["plot"]}
        for job in by_rule.get("evaluate_model", []):
            entry["evaluation"][job.wc["task"]] = files[job]["metrics"]
        for job in by_rule.get("blacklist", []):
            entry["blacklist"] = files[job]["blacklist"]
        for job in by_rule.get("lrp_circuit", []):
            faith = files[Job("lrp_faithfulness", job.wildcards)]
            entry["lrp"][job.wc["task"]] = {
                "circuit": files[job]["circuit"],
                "metrics": files[job]["metrics"],
                "neurons_plot": files[job]["plot"],
                "faithfulness": faith["metrics"],
                "faithfulness_plot": faith["plot"],
            }
        methods = list(cfg.acdc.methods)
        for job in by_rule.get("acdc_evaluate", []):
            wc = job.wc
            entry["acdc"][wc["task"]] = {
                "circuits": {
                    k: files[Job.of("acdc_circuit", **wc, method=k)]["circuit"] for k in methods
                },
                "dots": dict(zip(methods, files[job]["dots"], strict=True)),
                "evaluation": files[job]["metrics"],
                "plot": files[job]["plot"],
            }
        for job in by_rule.get("contrastive_circuit", []):
            entry["contrastive"][job.wc["behaviour"]] = files[job]["circuit"]
        steering: dict[str, dict[str, Any]] = {}
        for job in [j for j in jobs if j.rule in ("steering", "caa_steering")]:
            name = job.wc.get("task") or job.wc["behaviour"]
            method = job.wc.get("circuit", "caa")
            section = steering.setdefault(name, {"results": {}, "plots": []})
            section["results"][method] = files[job]["report"]
            section["plots"].append(files[job]["plot"])
        entry["steering"] = steering
        for job in by_rule.get("steering_summary", []):
            entry["steering_summary"] = {
                "metrics": files[job]["metrics"],
                "plot": files[job]["plot"],
            }
        if "compare" in by_rule:
            entry["compare"] = {
                job.wc["behaviour"]: {
                    "result": files[job]["report"],
                    "plots": [files[job]["pareto"], files[job]["overlap"]],
                }
                for job in by_rule["compare"]
            }
        for job in by_rule.get("robustness", []):
            entry["robustness"] = {"metrics": files[job]["metrics"], "plot": files[job]["plot"]}
        models[m] = entry
    benchmarks = []
    for job in pipeline_jobs(cfg):
        path = benchmark(job)
        if path is not None:
            label = "/".join(v for _, v in job.wildcards) or job.rule
            benchmarks.append({"rule": job.rule, "job": label, "path": path})
    return ReportManifest.model_validate({"models": models, "benchmarks": benchmarks})


def parse_manifest(data: Any, source: str = "--manifest") -> ReportManifest:
    from circuitlab.validation import parse_model

    return parse_model(ReportManifest, data, source)


# ------------------------------------------------------------------------------ loading


@dataclass
class ModelResults:
    backend: str = "native"
    # {"metrics": TrainingMetrics, "curve": [{step, loss}, ...]}
    training: dict[str, Any] | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)  # task -> EvaluationMetrics
    blacklist: Any = None  # circuitlab.blacklist.artifact.Blacklist
    lrp: dict[str, dict[str, Any]] = field(default_factory=dict)
    acdc: dict[str, dict[str, Any]] = field(default_factory=dict)
    contrastive: dict[str, Any] = field(default_factory=dict)  # behaviour -> NeuronCircuit
    steering: dict[str, dict[str, Any]] = field(default_factory=dict)
    steering_summary: dict[str, Any] | None = None
    compare: dict[str, dict[str, Any]] = field(default_factory=dict)
    robustness: dict[str, Any] | None = None  # {"metrics": RobustnessSummary, "plot": png}


@dataclass
class LoadedReport:
    title: str
    models: dict[str, ModelResults]
    benchmarks: list[dict[str, Any]] = field(default_factory=list)


def _png(path: str, rule: str) -> bytes:
    data = require(path, rule).read_bytes()
    if not data.startswith(b"\x89PNG"):
        raise ArtifactError(f"{path} is not a PNG image (made by the rule '{rule}'); rerun it")
    return data


def _obj(path: str, rule: str) -> dict[str, Any]:
    data = read_json(path, rule=rule)
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object (made by the rule '{rule}')")
    return data


def read_benchmark(path: str, rule: str) -> dict[str, Any]:
    """One Snakemake benchmark TSV: wall seconds, max RSS (MB), CPU seconds of the job."""
    text = require(path, rule).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ArtifactError(f"{path} is not a Snakemake benchmark file (no 's' column)")

    def num(key: str) -> float | None:
        try:
            value = float(rows[-1].get(key, "NA"))
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    return {"s": num("s"), "max_rss": num("max_rss"), "cpu_time": num("cpu_time")}


def load_report_inputs(manifest: ReportManifest) -> LoadedReport:
    """Read every artifact the manifest lists (and nothing else); errors name the rule."""
    from circuitlab.acdc.artifact import CircuitArtifact
    from circuitlab.acdc.scores import EdgeEvaluation
    from circuitlab.blacklist.artifact import Blacklist
    from circuitlab.compare.artifact import CompareReport
    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.lrp.metrics import FaithfulnessMetrics, LrpCircuitMetrics
    from circuitlab.models.metrics import EvaluationMetrics, TrainingMetrics
    from circuitlab.steering.artifact import SteeringReport, SteeringSummary

    models: dict[str, ModelResults] = {}
    for name, m in manifest.models.items():
        lm = ModelResults(backend=m.backend)
        if m.training is not None:
            curve = read_json(m.training.curve, rule="train_toy_model")
            if not isinstance(curve, list):
                raise ArtifactError(f"{m.training.curve}: expected a list of {{step, loss}}")
            lm.training = {"metrics": TrainingMetrics.load(m.training.metrics), "curve": curve}
        lm.evaluation = {t: EvaluationMetrics.load(p) for t, p in m.evaluation.items()}
        if m.blacklist is not None:
            lm.blacklist = Blacklist.from_json(_obj(m.blacklist, "blacklist"), m.blacklist)
        for task, lrp in m.lrp.items():
            lm.lrp[task] = {
                "circuit": NeuronCircuit.from_json(_obj(lrp.circuit, "lrp_circuit"), lrp.circuit),
                "metrics": LrpCircuitMetrics.load(lrp.metrics),
                "neurons_plot": _png(lrp.neurons_plot, "lrp_circuit"),
                "faithfulness": FaithfulnessMetrics.load(lrp.faithfulness),
                "faithfulness_plot": _png(lrp.faithfulness_plot, "lrp_faithfulness"),
            }
        for task, acdc in m.acdc.items():
            lm.acdc[task] = {
                "circuits": {
                    method: CircuitArtifact.from_json(_obj(p, "acdc_circuit"), p)
                    for method, p in acdc.circuits.items()
                },
                "dots": {
                    method: require(p, "acdc_evaluate").read_text(encoding="utf-8")
                    for method, p in acdc.dots.items()
                },
                "evaluation": EdgeEvaluation.load(acdc.evaluation),
                "plot": _png(acdc.plot, "acdc_evaluate"),
            }
        lm.contrastive = {
            b: NeuronCircuit.from_json(_obj(p, "contrastive_circuit"), p)
            for b, p in m.contrastive.items()
        }
        for key, st in m.steering.items():
            rules = {
                k: "caa_steering" if k == "caa" else manifest.steering_rule for k in st.results
            }
            lm.steering[key] = {
                "results": {
                    k: SteeringReport.parse(_obj(p, rules[k]), p) for k, p in st.results.items()
                },
                # by file stem: a method's figure is named after it ({method}.png)
                "plots": {
                    Path(p).stem: _png(p, rules.get(Path(p).stem, manifest.steering_rule))
                    for p in st.plots
                },
            }
        if m.steering_summary is not None:
            lm.steering_summary = {
                "metrics": SteeringSummary.load(m.steering_summary.metrics),
                "plot": _png(m.steering_summary.plot, "steering_summary"),
            }
        for key, cmp in m.compare.items():
            lm.compare[key] = {
                "result": CompareReport.parse(_obj(cmp.result, manifest.compare_rule), cmp.result),
                "plots": [_png(p, manifest.compare_rule) for p in cmp.plots],
            }
        if m.robustness is not None:
            from circuitlab.robustness.artifact import RobustnessSummary

            lm.robustness = {
                "metrics": RobustnessSummary.load(m.robustness.metrics),
                "plot": _png(m.robustness.plot, "robustness"),
            }
        models[name] = lm
    benchmarks = [
        {"rule": b.rule, "job": b.job, **read_benchmark(b.path, b.rule)}
        for b in manifest.benchmarks
    ]
    return LoadedReport(title=manifest.title, models=models, benchmarks=benchmarks)
