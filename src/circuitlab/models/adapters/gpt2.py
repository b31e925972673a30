"""GPT-2 — LayerNorm, plain GELU MLP, `Conv1D` projections ([in, out] weights), fused c_attn."""

from __future__ import annotations

from circuitlab.models.adapters.base import Adapter, register

GPT2 = register(
    Adapter(
        family="gpt2",
        blocks="transformer.h",
        embed="transformer.wte",
        pos_embed="transformer.wpe",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        attn="attn",
        qkv="attn.c_attn",
        o="attn.c_proj",
        mlp="mlp",
        up="mlp.c_fc",
        down="mlp.c_proj",
        act="mlp.act",
        ln_attn="ln_1",
        ln_mlp="ln_2",
        norm="layernorm",
        mlp_kind="plain",
        proj_layout="conv1d",
        cfg_n_layers="n_layer",
        cfg_d_model="n_embd",
        cfg_d_mlp="n_inner",
        cfg_d_mlp_factor=4,
        cfg_n_heads="n_head",
        cfg_n_kv_heads=None,
        cfg_head_dim=None,
        cfg_act="activation_function",
        cfg_norm_eps="layer_norm_epsilon",
    ),
    architectures=["GPT2LMHeadModel"],
)
