"""One file per edge method, each with a module-level ``METHOD = EdgeMethod(...)``
(`circuitlab.acdc.registry`). Files starting with ``_`` are helpers, not methods."""
