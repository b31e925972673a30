# Shared helpers: the validated config, numerics pins, code fingerprints, wildcard
# constraints and path helpers.
import json
import os
import shlex
import sys
import time
from pathlib import Path

from circuitlab.provenance import ENV_CODE_CACHE, numerics
from circuitlab.provenance.code import CodeIndex, plugins_for

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
# Models loaded with `backend: transformer_lens` (an architecture circuitlab has no adapter for)
# run the hook-only stages; the stages that need an adapter are left out of their targets.
NATIVE_MODELS = [m for m, spec in MODELS.items() if getattr(spec, "backend", "native") == "native"]
BRIDGE_MODELS = [m for m in MODELS if m not in NATIVE_MODELS]
if BRIDGE_MODELS:
    from circuitlab.models.bridge import STAGES as _STAGES

    sys.stderr.write(
        f"circuitlab: {', '.join(BRIDGE_MODELS)} run(s) with backend: transformer_lens: not "
        f"available without circuitlab's adapter: "
        f"{'; '.join(s for s, why in _STAGES.items() if why)} (README, 'Models')\n"
    )


def behaviour_methods(model):
    """The steering methods of a model's behaviours: neuron circuits need the adapter."""
    return [*CFG.steering.behaviour_methods, "caa"] if model in NATIVE_MODELS else ["caa"]


def steering_report_paths(model):
    """The steering reports a model's summary reads (steering_summary's inputs): neuron circuits
    of tasks and behaviours (native backend) and CAA of behaviours."""
    tasks = EDGE_TASKS if model in NATIVE_MODELS else []
    return [
        *(f"data/steering/{model}/{t}/lrp.json" for t in tasks),
        *(
            f"data/steering/{model}/{b}/{k}.json"
            for b in CFG.behaviour_names()
            for k in behaviour_methods(model)
        ),
    ]


# edge circuits need a counterfactual answer: tasks only, not behaviours
EDGE_TASKS = CFG.task_names()
ACDC_METHODS = list(CFG.acdc.methods)

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
    behaviour=alternatives(CFG.behaviour_names()),


def json_arg(value):
    """A config slice as one shell-quoted JSON argument (sorted keys: stable params)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return shlex.quote(json.dumps(value, sort_keys=True, separators=(",", ":")))


# The files a trained toy model's directory holds, declared one by one so that a deleted or
# missing one makes Snakemake retrain (a `directory()` output would hide it).
TOY_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def model_artifact(wildcards):
    """A stage's model input: the toy model's files, or a hub model's reference JSON."""
    m = wildcards.model
    if m in TOY_MODELS:
        return [f"data/models/{m}/{name}" for name in TOY_MODEL_FILES]
    return f"data/models/{m}.json"


def model_arg(wildcards):
    """The `--model` a stage's CLI gets: the toy model's directory or the reference JSON."""
    m = wildcards.model
    return f"data/models/{m}" if m in TOY_MODELS else f"data/models/{m}.json"


def final_outputs():
    models, native = list(MODELS), NATIVE_MODELS
    return [
        *expand("data/metrics/evaluate_model/{model}/{task}.json", model=models, task=DATASETS),
        *expand("data/circuits/{model}/{task}/lrp.json", model=native, task=DATASETS),
        *expand("data/metrics/lrp_faithfulness/{model}/{task}.json", model=native, task=DATASETS),
        *expand(
            "data/circuits/{model}/{task}/{method}.json",
            model=models,
            task=EDGE_TASKS,
            method=ACDC_METHODS,
        ),
        *expand("data/metrics/acdc_evaluate/{model}/{task}.json", model=models, task=EDGE_TASKS),
        *expand(
            "data/circuits/{model}/{behaviour}/contrastive.json",
            model=native,
            behaviour=CFG.behaviour_names(),
        ),
        *expand("data/steering/{model}/{task}/lrp.json", model=native, task=EDGE_TASKS),
        *(
            f"data/steering/{m}/{b}/{k}.json"
            for m in models
            for b in CFG.behaviour_names()
            for k in behaviour_methods(m)
        ),
        *(f"data/metrics/steering/{m}/summary.json" for m in models if steering_report_paths(m)),
        *expand(
            "data/compare/{model}/{behaviour}.json",
            model=native,
            behaviour=CFG.behaviour_names(),
        ),
        "data/report/index.html",
    ]
