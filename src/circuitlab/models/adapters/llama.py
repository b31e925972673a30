"""Llama family: Llama, Mistral, Qwen2 — RMSNorm, gated SiLU MLP, grouped-query attention."""

from __future__ import annotations

from circuitlab.models.adapters.base import Adapter, register

LLAMA = register(
    Adapter(
        family="llama",
        blocks="model.layers",
        embed="model.embed_tokens",
        final_norm="model.norm",
        unembed="lm_head",
        attn="self_attn",
        q="self_attn.q_proj",
        k="self_attn.k_proj",
        v="self_attn.v_proj",
        o="self_attn.o_proj",
        mlp="mlp",
        gate="mlp.gate_proj",
        up="mlp.up_proj",
        down="mlp.down_proj",
        act="mlp.act_fn",
        ln_attn="input_layernorm",
        ln_mlp="post_attention_layernorm",
        norm="rmsnorm",
        mlp_kind="gated",
    ),
    architectures=["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"],
)
