# Seed robustness (`make robustness`, which sets `robustness:` in the config): every verdict of
# the report judged on each training seed of a toy model, and how many seeds agree. Runs only
# when the config names a robustness model (circuitlab.jobs adds the job).

#: the rules whose files hold the report's verdicts (circuitlab.robustness.verdicts)
VERDICT_RULES = ("evaluate_model", "lrp_faithfulness", "acdc_evaluate", "steering_summary", "compare")


def robustness_inputs(wildcards):
    files = []
    for model in CFG.seed_models().values():
        for job in model_jobs(CFG, model):
            if job.rule in VERDICT_RULES:
                outs = job_outputs(job)
                files.append(outs["report"] if job.rule == "compare" else outs["metrics"])
    return files


rule robustness:
    input:
        robustness_inputs,
    output:
        **metrics_output("data/metrics/robustness/{model}.json"),
        plot=report(
            "data/plots/robustness/{model}.png",
            caption="../report/robustness.rst",
            category="6. Seed robustness",
            labels={"model": "{model}", "figure": "verdicts over seeds"},
        ),
    params:
        code=code("robustness"),
        min_accuracy=CFG.evaluation.min_accuracy,
        seeds=lambda wildcards: " ".join(
            f"--seed-model {s}={m}" for s, m in CFG.seed_models().items()
        ),
        names=" ".join(f"--name {n}" for n in CFG.dataset_names()),
    log:
        "logs/robustness/{model}.log",
    shell:
        "circuitlab robustness --model-name {wildcards.model} {params.seeds} {params.names}"
        " --min-accuracy {params.min_accuracy} --metrics {output.metrics}"
        " --plot {output.plot} > {log} 2>&1"
