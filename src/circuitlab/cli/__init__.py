"""`circuitlab <command> …` — the only way a stage runs (Snakemake rules call these commands).

One module per rule file (`datasets`, `models`, `lrp`, `acdc`, `steering`, `compare`, `report`,
`robustness`)
plus `tools` (commands around the pipeline); `app` holds what they share and the entry point.
Each command parses and checks its options, calls the stage's pure function, writes the
artifacts all-or-nothing and reports every number once through `circuitlab.tracking`. Errors
the user can fix (`CircuitlabError`) print one clear message and exit with code 2.
"""

from circuitlab.cli.app import app, main

# Importing the command modules registers their commands on `app`.
from circuitlab.cli import acdc, compare, datasets, lrp, models, report, robustness, steering, tools  # isort: skip

__all__ = [
    "acdc",
    "app",
    "compare",
    "datasets",
    "lrp",
    "main",
    "models",
    "report",
    "robustness",
    "steering",
    "tools",
]
