# CAA vs circuit, per behaviour: overlap of the CAA vectors' neurons with the circuits (with
# permutation nulls), sparse decomposition of the MLP-output difference, and circuit steering
# vs CAA vs the circuit-rebuilt vector per unit of side effect (Pareto plot).


rule compare:
    input:
        model=model_artifact,
        rows="data/datasets/{model}/{behaviour}.jsonl",
        circuits=expand(
            "data/circuits/{{model}}/{{behaviour}}/{circuit}.json", circuit=CFG.compare.circuits
        ),
        vectors="data/caa/{model}/{behaviour}.safetensors",
    output:
        report="data/compare/{model}/{behaviour}.json",
        **metrics_output("data/metrics/compare/{model}/{behaviour}.json"),
        pareto=report(
            "data/plots/compare/{model}/{behaviour}_pareto.png",
            caption="../report/compare_pareto.rst",
            category="4. CAA vs circuit",
            subcategory="{model}",
            labels={"behaviour": "{behaviour}", "figure": "effect vs side effect"},
        ),
        overlap=report(
            "data/plots/compare/{model}/{behaviour}_overlap.png",
            caption="../report/compare_overlap.rst",
            category="4. CAA vs circuit",
            subcategory="{model}",
            labels={"behaviour": "{behaviour}", "figure": "neuron overlap"},
        ),
    params:
        model=model_arg,
        device=model_device,
        code=code("compare"),
        cfg=json_arg(CFG.compare),
        # what compare reads of the steering section: how a circuit is steered, the budget
        steering=json_arg(
            CFG.steering.model_dump(
                mode="json", include={"suppress", "amplify", "support", "budget"}
            )
        ),
        circuits=lambda wildcards, input: " ".join(f"--circuits {c}" for c in input.circuits),
    resources:
        gpu=model_gpu,
    log:
        "logs/compare/{model}/{behaviour}.log",
    benchmark:
        "data/benchmarks/compare/{model}/{behaviour}.tsv",
    shell:
        "circuitlab compare --model-name {wildcards.model} --task {wildcards.behaviour}"
        " --model {params.model} --device {params.device} --data {input.rows} {params.circuits}"
        " --vectors {input.vectors} --params {params.cfg} --steering {params.steering}"
        " --out {output.report}"
        " --metrics {output.metrics} --pareto-plot {output.pareto}"
        " --overlap-plot {output.overlap} > {log} 2>&1"
