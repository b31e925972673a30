"""Slow, literal implementations the fast code is tested against, one module per stage.

Each is written from the seed semantics (`../shared/seeds/`) as plainly as possible: one prompt,
one edge, one neuron at a time, with PyTorch or TransformerLens hooks, never with the code under
test's helpers. A test that compares the package with one of these fails on a wrong
implementation, not only on a crash.
"""
