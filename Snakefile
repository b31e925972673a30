# circuitlab pipeline: datasets ─▶ model ─▶ checked datasets ─▶ model evaluation ─▶ blacklist
# ─▶ LRP circuits ─▶ faithfulness; ACDC edge circuits ─▶ edge-circuit evaluation; steering and
# CAA ─▶ CAA vs circuit ─▶ report.
# Run `make reproduce` (or `snakemake --cores all --workflow-profile workflow/profiles/default`).
# Rules are thin: paths, params from the config, a log, and one call of the `circuitlab` CLI.

from snakemake.utils import validate


configfile: "config/config.yaml"


# `snakemake --report report.html`: this text, the captions in workflow/report/ and the
# figures marked report(...) in the rules (the pipeline's own page is data/report/index.html).
report: "workflow/report/workflow.rst"


# Defaults come from the pydantic model (circuitlab.config), not from the schema.
validate(config, "workflow/schemas/config.schema.yaml", set_default=False)


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/lrp.smk"
include: "workflow/rules/acdc.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
