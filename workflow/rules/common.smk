# Shared helpers: the validated config, numerics pins, code fingerprints, wildcard
# constraints and path helpers.
import json
import os
import shlex
import sys
import time
from pathlib import Path

from snakemake.io import apply_wildcards

from circuitlab.jobs import is_native, model_jobs, pipeline_jobs, steering_jobs
from circuitlab.models.spec import uses_gpu
from circuitlab.provenance import ENV_CODE_CACHE, numerics
from circuitlab.provenance.code import CodeIndex, plugins_for
from circuitlab.stages import unavailable_without_adapter
from circuitlab.tracking.headline import summary_path

# CFG, the validated config, is made in the Snakefile (before the schema's own validation).

# The numerics pins (ISA of ATen, MKL and oneDNN; OpenMP wait policy): every job inherits them,
# so `snakemake` run by hand computes what `make reproduce` computes on any x86-64 CPU.
numerics.apply()


# Code fingerprints (circuitlab.provenance.code): each rule's `code` param is the AST hash of
# every package module its CLI command runs, so editing that code reruns the rule's jobs and a
# comment, docstring or formatting edit does not. Computed once per invocation; per-file
# results are cached in .snakemake/ (jobs read the same cache for their provenance record).
CODE_CACHE = Path(".snakemake/circuitlab/code-index.json").resolve()
os.environ.setdefault(ENV_CODE_CACHE, str(CODE_CACHE))
_CODE_INDEX = CodeIndex.for_installed(cache=CODE_CACHE)
_CODE = {(c, None): _CODE_INDEX.fingerprint(c).param() for c in _CODE_INDEX.commands}
for _method in CFG.acdc.methods:
    _CODE["acdc-circuit", _method] = _CODE_INDEX.fingerprint(
        "acdc-circuit", plugins_for("acdc-circuit", _method)
    ).param()
_CODE_INDEX.save_cache()


def code(command, method=None):
    """A rule's `code` param: the fingerprint of what `circuitlab COMMAND` runs (per method for
    `acdc-circuit`, whose method module is imported by name)."""
    return _CODE[command, method]

DATASETS = CFG.dataset_names()
MODELS = CFG.active_models()
TOY_MODELS = [m for m, spec in MODELS.items() if spec.source == "toy"]
HUB_MODELS = [m for m, spec in MODELS.items() if spec.source == "hf"]
RANDOM_MODELS = [m for m, spec in MODELS.items() if spec.source == "random"]
# Models loaded with `backend: transformer_lens` (an architecture circuitlab has no adapter for)
# run the hook-only stages: the job graph (circuitlab.jobs) leaves the others out.
BRIDGE_MODELS = [m for m in MODELS if not is_native(CFG, m)]
if BRIDGE_MODELS:
    sys.stderr.write(
        f"circuitlab: {', '.join(BRIDGE_MODELS)} run(s) with backend: transformer_lens: not "
        f"available without circuitlab's adapter: {unavailable_without_adapter()} "
        "(README, 'Models')\n"
    )

# edge circuits need a counterfactual answer: tasks only, not behaviours
EDGE_TASKS = CFG.task_names()
ACDC_METHODS = list(CFG.acdc.methods)

# The job graph (circuitlab.jobs): every job this config makes. `rule all` asks for every output
# of every one of them, the report reads their files, the guard forces the damaged ones.
JOBS = pipeline_jobs(CFG)


def metrics_output(path):
    """A stage's metrics JSON and, beside it under data/summary/, its headline values (the
    files DVC lists as metrics; circuitlab.tracking.headline), as a rule's named outputs."""
    return {"metrics": path, "summary": str(summary_path(path))}


def job_outputs(job):
    """A job's declared outputs by name (a list output stays a list), as its rule declares
    them, filled with the job's wildcards."""
    declared = getattr(rules, job.rule).output
    wc = job.wc

    def fill(pattern):
        return apply_wildcards(str(pattern), wc)

    return {
        name: [fill(p) for p in value] if isinstance(value, list) else fill(value)
        for name, value in declared.items()
    }


def job_files(job):
    """Every output file of a job (named or not)."""
    return [apply_wildcards(str(p), job.wc) for p in getattr(rules, job.rule).output]


def job_benchmark(job):
    """The job's `benchmark:` file, or None when its rule declares none."""
    pattern = getattr(rules, job.rule).rule.benchmark
    return None if pattern is None else apply_wildcards(str(pattern), job.wc)


# One W&B group per `snakemake` invocation; every job of this run logs into it.
os.environ.setdefault("CIRCUITLAB_RUN_GROUP", time.strftime("run-%Y%m%d-%H%M%S"))
os.environ.setdefault("CIRCUITLAB_ROOT", os.getcwd())
# Jobs record the sha256 of what they wrote (circuitlab.provenance.manifest): edits are found.
os.environ["CIRCUITLAB_RECORD"] = os.getcwd()


def alternatives(names):
    return "|".join(names) if names else "(?!x)x"


wildcard_constraints:
    task=alternatives(DATASETS),
    model=alternatives(list(MODELS)),
    toy=alternatives(TOY_MODELS),
    hub=alternatives(HUB_MODELS),
    random=alternatives(RANDOM_MODELS),
    behaviour=alternatives(CFG.behaviour_names()),


def json_arg(value):
    """A config slice as one shell-quoted JSON argument (sorted keys: stable params)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return shlex.quote(json.dumps(value, sort_keys=True, separators=(",", ":")))


# The files a trained toy (or built random) model's directory holds, declared one by one so that
# a deleted or missing one makes Snakemake rebuild it (a `directory()` output would hide it).
TOY_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def model_artifact(wildcards):
    """A stage's model input: the toy model's files, or a hub or random model's reference JSON."""
    m = wildcards.model
    if m in TOY_MODELS:
        return [f"data/models/{m}/{name}" for name in TOY_MODEL_FILES]
    return f"data/models/{m}.json"


def model_arg(wildcards):
    """The `--model` a stage's CLI gets: the toy model's directory or the reference JSON."""
    m = wildcards.model
    return f"data/models/{m}" if m in TOY_MODELS else f"data/models/{m}.json"


def model_device(wildcards):
    """The `--device` a model-loading stage's CLI gets: the model entry's `device`."""
    return MODELS[wildcards.model].device


def model_gpu(wildcards):
    """The `gpu` resource of a job that loads the model (circuitlab.stages.MODEL_RULES): 1 where
    the model entry's device is a GPU, else 0. The profile's `resources: gpu=N` then runs at
    most N such jobs at once on a GPU host, and CPU runs keep every core busy."""
    return int(uses_gpu(MODELS[wildcards.model].device))


def final_outputs():
    """Every output of every job: a run ends with a complete data/ (an intermediate deleted by
    hand is rebuilt too, not only when something downstream has to run)."""
    return [f for job in JOBS for f in job_files(job)]
