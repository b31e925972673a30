# Edge circuits: one circuit per {model} × {task} × {method} (ACDC variants, head pruning, EAP)
# on the train split, then one evaluation per {model} × {task} that compares every method's
# circuits on the test split. Tasks only (behaviours have no counterfactual answer). A circuit
# is only discovered once the model has passed its accuracy gate on that task (evaluate_model;
# `ancient`: a gate file rewritten with a new threshold or batch size reruns nothing here).
# Each job's params are the `acdc` keys its method reads (Config.acdc.discovery_params), so
# e.g. `acdc.eap_sizes` reruns only the `eap` jobs and `acdc.n_eval_prompts` no discovery.


rule acdc_circuit:
    input:
        model=model_artifact,
        rows="data/datasets/{model}/{task}.jsonl",
        gate=ancient("data/metrics/evaluate_model/{model}/{task}.json"),
    output:
        circuit="data/circuits/{model}/{task}/{method}.json",
        **metrics_output("data/metrics/acdc_circuit/{model}/{task}/{method}.json"),
    wildcard_constraints:
        task=alternatives(EDGE_TASKS),
        method=alternatives(ACDC_METHODS),
    params:
        model=model_arg,
        device=model_device,
        code=lambda w: code("acdc-circuit", w.method),
        cfg=lambda w: json_arg(CFG.acdc.discovery_params(w.method)),
    resources:
        gpu=model_gpu,
    log:
        "logs/acdc_circuit/{model}/{task}/{method}.log",
    benchmark:
        "data/benchmarks/acdc_circuit/{model}/{task}/{method}.tsv",
    shell:
        "circuitlab acdc-circuit --model-name {wildcards.model} --task {wildcards.task}"
        " --method {wildcards.method} --model {params.model} --device {params.device}"
        " --data {input.rows} --params {params.cfg} --out {output.circuit}"
        " --metrics {output.metrics} > {log} 2>&1"


rule acdc_evaluate:
    input:
        model=model_artifact,
        rows="data/datasets/{model}/{task}.jsonl",
        circuits=expand("data/circuits/{{model}}/{{task}}/{method}.json", method=ACDC_METHODS),
    output:
        **metrics_output("data/metrics/acdc_evaluate/{model}/{task}.json"),
        # the reference circuit (acdc.reference_tau) of each method: drawing is cheap, so it
        # sits here and a new reference_tau reruns no discovery
        dots=expand("data/circuits/{{model}}/{{task}}/{method}.dot", method=ACDC_METHODS),
        plot=report(
            "data/plots/acdc_evaluate/{model}/{task}.png",
            caption="../report/acdc_evaluate.rst",
            category="3. ACDC edge circuits",
            subcategory="{model}",
            labels={"task": "{task}", "figure": "faithfulness vs size"},
        ),
    wildcard_constraints:
        task=alternatives(EDGE_TASKS),
    params:
        model=model_arg,
        device=model_device,
        code=code("acdc-evaluate"),
        cfg=json_arg(CFG.acdc.evaluation_params()),
        circuits=lambda wildcards, input: " ".join(f"--circuits {p}" for p in input.circuits),
        dots=lambda wildcards, output: " ".join(f"--dots {p}" for p in output.dots),
    resources:
        gpu=model_gpu,
    log:
        "logs/acdc_evaluate/{model}/{task}.log",
    benchmark:
        "data/benchmarks/acdc_evaluate/{model}/{task}.tsv",
    shell:
        "circuitlab acdc-evaluate --model-name {wildcards.model} --task {wildcards.task}"
        " --model {params.model} --device {params.device} --data {input.rows} {params.circuits}"
        " {params.dots} --params {params.cfg} --metrics {output.metrics} --plot {output.plot}"
        " > {log} 2>&1"
