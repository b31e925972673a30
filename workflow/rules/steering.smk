# Steering evaluation on the test split: the circuits (train split) steered neuron by neuron,
# per {model} × {task} (tasks: the LRP circuit; behaviours: steering.behaviour_methods), and
# CAA per {model} × {behaviour}: vectors from the train split with layer and multiplier chosen
# on a validation part of it, then their dose-response on the test split. Every result sits
# beside random controls; the other tasks' test sets give the leakage row.

STEERING_CIRCUITS = ["lrp", "contrastive"]


rule steering:
    input:
        model=model_artifact,
        rows="data/datasets/{model}/{task}.jsonl",
        circuit="data/circuits/{model}/{task}/{circuit}.json",
        others=expand("data/datasets/{{model}}/{other}.jsonl", other=EDGE_TASKS),
    output:
        report="data/steering/{model}/{task}/{circuit}.json",
        **metrics_output("data/metrics/steering/{model}/{task}/{circuit}.json"),
        plot=report(
            "data/plots/steering/{model}/{task}/{circuit}.png",
            caption="../report/steering.rst",
            category="5. Steering",
            subcategory="{model}",
            labels={"name": "{task}", "method": "{circuit}"},
        ),
    wildcard_constraints:
        circuit=alternatives(STEERING_CIRCUITS),
    params:
        model=model_arg,
        device=model_device,
        code=code("steering"),
        cfg=json_arg(CFG.steering),
        others=lambda wildcards, input: " ".join(f"--others {p}" for p in input.others),
    threads: 1
    resources:
        gpu=model_gpu,
    log:
        "logs/steering/{model}/{task}/{circuit}.log",
    benchmark:
        "data/benchmarks/steering/{model}/{task}/{circuit}.tsv",
    shell:
        "circuitlab steering --model-name {wildcards.model} --task {wildcards.task}"
        " --model {params.model} --device {params.device} --data {input.rows} --circuit {input.circuit}"
        " {params.others} --params {params.cfg} --out {output.report}"
        " --metrics {output.metrics} --plot {output.plot} --threads {threads} > {log} 2>&1"


rule caa:
    input:
        model=model_artifact,
        rows="data/datasets/{model}/{behaviour}.jsonl",
        gate=ancient("data/metrics/evaluate_model/{model}/{behaviour}.json"),
    output:
        vectors="data/caa/{model}/{behaviour}.safetensors",
        **metrics_output("data/metrics/caa/{model}/{behaviour}.json"),
    params:
        model=model_arg,
        device=model_device,
        code=code("caa"),
        cfg=json_arg(CFG.caa),
        # only what the selection reads, so a change of the steering sweep does not rebuild CAA
        # what the selection reads of the steering section: the neutral prompts and the budget
        steering=json_arg(
            {
                "neutral_prompts": CFG.steering.neutral_prompts,
                "budget": CFG.steering.budget.model_dump(mode="json"),
            }
        ),
        seed=CFG.seed,
    threads: 1
    resources:
        gpu=model_gpu,
    log:
        "logs/caa/{model}/{behaviour}.log",
    benchmark:
        "data/benchmarks/caa/{model}/{behaviour}.tsv",
    shell:
        "circuitlab caa --model-name {wildcards.model} --task {wildcards.behaviour}"
        " --model {params.model} --device {params.device} --data {input.rows} --params {params.cfg}"
        " --steering {params.steering} --seed {params.seed} --out {output.vectors}"
        " --metrics {output.metrics} --threads {threads} > {log} 2>&1"


rule caa_steering:
    input:
        model=model_artifact,
        rows="data/datasets/{model}/{behaviour}.jsonl",
        vectors="data/caa/{model}/{behaviour}.safetensors",
        others=expand("data/datasets/{{model}}/{other}.jsonl", other=EDGE_TASKS),
    output:
        report="data/steering/{model}/{behaviour}/caa.json",
        **metrics_output("data/metrics/steering/{model}/{behaviour}/caa.json"),
        plot=report(
            "data/plots/steering/{model}/{behaviour}/caa.png",
            caption="../report/caa_steering.rst",
            category="5. Steering",
            subcategory="{model}",
            labels={"name": "{behaviour}", "method": "caa"},
        ),
    params:
        model=model_arg,
        device=model_device,
        code=code("caa-steering"),
        cfg=json_arg(CFG.caa),
        steering=json_arg(CFG.steering),
        others=lambda wildcards, input: " ".join(f"--others {p}" for p in input.others),
    threads: 1
    resources:
        gpu=model_gpu,
    log:
        "logs/caa_steering/{model}/{behaviour}.log",
    benchmark:
        "data/benchmarks/caa_steering/{model}/{behaviour}.tsv",
    shell:
        "circuitlab caa-steering --model-name {wildcards.model} --task {wildcards.behaviour}"
        " --model {params.model} --device {params.device} --data {input.rows}"
        " --vectors {input.vectors} {params.others} --params {params.cfg}"
        " --steering {params.steering} --out {output.report} --metrics {output.metrics}"
        " --plot {output.plot} --threads {threads} > {log} 2>&1"


def steering_reports(wildcards):
    """The reports of the model's steering jobs (circuitlab.jobs.steering_jobs)."""
    return [job_outputs(job)["report"] for job in steering_jobs(CFG, wildcards.model)]


rule steering_summary:
    input:
        reports=steering_reports,
    output:
        **metrics_output("data/metrics/steering/{model}/summary.json"),
        plot=report(
            "data/plots/steering/{model}/leakage.png",
            caption="../report/steering_leakage.rst",
            category="5. Steering",
            subcategory="{model}",
            labels={"name": "all", "method": "leakage matrix"},
        ),
    params:
        code=code("steering-summary"),
        reports=lambda wildcards, input: " ".join(f"--reports {p}" for p in input.reports),
    log:
        "logs/steering_summary/{model}.log",
    shell:
        "circuitlab steering-summary --model-name {wildcards.model}"
        " {params.reports} --metrics {output.metrics}"
        " --plot {output.plot} > {log} 2>&1"
