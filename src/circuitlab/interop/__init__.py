"""Interoperability with other interpretability tools (TransformerLens 4 hook names)."""
