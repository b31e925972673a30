# LRP neuron circuits: universal-neuron blacklist ─▶ attributions per task (expensive) ─▶
# circuit selected from them (seconds: a new `lrp.selection` reruns only this) ─▶ faithfulness
# report (from the attributions; the selection is not read). Contrastive neurons for the
# behaviours. A circuit is only discovered once the model has passed its accuracy gate on that
# task (evaluate_model; `ancient`: a rewritten gate file does not rerun the circuits).


rule blacklist:
    input:
        model=model_artifact,
    output:
        blacklist="data/blacklists/{model}.json",
        **metrics_output("data/metrics/blacklist/{model}.json"),
    params:
        model=model_arg,
        device=model_device,
        code=code("blacklist"),
        cfg=json_arg(CFG.blacklist),
    resources:
        gpu=model_gpu,
    log:
        "logs/blacklist/{model}.log",
    benchmark:
        "data/benchmarks/blacklist/{model}.tsv",
    shell:
        "circuitlab blacklist --model-name {wildcards.model}"
        " --model {params.model} --device {params.device} --params {params.cfg}"
        " --out {output.blacklist} --metrics {output.metrics} > {log} 2>&1"


rule lrp_attribution:
    input:
        model=model_artifact,
        rows="data/datasets/{model}/{task}.jsonl",
        blacklist="data/blacklists/{model}.json",
        gate=ancient("data/metrics/evaluate_model/{model}/{task}.json"),
    output:
        raw="data/circuits/{model}/{task}/lrp.raw.safetensors",
        **metrics_output("data/metrics/lrp_attribution/{model}/{task}.json"),
    params:
        model=model_arg,
        device=model_device,
        code=code("lrp-attribution"),
        cfg=json_arg(CFG.lrp.model_dump(mode="json", exclude={"selection"})),
    resources:
        gpu=model_gpu,
    log:
        "logs/lrp_attribution/{model}/{task}.log",
    benchmark:
        "data/benchmarks/lrp_attribution/{model}/{task}.tsv",
    shell:
        "circuitlab lrp-attribution --model-name {wildcards.model} --task {wildcards.task}"
        " --model {params.model} --device {params.device} --data {input.rows}"
        " --blacklist {input.blacklist} --params {params.cfg} --raw {output.raw}"
        " --metrics {output.metrics} > {log} 2>&1"


rule lrp_circuit:
    input:
        raw="data/circuits/{model}/{task}/lrp.raw.safetensors",
        attribution="data/metrics/lrp_attribution/{model}/{task}.json",
    output:
        circuit="data/circuits/{model}/{task}/lrp.json",
        **metrics_output("data/metrics/lrp_circuit/{model}/{task}.json"),
        plot=report(
            "data/plots/lrp_circuit/{model}/{task}.png",
            caption="../report/lrp_circuit.rst",
            category="2. LRP circuits",
            subcategory="{model}",
            labels={"task": "{task}", "figure": "neurons per layer"},
        ),
    params:
        code=code("lrp-circuit"),
        cfg=json_arg(CFG.lrp),
    log:
        "logs/lrp_circuit/{model}/{task}.log",
    benchmark:
        "data/benchmarks/lrp_circuit/{model}/{task}.tsv",
    shell:
        "circuitlab lrp-circuit --model-name {wildcards.model} --task {wildcards.task}"
        " --raw {input.raw} --attribution {input.attribution}"
        " --params {params.cfg} --out {output.circuit} --metrics {output.metrics}"
        " --plot {output.plot} > {log} 2>&1"


rule lrp_faithfulness:
    input:
        model=model_artifact,
        rows="data/datasets/{model}/{task}.jsonl",
        raw="data/circuits/{model}/{task}/lrp.raw.safetensors",
    output:
        **metrics_output("data/metrics/lrp_faithfulness/{model}/{task}.json"),
        plot=report(
            "data/plots/lrp_faithfulness/{model}/{task}.png",
            caption="../report/lrp_faithfulness.rst",
            category="2. LRP circuits",
            subcategory="{model}",
            labels={"task": "{task}", "figure": "faithfulness"},
        ),
    params:
        model=model_arg,
        device=model_device,
        code=code("lrp-faithfulness"),
        # the attribution options only: faithfulness ranks neurons by mean attribution itself
        cfg=json_arg(CFG.lrp.model_dump(mode="json", exclude={"selection"})),
        faithfulness=json_arg(CFG.faithfulness),
        seed=CFG.seed,
    resources:
        gpu=model_gpu,
    log:
        "logs/lrp_faithfulness/{model}/{task}.log",
    benchmark:
        "data/benchmarks/lrp_faithfulness/{model}/{task}.tsv",
    shell:
        "circuitlab lrp-faithfulness --model-name {wildcards.model} --task {wildcards.task}"
        " --model {params.model} --device {params.device} --data {input.rows} --raw {input.raw}"
        " --params {params.cfg} --faithfulness {params.faithfulness} --seed {params.seed}"
        " --metrics {output.metrics} --plot {output.plot} > {log} 2>&1"


rule contrastive_circuit:
    input:
        model=model_artifact,
        rows="data/datasets/{model}/{behaviour}.jsonl",
        gate=ancient("data/metrics/evaluate_model/{model}/{behaviour}.json"),
    output:
        circuit="data/circuits/{model}/{behaviour}/contrastive.json",
        **metrics_output("data/metrics/contrastive_circuit/{model}/{behaviour}.json"),
    params:
        model=model_arg,
        device=model_device,
        code=code("contrastive-circuit"),
        top_k=CFG.contrastive.top_k,
        skip=",".join(str(layer) for layer in CFG.contrastive.skip_layers),
    resources:
        gpu=model_gpu,
    log:
        "logs/contrastive_circuit/{model}/{behaviour}.log",
    benchmark:
        "data/benchmarks/contrastive_circuit/{model}/{behaviour}.tsv",
    shell:
        "circuitlab contrastive-circuit --model-name {wildcards.model} --task {wildcards.behaviour}"
        " --model {params.model} --device {params.device} --data {input.rows}"
        " --top-k {params.top_k} --skip-layers '{params.skip}' --out {output.circuit}"
        " --metrics {output.metrics} > {log} 2>&1"
