"""Gemma family — Llama's layout with RMSNorm scaled by (1 + w), a GeGLU MLP (the activation is
read from the config) and embeddings scaled by sqrt(d_model).

Gemma 2 and 3 keep Gemma's module names and add norms on the attention and MLP *outputs*
(`post_attention_layernorm` then normalises the attention output, and the MLP input norm is
`pre_feedforward_layernorm`), final-logit soft-capping, and (Gemma 3) per-head q/k norms.
Only the text-only `*ForCausalLM` classes are covered; Gemma 3's multimodal
`Gemma3ForConditionalGeneration` nests the decoder differently and is not registered.
"""

from __future__ import annotations

from dataclasses import replace

from circuitlab.models.adapters.base import register
from circuitlab.models.adapters.llama import LLAMA

GEMMA = register(
    replace(LLAMA, family="gemma", norm="rmsnorm_plus_one", embed_scale="sqrt_d_model"),
    architectures=["GemmaForCausalLM"],
)

GEMMA2 = register(
    replace(
        GEMMA,
        family="gemma2",
        ln_attn_post="post_attention_layernorm",
        ln_mlp="pre_feedforward_layernorm",
        ln_mlp_post="post_feedforward_layernorm",
        cfg_act="hidden_activation",
        cfg_logit_softcap="final_logit_softcapping",
        cfg_attn_logit_softcap="attn_logit_softcapping",
    ),
    architectures=["Gemma2ForCausalLM"],
)

GEMMA3 = register(
    replace(
        GEMMA2,
        family="gemma3",
        q_norm="self_attn.q_norm",
        k_norm="self_attn.k_norm",
    ),
    architectures=["Gemma3ForCausalLM"],
)
