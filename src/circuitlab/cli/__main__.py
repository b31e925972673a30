"""``python -m circuitlab.cli …``: the same as the ``circuitlab`` command."""

from circuitlab.cli import main

main()
