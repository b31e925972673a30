# The HTML report: one self-contained page (figures inlined, no external fetch) of every
# model's training, blacklist, circuits, faithfulness, agreement, steering and timing. It reads
# exactly the files report_manifest() lists (workflow/rules/common.smk); they are its inputs.


rule report:
    input:
        report_inputs,
    output:
        report(
            "data/report/index.html",
            caption="../report/index.rst",
            category="1. Report",
            labels={"page": "circuitlab report"},
        ),
    params:
        code=code("report"),
        manifest=lambda wildcards: json_arg(report_manifest()),
    log:
        "logs/report/index.log",
    shell:
        "circuitlab report --manifest {params.manifest} --out {output} > {log} 2>&1"
