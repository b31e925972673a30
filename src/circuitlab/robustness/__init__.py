"""Seed robustness: the report's verdicts judged on several training seeds of a toy model."""
