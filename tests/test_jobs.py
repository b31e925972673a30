"""The job graph (circuitlab.jobs) is the one source of what a run consists of: the jobs of a
config, and from them the report's manifest; checked against the config without Snakemake."""

from __future__ import annotations

from collections import Counter
from typing import Any

from circuitlab.config import load_config
from circuitlab.jobs import ADAPTER_RULES, Job, pipeline_jobs
from circuitlab.report.manifest import manifest_for, manifest_paths
from pipeline_support import TINY


def config(**overlay: Any):
    """TINY with two edge methods (the fake outputs below draw two DOT files)."""
    two = {"acdc": {**TINY["acdc"], "methods": ["acdc", "eap"]}}
    return load_config({**TINY, **two, **overlay}, where="test")


def fake_outputs(job: Job) -> dict[str, Any]:
    """Every name a rule declares, as ``rule/name/wildcards`` (lists for list outputs)."""
    base = "/".join([job.rule, *(v for _, v in job.wildcards)])
    if job.rule == "acdc_evaluate":
        return {"metrics": f"{base}/m", "plot": f"{base}/p", "dots": [f"{base}/d1", f"{base}/d2"]}
    names = ("metrics", "plot", "circuit", "report", "blacklist", "pareto", "overlap")
    return {n: f"{base}/{n}" for n in names}


def test_the_tiny_config_makes_every_job_once() -> None:
    cfg = config()
    jobs = pipeline_jobs(cfg)
    assert len(set(jobs)) == len(jobs)
    counts = Counter(j.rule for j in jobs)
    # 2 tasks + 1 behaviour, one model, two edge methods
    assert counts == {
        "datasets": 3, "train_toy_model": 1, "check_dataset": 3, "evaluate_model": 3,
        "lrp_attribution": 3, "lrp_circuit": 3, "lrp_faithfulness": 3, "blacklist": 1,
        "acdc_circuit": 4, "acdc_evaluate": 2, "contrastive_circuit": 1,
        "steering": 4, "caa_steering": 1, "steering_summary": 1, "caa": 1, "compare": 1,
        "report": 1, "record": 1,
    }  # fmt: skip
    assert Job.of("steering", model="tiny", task="refusal", circuit="contrastive") in jobs
    assert jobs[-2:] == [Job.of("report"), Job.of("record")]
    assert Job.of("acdc_circuit", model="tiny", task="ioi", method="eap").label == (
        "acdc_circuit[model=tiny, task=ioi, method=eap]"
    )


def test_a_transformer_lens_model_gets_only_the_hook_only_rules() -> None:
    hub = {"source": "hf", "id": "gpt2", "backend": "transformer_lens"}
    cfg = config(models={"tiny": None, "g": hub})
    jobs = pipeline_jobs(cfg)
    rules = {j.rule for j in jobs}
    assert not rules & ADAPTER_RULES
    assert {"model_ref", "acdc_circuit", "caa", "caa_steering", "steering_summary"} <= rules
    manifest = manifest_for(cfg, fake_outputs, lambda job: None)
    entry = manifest.models["g"]
    assert entry.backend == "transformer_lens" and entry.blacklist is None and not entry.lrp
    assert list(entry.steering) == ["refusal"] and list(entry.steering["refusal"].results) == [
        "caa"
    ]


def test_the_manifest_lists_the_files_of_the_graph_and_each_benchmark_in_job_order() -> None:
    cfg = config()
    jobs = pipeline_jobs(cfg)
    manifest = manifest_for(cfg, fake_outputs, lambda job: f"bench/{job.label}")
    tiny = manifest.models["tiny"]
    assert tiny.acdc["capitals"].dots == {
        "acdc": "acdc_evaluate/tiny/capitals/d1",
        "eap": "acdc_evaluate/tiny/capitals/d2",
    }
    assert tiny.lrp["refusal"].faithfulness == "lrp_faithfulness/tiny/refusal/metrics"
    assert list(tiny.steering["refusal"].results) == ["contrastive", "lrp", "caa"]
    assert [b.path for b in manifest.benchmarks] == [f"bench/{j.label}" for j in jobs]
    # every file the report reads is an output of some job of the graph
    produced = {
        f
        for j in jobs
        for v in fake_outputs(j).values()
        for f in ([v] if isinstance(v, str) else v)
    }
    read = set(manifest_paths(manifest)) - {b.path for b in manifest.benchmarks}
    assert read <= produced
