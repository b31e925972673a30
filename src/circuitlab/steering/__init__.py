"""Steering: neuron steering through the adapter, CAA control vectors, and their evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circuitlab.lazy import exports

if TYPE_CHECKING:
    from circuitlab.steering.caa import (
        VECTOR_KEYS,
        activation_weighted_vectors,
        add_vector,
        check_layer,
        control_vectors,
        last_token_activations,
        load_vectors,
        neuron_differences,
        save_vectors,
    )
    from circuitlab.steering.neurons import (
        NeuronSet,
        SteeringError,
        check_multiplier,
        encode_prompts,
        generate,
        last_logits,
        next_token_probs,
        parse_multipliers,
        prompt_logits,
        steer_neurons,
        token_ids,
        top_predictions,
        using_last,
    )

# attribute -> defining module, imported on first use (circuitlab.lazy)
_WHERE = {
    "VECTOR_KEYS": "circuitlab.steering.caa",
    "activation_weighted_vectors": "circuitlab.steering.caa",
    "add_vector": "circuitlab.steering.caa",
    "check_layer": "circuitlab.steering.caa",
    "control_vectors": "circuitlab.steering.caa",
    "last_token_activations": "circuitlab.steering.caa",
    "load_vectors": "circuitlab.steering.caa",
    "neuron_differences": "circuitlab.steering.caa",
    "save_vectors": "circuitlab.steering.caa",
    "NeuronSet": "circuitlab.steering.neurons",
    "SteeringError": "circuitlab.steering.neurons",
    "check_multiplier": "circuitlab.steering.neurons",
    "encode_prompts": "circuitlab.prompts",
    "generate": "circuitlab.steering.neurons",
    "last_logits": "circuitlab.steering.neurons",
    "next_token_probs": "circuitlab.steering.neurons",
    "parse_multipliers": "circuitlab.steering.neurons",
    "prompt_logits": "circuitlab.steering.neurons",
    "steer_neurons": "circuitlab.steering.neurons",
    "token_ids": "circuitlab.steering.neurons",
    "top_predictions": "circuitlab.steering.neurons",
    "using_last": "circuitlab.steering.neurons",
}
__all__ = [
    "VECTOR_KEYS",
    "NeuronSet",
    "SteeringError",
    "activation_weighted_vectors",
    "add_vector",
    "check_layer",
    "check_multiplier",
    "control_vectors",
    "encode_prompts",
    "generate",
    "last_logits",
    "last_token_activations",
    "load_vectors",
    "neuron_differences",
    "next_token_probs",
    "parse_multipliers",
    "prompt_logits",
    "save_vectors",
    "steer_neurons",
    "token_ids",
    "top_predictions",
    "using_last",
]
__getattr__, __dir__ = exports(__name__, _WHERE)
