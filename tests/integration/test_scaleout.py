"""Scale-out: the SLURM profile plans GPU jobs for model stages and CPU jobs for the rest, and
submits through sbatch as the executor plugin does; the real-model configs validate.

SLURM itself is replaced by stub `sbatch`/`srun`/`sacct`/`squeue`/`scontrol`/`sinfo`/`sacctmgr`/`sshare`
scripts on PATH: sbatch records its arguments and runs the job right there (so a CPU job really
completes through the plugin's submit → jobstep → srun path) and sacct reports the job's state.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from circuitlab.config import load_config, merge_config
from pipeline_support import BIN, ROOT, make_workdir, planned_jobs, snakemake_env

pytest.importorskip("snakemake_executor_plugin_slurm")

PROFILE = "workflow/profiles/slurm"
FAST = [  # poll the stub scheduler quickly; accounts are site-specific
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks", "1",
    "--seconds-between-status-checks", "1",
    "--latency-wait", "2",
    "--retries", "0",
]  # fmt: skip

SBATCH = r"""#!/bin/sh
# stub sbatch: record the call (one [arg] per argument), run the job here, remember its state
d=$(dirname "$0")
printf 'sbatch' >> "$d/calls.log"
for a in "$@"; do printf ' [%s]' "$a" >> "$d/calls.log"; done; echo >> "$d/calls.log"
id=$(( $(cat "$d/next_id" 2>/dev/null || echo 1000) + 1 )); echo $id > "$d/next_id"
cmd=""; wd=.; gpu=no
while [ $# -gt 0 ]; do
  case "$1" in
    --wrap=*) cmd="${1#--wrap=}" ;;
    -D) shift; wd="$1" ;;
    --gpus=*|--gres=gpu*) gpu=yes ;;
  esac
  shift
done
[ -z "$cmd" ] && cmd=$(cat)
if [ "$gpu" = yes ]; then s=FAILED  # no GPU node here: record the submission only
elif (cd "$wd" && SLURM_JOB_ID=$id sh -c "$cmd") >> "$d/job_$id.out" 2>&1; then s=COMPLETED
else s=FAILED; fi
echo "$id|$s" >> "$d/states"
echo "$id"
"""
SRUN = r"""#!/bin/sh
d=$(dirname "$0"); echo "srun $*" >> "$d/calls.log"
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
exec "$@"
"""
SACCT = """#!/bin/sh
d=$(dirname "$0"); echo "sacct $*" >> "$d/calls.log"; cat "$d/states" 2>/dev/null; exit 0
"""
OTHER = """#!/bin/sh
echo "{name} $*" >> "$(dirname "$0")/calls.log"; exit 0
"""

MODEL_RULES = {  # load the model's weights: one GPU each
    "evaluate_model", "blacklist", "lrp_attribution", "lrp_faithfulness", "contrastive_circuit",
    "acdc_circuit", "acdc_evaluate", "steering", "caa", "caa_steering", "compare",
}  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A workflow copy with the tiny config, and an environment whose PATH has stub SLURM."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    scripts = {"sbatch": SBATCH, "srun": SRUN, "sacct": SACCT}
    for name in ("squeue", "scontrol", "sinfo", "sacctmgr", "sshare"):
        scripts[name] = OTHER.format(name=name)
    for name, text in scripts.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    work = make_workdir(tmp_path / "work")
    env = snakemake_env(work)
    env["PATH"] = f"{stubs}{os.pathsep}{env['PATH']}"
    return work, env


def smk(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "snakemake"), "--workflow-profile", PROFILE, *args],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def planned_resources(proc: subprocess.CompletedProcess[str]) -> dict[str, list[dict[str, str]]]:
    """rule → the `resources:` of each of its jobs, from a dry run's job listing."""
    out: dict[str, list[dict[str, str]]] = {}
    for job in planned_jobs(proc):
        if job["resources"]:
            pairs = dict(kv.split("=", 1) for kv in job["resources"].split(", "))
            out.setdefault(job["rule"], []).append(pairs)
    return out


def test_profile_is_valid_yaml_with_a_cpu_default() -> None:
    profile = yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["default-resources"]["slurm_partition"] == "cpu"
    assert "gpu" not in profile["default-resources"]
    for rule in MODEL_RULES:
        res = profile["set-resources"][rule]
        assert res["slurm_partition"] == "gpu" and res["gpu"] == 1, rule


def test_dry_run_plans_gpu_for_model_stages_and_cpu_for_the_rest(
    cluster: tuple[Path, dict[str, str]],
) -> None:
    work, env = cluster
    proc = smk(work, env, "--dry-run", *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = planned_resources(proc)
    assert {"datasets", "train_toy_model", "lrp_circuit", "acdc_circuit"} <= set(plan)
    for rule, jobs in plan.items():
        if rule == "all":
            continue
        for res in jobs:
            assert int(res["runtime"]) > 0 and int(res["mem_mb"]) > 0, (rule, res)
            if rule in MODEL_RULES:
                assert res["slurm_partition"] == "gpu" and res.get("gpu") == "1", (rule, res)
                assert int(res["mem_mb"]) >= 32000, (rule, res)  # host RAM for 8B weights
            else:
                assert res["slurm_partition"] == "cpu" and "gpu" not in res, (rule, res)
    # circuit discovery gets the longest wall time
    longest = max(plan, key=lambda r: max(int(j["runtime"]) for j in plan[r]))
    assert longest == "acdc_circuit"
    calls = (work.parent / "stubs" / "calls.log").read_text()
    assert "sbatch" not in calls  # a dry run submits nothing


def test_a_cpu_job_runs_through_sbatch_and_a_gpu_job_asks_for_a_gpu(
    cluster: tuple[Path, dict[str, str]],
) -> None:
    work, env = cluster
    stubs = work.parent / "stubs"
    proc = smk(work, env, *FAST, "data/datasets/capitals.jsonl")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work / "data/datasets/capitals.jsonl").read_text().count("\n") == 14  # 8 + 6 rows
    (cpu_call,) = [c for c in (stubs / "calls.log").read_text().splitlines() if "sbatch" in c]
    for flag in ("[-p] [cpu]", "[-t] [30]", "[--mem] [8000]", "[--cpus-per-task=2]"):
        assert flag in cpu_call, cpu_call
    assert "--gpus" not in cpu_call and "rule_datasets" in cpu_call
    assert "--executor slurm-jobstep" in cpu_call  # the plugin's own job step runs the rule

    # A GPU rule: the model artifact is faked (the stub records the submission, runs nothing).
    model = work / "data/models/tiny"
    model.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (model / name).write_text("{}")  # every file the training rule declares
    (stubs / "calls.log").unlink()
    proc = smk(work, env, *FAST, "data/blacklists/tiny.json")
    assert proc.returncode != 0  # the stub marks GPU jobs FAILED
    (gpu_call,) = [c for c in (stubs / "calls.log").read_text().splitlines() if "sbatch" in c]
    for flag in ("[-p] [gpu]", "[--gpus=1]", "[--mem] [64000]", "[--cpus-per-task=4]"):
        assert flag in gpu_call, gpu_call
    assert not (work / "data/blacklists/tiny.json").exists()


@pytest.mark.parametrize(
    ("name", "arch_id"),
    [
        ("gpt2.yaml", "openai-community/gpt2"),
        ("llama-3.1-8b.yaml", "meta-llama/Llama-3.1-8B-Instruct"),
        ("qwen2.5-7b.yaml", "Qwen/Qwen2.5-7B-Instruct"),
    ],
)
def test_real_model_configs_validate_merged_into_the_default(name: str, arch_id: str) -> None:
    """Snakemake merges --configfile into config/config.yaml; the result must validate."""
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    extra = yaml.safe_load((ROOT / "config" / name).read_text())
    cfg = load_config(merge_config(base, extra))
    (model,) = cfg.active_models().values()
    assert model.source == "hf" and model.id == arch_id
    assert model.trust_remote_code is False
    assert model.revision, "pin a revision (branch, tag or commit)"
    if "8b" in name or "7b" in name:
        assert model.dtype == "bfloat16" and model.attn_implementation == "eager"


@pytest.mark.parametrize(
    ("name", "dims", "n_known"),
    [
        # the shapes written in the configs' comments (from the models' config.json)
        ("llama-3.1-8b.yaml", {"n_layers": 32, "d_mlp": 14336, "vocab_size": 128256}, 12),
        ("qwen2.5-7b.yaml", {"n_layers": 28, "d_mlp": 18944, "vocab_size": 152064}, 0),
    ],
)
def test_known_blacklist_applies_to_llama_by_shape(name: str, dims: dict, n_known: int) -> None:
    from types import SimpleNamespace

    from circuitlab.blacklist.detect import known_neurons_for

    text = (ROOT / "config" / name).read_text()
    assert f"{dims['n_layers']} layers" in text and f"d_mlp {dims['d_mlp']}" in text
    assert len(known_neurons_for(SimpleNamespace(**dims))) == n_known


def test_real_model_configs_pass_snakemakes_schema(tmp_path: Path) -> None:
    """What Snakemake's validate() sees: the merged config against the generated schema."""
    from snakemake.utils import validate

    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for name in ("gpt2.yaml", "llama-3.1-8b.yaml", "qwen2.5-7b.yaml"):
        merged = merge_config(base, yaml.safe_load((ROOT / "config" / name).read_text()))
        validate(merged, str(ROOT / "workflow/schemas/config.schema.yaml"), set_default=False)


def test_a_one_gpu_host_runs_one_model_loading_job_at_a_time(tmp_path: Path) -> None:
    """The Llama overlay on the local profile: every job that loads the model takes the GPU
    (`gpu=1`, its entry's device is cuda) and the profile has one, so Snakemake's scheduler
    never starts two at once; every other job takes none and runs beside them. A dry run does
    not show concurrency, so this checks the two things the scheduler works from: each job's
    `gpu` resource and the profile's limit. The embedded model (device cpu) takes no GPU: a
    CPU run keeps its parallelism."""
    from circuitlab.stages import MODEL_RULES

    profile = yaml.safe_load((ROOT / "workflow/profiles/default/config.yaml").read_text())
    assert profile["resources"] == {"gpu": 1}
    work = make_workdir(tmp_path / "work")
    overlay = work / "config" / "llama.yaml"
    overlay.write_text((ROOT / "config" / "llama-3.1-8b.yaml").read_text())
    env = snakemake_env(work, HF_HUB_OFFLINE="1")
    # TINY's embedded model `tiny` (device cpu) stays in the run beside the overlay's Llama
    for extra, on_gpu in ((["--configfile", str(overlay)], {"llama-3.1-8b"}), ([], set())):
        proc = subprocess.run(
            [str(BIN / "snakemake"), "--workflow-profile", "workflow/profiles/default",
             "--dry-run", *extra],
            cwd=work, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        jobs = [j for j in planned_jobs(proc) if j["rule"] != "all"]
        assert {j["rule"] for j in jobs} >= MODEL_RULES
        for job in jobs:
            res = dict(kv.split("=", 1) for kv in job["resources"].split(", ") if kv)
            model = re.search(r"\bmodel=([^,]+)", job["wildcards"])
            want = job["rule"] in MODEL_RULES and model is not None and model[1] in on_gpu
            assert int(res.get("gpu", 0)) == want, (job["rule"], job["wildcards"], res)
        assert any(j["rule"] == "acdc_circuit" and "llama" in j["wildcards"] for j in jobs) == bool(
            on_gpu
        )


def test_a_retried_job_asks_for_more_memory_and_time() -> None:
    """`retries: 1` never resubmits a job unchanged: every rule's `mem_mb` and `runtime` (and
    the defaults) are expressions of the attempt, evaluated by Snakemake as for
    `--set-resources`. Each doubles on the second attempt."""
    from snakemake.resources import Resource

    profile = yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())
    assert profile["retries"] >= 1
    sections = {"default": profile["default-resources"], **profile["set-resources"]}
    for rule, res in sections.items():
        for key in ("mem_mb", "runtime"):

            def at(attempt: int, key: str = key, res: dict = res) -> int:
                return Resource.cli_evaluator(
                    key, str(res[key]), wildcards=None, input=None, attempt=attempt,
                    async_run=None,
                )  # fmt: skip

            assert at(2) == 2 * at(1) > 0, (rule, key, res[key])
