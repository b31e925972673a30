# The HTML report: one self-contained page (figures inlined, no external fetch) of every
# model's training, blacklist, circuits, faithfulness, agreement, steering and timing. It reads
# exactly the files of the manifest (circuitlab.report.manifest.manifest_for): the jobs of the
# job graph, their paths taken from the rules that write them, so a renamed output cannot leave
# the report reading a stale path. They are its inputs.

from circuitlab.report.manifest import manifest_for, manifest_paths

MANIFEST = None


def report_manifest():
    """The report's manifest, built once per invocation (after every rule is defined)."""
    global MANIFEST
    if MANIFEST is None:
        MANIFEST = manifest_for(CFG, job_outputs, job_benchmark)
    return MANIFEST


rule report:
    input:
        lambda wildcards: manifest_paths(report_manifest()),
    output:
        page=report(
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
