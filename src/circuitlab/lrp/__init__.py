"""LRP neuron circuits: linearisation rules, batched attribution, selection, artifacts."""
