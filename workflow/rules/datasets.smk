rule datasets:
    output:
        rows="data/datasets/{task}.jsonl",
        **metrics_output("data/metrics/datasets/{task}.json"),
    params:
        code=code("datasets"),
        cfg=lambda w: json_arg(CFG.dataset_params(w.task)),
        seed=CFG.seed,
    log:
        "logs/datasets/{task}.log",
    benchmark:
        "data/benchmarks/datasets/{task}.tsv",
    shell:
        "circuitlab datasets --task {wildcards.task} --params {params.cfg} --seed {params.seed}"
        " --out {output.rows} --metrics {output.metrics} > {log} 2>&1"


rule check_dataset:
    input:
        model=model_artifact,
        rows="data/datasets/{task}.jsonl",
    output:
        rows="data/datasets/{model}/{task}.jsonl",
        **metrics_output("data/metrics/check_dataset/{model}/{task}.json"),
    params:
        model=model_arg,
        code=code("check-dataset"),
        on_invalid=CFG.datasets.on_invalid,
    log:
        "logs/check_dataset/{model}/{task}.log",
    benchmark:
        "data/benchmarks/check_dataset/{model}/{task}.tsv",
    shell:
        "circuitlab check-dataset --model-name {wildcards.model} --task {wildcards.task}"
        " --model {params.model} --data {input.rows}"
        " --on-invalid {params.on_invalid} --out {output.rows} --metrics {output.metrics} > {log} 2>&1"
