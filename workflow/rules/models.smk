rule train_toy_model:
    output:
        model=expand("data/models/{{toy}}/{name}", name=TOY_MODEL_FILES),
        **metrics_output("data/metrics/train_toy_model/{toy}.json"),
        plot="data/plots/train_toy_model/{toy}.json",
    params:
        out=lambda w: f"data/models/{w.toy}",
        code=code("train-toy-model"),
        # the entry less `device` (where the stages run it): training is on CPU either way
        cfg=lambda w: json_arg(MODELS[w.toy].model_dump(mode="json", exclude={"device"})),
        tasks=json_arg(CFG.corpus_params()),
        seed=CFG.seed,
    # every core up to 8 (Snakemake gives at most --cores): nothing else can run before the
    # model exists, and the weights are the same for any count (BENCHMARKS.md, issue 29)
    threads: 8
    log:
        "logs/train_toy_model/{toy}.log",
    benchmark:
        "data/benchmarks/train_toy_model/{toy}.tsv",
    shell:
        "circuitlab train-toy-model --name {wildcards.toy} --params {params.cfg} --tasks {params.tasks}"
        " --seed {params.seed} --out {params.out} --metrics {output.metrics}"
        " --plot {output.plot} --threads {threads} > {log} 2>&1"


rule model_ref:
    output:
        ref="data/models/{hub}.json",
    params:
        code=code("model-ref"),
        cfg=lambda w: json_arg(MODELS[w.hub]),
    log:
        "logs/model_ref/{hub}.log",
    benchmark:
        "data/benchmarks/model_ref/{hub}.tsv",
    shell:
        "circuitlab model-ref --params {params.cfg} --out {output} > {log} 2>&1"


# A random model of a published shape (circuitlab.models.random): the saved directory and the
# reference the stages load it through, as a hub model's. Builds on the CPU whatever the entry's
# device (its weights are the same either way).
rule random_model:
    input:
        shape=lambda w: f"config/shapes/{MODELS[w.random].shape}.json",
    output:
        model=expand("data/models/{{random}}/{name}", name=TOY_MODEL_FILES),
        ref="data/models/{random}.json",
    params:
        out=lambda w: f"data/models/{w.random}",
        code=code("random-model"),
        cfg=lambda w: json_arg(MODELS[w.random]),
        tasks=json_arg(CFG.corpus_params()),
    log:
        "logs/random_model/{random}.log",
    benchmark:
        "data/benchmarks/random_model/{random}.tsv",
    shell:
        "circuitlab random-model --params {params.cfg} --tasks {params.tasks}"
        " --shape {input.shape} --out {params.out} --ref {output.ref} > {log} 2>&1"


rule evaluate_model:
    input:
        model=model_artifact,
        rows="data/datasets/{model}/{task}.jsonl",
    output:
        **metrics_output("data/metrics/evaluate_model/{model}/{task}.json"),
    params:
        model=model_arg,
        device=model_device,
        code=code("evaluate-model"),
        batch_size=CFG.evaluation.batch_size,
        # the robustness run's extra seeds are judged, not stopped, by the gate (Config.accuracy_gate)
        min_accuracy=lambda wildcards: CFG.accuracy_gate(wildcards.model),
    resources:
        gpu=model_gpu,
    log:
        "logs/evaluate_model/{model}/{task}.log",
    benchmark:
        "data/benchmarks/evaluate_model/{model}/{task}.tsv",
    shell:
        "circuitlab evaluate-model --model-name {wildcards.model} --task {wildcards.task}"
        " --model {params.model} --device {params.device} --data {input.rows}"
        " --batch-size {params.batch_size} --min-accuracy {params.min_accuracy} --out {output.metrics} > {log} 2>&1"
