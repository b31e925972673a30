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


# The run's complete record (circuitlab.tracking.record): one W&B run (job type `record`) with
# every metrics file of the job graph, the resolved config, the commit, the md5 of every file
# it summarises and the report page; the same metrics in data/report/record.json. The last job
# of every run that changed a result, so each such invocation has one complete record.
def record_metrics():
    return [job_outputs(job)["metrics"] for job in JOBS if "metrics" in job_outputs(job)]


rule record:
    input:
        metrics=lambda wildcards: record_metrics(),
        page=rules.report.output.page,
    output:
        record="data/report/record.json",
    params:
        code=code("record"),
        metrics=lambda wildcards: json_arg(record_metrics()),
    log:
        "logs/report/record.log",
    shell:
        # the params file this run wrote (Snakefile): the record's W&B config, not a param, so
        # a config edit that changes no result makes no new record
        "circuitlab record --metrics {params.metrics} --page {input.page} "
        "--config config/resolved.yaml --out {output.record} > {log} 2>&1"
