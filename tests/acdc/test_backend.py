"""The one interface of the two patch layers (`circuitlab.acdc.backend`), what they share about
masks (`circuitlab.acdc.batch`), the source buffer of a forward, and the patch layer on a
bf16 model: masks and edge gradients stay float32, results agree with float32."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from acdc_support import pair_rows

from circuitlab.acdc import (
    PatchBackend,
    SweepConfig,
    evaluate_masks,
    fast_acdc,
    forward,
    near_tau,
    patchable,
    prepare_rows,
)
from circuitlab.acdc.attention import append_sources
from circuitlab.acdc.batch import check_mask
from circuitlab.acdc.hooked import hooked
from circuitlab.acdc.incremental import incremental_checks
from circuitlab.acdc.methods._ranking import AttributionSettings, attribution_run
from circuitlab.acdc.settings import AcdcConfig
from circuitlab.errors import ConfigError, ModelError
from circuitlab.models import LoadedModel, load_model
from circuitlab.models.spec import ModelSpec
from tiny_models import build_tiny

LLAMA = "LlamaForCausalLM"


def _reload(lm: LoadedModel, **spec: str) -> LoadedModel:
    return load_model(ModelSpec(id=lm.spec.id, device="cpu", **spec))


def test_both_backends_state_what_they_can_do(tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny(LLAMA)
    native, hooks = patchable(lm), patchable(_reload(lm, backend="transformer_lens"))
    assert isinstance(native, PatchBackend) and isinstance(hooks, PatchBackend)
    assert native.supports_dest_gradients and native.supports_resume
    assert not hooks.supports_dest_gradients and not hooks.supports_resume
    assert native.graph.edges == hooks.graph.edges
    ctx = prepare_rows(hooks, pair_rows(3), "resample")
    assert incremental_checks(ctx) is None
    assert incremental_checks(prepare_rows(native, pair_rows(3), "resample")) is not None
    with pytest.raises(ConfigError, match="gradients at each destination's input"):
        attribution_run("inputs")(ctx, AcdcConfig(), AttributionSettings())
    with pytest.raises(ConfigError, match="native patch layer"):
        hooks.forward(ctx, None, heads=torch.zeros(1))


def test_batch_imports_no_patch_layer() -> None:
    """What both patch layers share imports neither (the old batch → weights → hooked → batch
    cycle)."""
    code = (
        "import sys, circuitlab.acdc.batch; "
        "print(sorted(m for m in sys.modules if m.startswith('circuitlab.acdc.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = ast.literal_eval(out.stdout)
    assert "circuitlab.acdc.batch" in loaded
    for layer in ("weights", "patch", "hooked", "backend", "attention"):
        assert f"circuitlab.acdc.{layer}" not in loaded


def test_a_sharded_model_is_refused_by_both_layers_with_one_message(tmp_path: Path) -> None:
    lm = build_tiny(LLAMA, tmp_path)
    lm.model.lm_head.to("meta")  # this copy's head on another device, as device_map does
    with pytest.raises(ModelError, match=r"ACDC patch layer .* needs the model on a single device"):
        patchable(lm)
    with pytest.raises(ModelError, match=r"TransformerLens hooks .* on a single device.*drop"):
        hooked(lm)


def test_edge_mask_is_read_once_on_the_host(tiny: Callable[[str], LoadedModel]) -> None:
    graph = patchable(tiny(LLAMA)).graph
    attn0, mlp0, end = graph.attn_block(0), graph.mlp_block(0), graph.end_block
    mask = torch.zeros(2, graph.n_edges, dtype=torch.bfloat16)
    mask[:, mlp0.offset : mlp0.stop] = 1.0  # every edge into MLP 0: the majority, no rows
    mask[1, end.offset + 2] = 1.0  # one edge into Resid End, in set 1 only
    checked = check_mask(mask, graph, torch.device("cpu"), torch.bfloat16)
    assert checked is not None and checked.values.dtype == torch.float32  # not bf16
    assert checked.block(attn0) is None
    assert checked.block(mlp0) is not None and checked.block(end) is not None
    assert checked.patches_in(0, mlp0.stop) and not checked.patches_in(0, mlp0.offset)
    full = checked.split(mlp0)
    assert full.majority is not None and full.majority.tolist() == [1.0] * mlp0.n_sources
    assert full.rows == [] and full.cols.tolist() == []
    one = checked.split(end)
    assert one.majority is None and one.rows == [0] and one.cols.tolist() == [2]
    assert not one.all_cols
    with pytest.raises(ConfigError, match="n_edges"):
        check_mask(torch.zeros(3), graph, torch.device("cpu"), torch.float32)


def test_the_source_buffer_is_written_once_and_never_under_a_view() -> None:
    torch.manual_seed(0)
    first, a, b = torch.randn(1, 2, 1, 3, 4), torch.randn(2, 2, 2, 3, 4), torch.randn(1, 2, 1, 3, 4)
    cache = first.clone()
    src = append_sources(cache, a, capacity=6)  # broadcasts the edge-set axis
    torch.testing.assert_close(src, torch.cat([cache.expand(2, -1, -1, -1, -1), a], dim=2))
    grown = append_sources(src, b, capacity=6)
    assert grown.data_ptr() == src.data_ptr()  # written into the same buffer, nothing copied
    torch.testing.assert_close(grown, torch.cat([src, b.expand(2, -1, -1, -1, -1)], dim=2))
    again = append_sources(src, -b, capacity=6)  # a second branch of the same prefix
    assert again.data_ptr() != src.data_ptr()  # gets its own buffer
    torch.testing.assert_close(grown[:, :, 3:], b.expand(2, -1, -1, -1, -1))  # left alone
    torch.testing.assert_close(cache, first)
    with torch.enable_grad():  # autograd: concatenated, gradients flow
        leaf = a.clone().requires_grad_(True)
        append_sources(cache, leaf, capacity=6).sum().backward()
        assert leaf.grad is not None and bool((leaf.grad == 1).all())


def test_bf16_keeps_masks_and_edge_gradients_in_float32(
    tiny: Callable[[str], LoadedModel],
) -> None:
    """On a bf16 model the patch layer agrees with float32 within the model's resolution:
    logit differences within 2 · eps(bf16) · max |logit| (two rounded logits), KL within 5e-5
    (measured ≤ 2.2e-5 on the tiny models), edge gradients within 3 % (relative L2; measured
    0.7–1.3 %), and they are float32."""
    results = {}
    for dtype in ("float32", "bfloat16"):
        lm = _reload(tiny(LLAMA), dtype=dtype)
        pm = patchable(lm)
        assert pm.dtype == getattr(torch, dtype)
        ctx = prepare_rows(pm, pair_rows(8), "resample")
        masks = torch.rand(6, pm.graph.n_edges, generator=torch.Generator().manual_seed(0)) > 0.5
        masks = masks.float()
        with torch.no_grad():
            kl, ld = (evaluate_masks(ctx, masks, m) for m in ("kl", "logit_diff"))
        edge = masks[0].clone().requires_grad_(True)
        forward(ctx, edge).float().sum().backward()
        assert edge.grad is not None and edge.grad.dtype == torch.float32
        results[dtype] = (kl, ld, edge.grad, ctx.clean_logits.float().abs().max())
    (kl32, ld32, g32, top), (kl16, ld16, g16, _) = results["float32"], results["bfloat16"]
    assert kl16.dtype == ld16.dtype == torch.float32
    torch.testing.assert_close(kl16, kl32, rtol=0, atol=5e-5)
    eps16 = torch.finfo(torch.bfloat16).eps
    torch.testing.assert_close(ld16, ld32, rtol=0, atol=float(2 * eps16 * top))
    assert float((g16 - g32).norm() / g32.norm()) < 0.03
    assert not torch.equal(kl16, kl32)  # it really ran in bf16


@pytest.mark.parametrize("arch", [LLAMA, "Qwen2ForCausalLM"])
def test_bf16_acdc_decides_as_float32_but_near_tau(
    arch: str, tiny: Callable[[str], LoadedModel]
) -> None:
    """ACDC on a bf16 model: the first decision that differs from float32's (if any) is one
    the bf16 trace flags near τ, and the tolerance leaves most decisions clear of τ."""
    traces = {}
    for dtype in ("float32", "bfloat16"):
        ctx = prepare_rows(patchable(_reload(tiny(arch), dtype=dtype)), pair_rows(8), "resample")
        traces[dtype] = fast_acdc(ctx, SweepConfig(tao_bases=(1,), tao_exps=(-4,))).per_tau[0]
    t32, t16 = traces["float32"].trace, traces["bfloat16"].trace
    assert t32 is not None and t16 is not None
    first = next((i for i in range(len(t32)) if t32.removed[i] != t16.removed[i]), None)
    assert first is None or t16.near_tau[first]
    assert t16.n_near_tau < len(t16) // 4


def test_near_tau_widens_with_the_dtype_resolution() -> None:
    eps16 = torch.finfo(torch.bfloat16).eps
    assert near_tau(0.0100001, 0.0, 0.01) and not near_tau(0.01001, 0.0, 0.01)
    assert near_tau(0.01001, 0.0, 0.01, eps16) and not near_tau(0.0103, 0.0, 0.01, eps16)
    assert near_tau(0.0100001, 0.0, 0.01, torch.finfo(torch.float32).eps)  # the default
