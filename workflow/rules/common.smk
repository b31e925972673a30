# Shared helpers: the validated config, wildcard constraints and path helpers.
import json
import os
import shlex
import time

from circuitlab.config import load_config

CFG = load_config(config)
DATASETS = CFG.dataset_names()
MODELS = CFG.active_models()
TOY_MODELS = [m for m, spec in MODELS.items() if spec.source == "toy"]
HUB_MODELS = [m for m, spec in MODELS.items() if spec.source == "hf"]
# edge circuits need a counterfactual answer: tasks only, not behaviours
EDGE_TASKS = CFG.task_names()
ACDC_METHODS = list(CFG.acdc.methods)

# One W&B group per `snakemake` invocation; every job of this run logs into it.
os.environ.setdefault("CIRCUITLAB_RUN_GROUP", time.strftime("run-%Y%m%d-%H%M%S"))
os.environ.setdefault("CIRCUITLAB_ROOT", os.getcwd())


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


def model_artifact(wildcards):
    """The toy model's save_pretrained directory, or a hub model's reference JSON."""
    m = wildcards.model
    return f"data/models/{m}" if m in TOY_MODELS else f"data/models/{m}.json"


def final_outputs():
    models = list(MODELS)
    return [
        *expand("data/metrics/evaluate_model/{model}/{task}.json", model=models, task=DATASETS),
        *expand("data/circuits/{model}/{task}/lrp.json", model=models, task=DATASETS),
        *expand("data/metrics/lrp_faithfulness/{model}/{task}.json", model=models, task=DATASETS),
        *expand(
            "data/circuits/{model}/{task}/{method}.json",
            model=models,
            task=EDGE_TASKS,
            method=ACDC_METHODS,
        ),
        *expand("data/metrics/acdc_evaluate/{model}/{task}.json", model=models, task=EDGE_TASKS),
        *expand(
            "data/circuits/{model}/{behaviour}/contrastive.json",
            model=models,
            behaviour=CFG.behaviour_names(),
        ),
        *expand("data/steering/{model}/{task}/lrp.json", model=models, task=EDGE_TASKS),
        *expand(
            "data/steering/{model}/{behaviour}/{circuit}.json",
            model=models,
            behaviour=CFG.behaviour_names(),
            circuit=[*CFG.steering.behaviour_methods, "caa"],
        ),
        *expand("data/metrics/steering/{model}/summary.json", model=models),
        *expand(
            "data/compare/{model}/{behaviour}.json",
            model=models,
            behaviour=CFG.behaviour_names(),
        ),
    ]
