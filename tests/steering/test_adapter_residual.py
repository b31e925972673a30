"""`Adapter.edit_residual` for every registered family: it reads the decoder layer's output,
an edit reaches the logits, and the hooks are gone afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from circuitlab.errors import ModelError
from reference.steering import hf_layers
from tiny_models import CASES, build_tiny


@pytest.mark.parametrize("arch", sorted(CASES))
def test_edit_residual(arch: str, tmp_path: Path) -> None:
    lm = build_tiny(arch, tmp_path)
    ids = torch.tensor([[3, 7, 11, 5, 2, 9]])
    model, ad = lm.model, lm.adapter
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    # HF installs (and keeps) output-capturing hooks of its own on first use
    n_hooks = sum(len(m._forward_hooks) for m in model.modules())
    seen: dict[int, Tensor] = {}

    def keep(layer: int, hs: Tensor) -> Tensor:
        seen[layer] = hs.detach().clone()
        return hs

    with torch.no_grad(), ad.edit_residual(model, keep):
        same = model(ids).logits
    assert torch.equal(same, out.logits)
    # hidden_states[l + 1] is layer l's output (the last one is after the final norm in HF)
    assert torch.allclose(seen[0], out.hidden_states[1], atol=1e-6)
    # manual reference: a plain forward hook on HF's own decoder layer adds the same shift
    shift = torch.randn(lm.dims.d_model, generator=torch.Generator().manual_seed(1))

    def manual(_m: object, _a: object, o: object) -> object:
        if isinstance(o, tuple):
            return (o[0] + shift, *o[1:])
        return o + shift

    handle = hf_layers(lm)[0].register_forward_hook(manual)
    try:
        with torch.no_grad():
            ref = model(ids).logits
    finally:
        handle.remove()
    with torch.no_grad(), ad.edit_residual(model, lambda _l, hs: hs + shift, [0]):
        got = model(ids).logits
    assert torch.equal(got, ref)
    assert not torch.allclose(got, out.logits, atol=1e-4)
    cut = ad.edit_residual(model, lambda _l, hs: hs[..., :3], [1])
    with pytest.raises(ModelError, match="shape"), torch.no_grad(), cut:
        model(ids)
    with pytest.raises(IndexError), ad.edit_residual(model, keep, [5]):
        pass
    assert sum(len(m._forward_hooks) for m in model.modules()) == n_hooks
