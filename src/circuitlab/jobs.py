"""The pipeline's job graph: which jobs a config makes, one `Job` (rule + wildcards) each.

This is the one source for what a run consists of. The Snakefile requests every output of every
job (`rule all`: a complete ``data/``, so an intermediate deleted by hand is rebuilt, not only a
final one), the report's manifest lists the same jobs' files
(`circuitlab.report.manifest.manifest_for`), and the guard against edited or deleted artifacts
(`circuitlab.provenance.manifest`) forces exactly the jobs of this graph. The paths themselves
stay where Snakemake declares them (the rules' ``output:``); the Snakefile maps a job to its
files by filling its rule's patterns with the job's wildcards.

No torch, no Snakemake: the Snakefile imports it, and tests call it with a `Config`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from circuitlab.stages import ADAPTER_RULES

if TYPE_CHECKING:
    from circuitlab.config import Config


@dataclass(frozen=True)
class Job:
    """One job of the pipeline: its rule and its wildcards (in the rule's order)."""

    rule: str
    wildcards: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, rule: str, **wildcards: str) -> Job:
        return cls(rule, tuple(wildcards.items()))

    @property
    def wc(self) -> dict[str, str]:
        return dict(self.wildcards)

    @property
    def label(self) -> str:
        """``rule[model=toy, task=ioi]`` — how a person tells two jobs of one rule apart."""
        inner = ", ".join(f"{k}={v}" for k, v in self.wildcards)
        return f"{self.rule}[{inner}]" if inner else self.rule


def is_native(cfg: Config, model: str) -> bool:
    """Whether `model` runs with circuitlab's own adapter (every rule) rather than the
    TransformerLens backend (the rules outside `circuitlab.stages.ADAPTER_RULES`)."""
    return getattr(cfg.active_models()[model], "backend", "native") == "native"


def runs(cfg: Config, model: str, rule: str) -> bool:
    """Whether `model`'s backend runs `rule`."""
    return rule not in ADAPTER_RULES or is_native(cfg, model)


def steering_jobs(cfg: Config, model: str) -> list[Job]:
    """The steering evaluations of a model, in report order: each task's LRP circuit, then each
    behaviour's circuits and CAA vectors (`steering_summary` reads their reports); neuron
    circuits only where the model's backend runs `steering`."""
    jobs = [Job.of("steering", model=model, task=t, circuit="lrp") for t in cfg.task_names()]
    for b in cfg.behaviour_names():
        for k in [*cfg.steering.behaviour_methods, "caa"]:
            if k == "caa":
                jobs.append(Job.of("caa_steering", model=model, behaviour=b))
            else:
                jobs.append(Job.of("steering", model=model, task=b, circuit=k))
    return [j for j in jobs if runs(cfg, model, j.rule)]


def _model_jobs(cfg: Config, model: str) -> Iterator[Job]:
    source = cfg.active_models()[model].source
    if source == "toy":
        yield Job.of("train_toy_model", toy=model)
    elif source == "random":
        yield Job.of("random_model", random=model)
    else:
        yield Job.of("model_ref", hub=model)
    for t in cfg.dataset_names():
        yield Job.of("check_dataset", model=model, task=t)
        yield Job.of("evaluate_model", model=model, task=t)
        for rule in ("lrp_attribution", "lrp_circuit", "lrp_faithfulness"):
            yield Job.of(rule, model=model, task=t)
    yield Job.of("blacklist", model=model)
    for t in cfg.task_names():
        for method in cfg.acdc.methods:
            yield Job.of("acdc_circuit", model=model, task=t, method=method)
        yield Job.of("acdc_evaluate", model=model, task=t)
    for b in cfg.behaviour_names():
        yield Job.of("contrastive_circuit", model=model, behaviour=b)
    steering = steering_jobs(cfg, model)
    yield from steering
    if steering:
        yield Job.of("steering_summary", model=model)
    for b in cfg.behaviour_names():
        yield Job.of("caa", model=model, behaviour=b)
    for b in cfg.behaviour_names():
        yield Job.of("compare", model=model, behaviour=b)
    if cfg.robustness is not None and cfg.robustness.model == model:
        yield Job.of("robustness", model=model)  # reads every seed model's verdicts


def model_jobs(cfg: Config, model: str) -> list[Job]:
    """Every job of one model its backend runs, in the order the report's timing table lists
    them."""
    return [j for j in _model_jobs(cfg, model) if runs(cfg, model, j.rule)]


def pipeline_jobs(cfg: Config) -> list[Job]:
    """Every job a run of `cfg` consists of: the datasets, each model's jobs, the report and
    the run's record (`circuitlab.tracking.record`)."""
    jobs = [Job.of("datasets", task=t) for t in cfg.dataset_names()]
    for model in cfg.active_models():
        jobs += model_jobs(cfg, model)
    jobs += [Job.of("report"), Job.of("record")]
    return jobs
