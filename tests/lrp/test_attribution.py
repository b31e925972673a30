"""Batched attribution equals the seed-style per-prompt loop; options, errors and artifacts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from circuitlab.errors import ArtifactError, DatasetError, ModelError
from circuitlab.lrp.attribution import (
    AttributionOptions,
    Attributions,
    attribute_batch,
    attribute_rows,
    metric_values,
)
from circuitlab.models import LoadedModel
from circuitlab.prompts import encode_rows
from reference.lrp import reference_attribution
from tiny_models import build_tiny, make_rows


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_tiny("LlamaForCausalLM", tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module", params=["GPT2LMHeadModel", "Gemma2ForCausalLM"])
def other(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_tiny(request.param, tmp_path_factory.mktemp(request.param))


def _as_dicts(attr: Attributions) -> list[dict[tuple[int, int, int], float]]:
    offsets = attr.offsets()
    out = []
    for b in range(attr.scores.shape[0]):
        nz = attr.scores[b].nonzero().tolist()
        out.append({(ly, offsets[p], n): float(attr.scores[b, ly, p, n]) for ly, p, n in nz})
    return out


def _assert_same(fast: Attributions, ref: list[dict], ref_metric: list[float]) -> None:
    got = _as_dicts(fast)
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        keys = set(g) | set(r)
        a = torch.tensor([g.get(k, 0.0) for k in sorted(keys)])
        b = torch.tensor([r.get(k, 0.0) for k in sorted(keys)])
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast.metric, torch.tensor(ref_metric), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", ["full", "half", "cp_attn"])
@pytest.mark.parametrize("lrp", [True, False])
def test_batched_equals_per_prompt_reference(llama: LoadedModel, rule: str, lrp: bool) -> None:
    rows = make_rows()
    opts = AttributionOptions(attention_rule=rule, lrp=lrp, batch_size=4)
    fast = attribute_rows(llama, rows, opts, progress=False)
    _assert_same(fast, *reference_attribution(llama, rows, opts))


def test_other_families_match_reference(other: LoadedModel) -> None:
    rows = make_rows(4)
    opts = AttributionOptions(metric="top_other", batch_size=3)
    fast = attribute_rows(other, rows, opts, progress=False)
    _assert_same(fast, *reference_attribution(other, rows, opts))


def test_last_n_positions_and_skips_match_reference(llama: LoadedModel) -> None:
    rows = make_rows(5)
    opts = AttributionOptions(
        last_n_positions=2,
        skip_layers=frozenset({1}),
        skip_neurons=frozenset({(0, 3), (0, 10)}),
        batch_size=2,
    )
    fast = attribute_rows(llama, rows, opts, progress=False)
    assert fast.n_positions == 2
    assert fast.scores[:, 1].abs().max() == 0
    assert fast.scores[:, 0, :, [3, 10]].abs().max() == 0
    _assert_same(fast, *reference_attribution(llama, rows, opts))


def test_batch_size_does_not_change_the_result(llama: LoadedModel) -> None:
    rows = make_rows(7)
    one = attribute_rows(llama, rows, AttributionOptions(batch_size=1), progress=False)
    many = attribute_rows(llama, rows, AttributionOptions(batch_size=7), progress=False)
    torch.testing.assert_close(one.scores, many.scores, rtol=1e-4, atol=1e-6)
    assert torch.equal(one.valid, many.valid)


def test_valid_mask_follows_prompt_lengths_and_bos(llama: LoadedModel) -> None:
    rows = make_rows(4)  # lengths 3, 4, 5, 6
    attr = attribute_rows(llama, rows, AttributionOptions(), progress=False)
    assert attr.n_positions == 6
    # prompt of length L has L-1 valid offsets (BOS filtered)
    assert attr.valid.sum(1).tolist() == [2, 3, 4, 5]
    assert attr.scores[~attr.valid[:, None, :, None].expand_as(attr.scores)].abs().max() == 0


def test_top_k_per_layer_keeps_at_most_k(llama: LoadedModel) -> None:
    attr = attribute_rows(
        llama, make_rows(3), AttributionOptions(top_k_per_layer=5), progress=False
    )
    assert int((attr.scores != 0).sum(-1).max()) <= 5
    dense = attribute_rows(llama, make_rows(3), AttributionOptions(), progress=False)
    kept = attr.scores != 0
    torch.testing.assert_close(attr.scores[kept], dense.scores[kept])


def test_metric_values() -> None:
    logits = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, 4.0]])
    t, c = torch.tensor([1, 0]), torch.tensor([2, 1])
    assert metric_values(logits, t, c, "target").tolist() == [5.0, 3.0]
    assert metric_values(logits, t, c, "logit_diff").tolist() == [3.0, 3.0]
    assert metric_values(logits, t, c, "top_other").tolist() == [3.0, -1.0]


def test_unknown_metric_lists_choices() -> None:
    with pytest.raises(ModelError, match="target, logit_diff, top_other"):
        AttributionOptions(metric="loss")  # type: ignore[arg-type]


def test_identical_target_and_counterfactual_token_is_an_error(llama: LoadedModel) -> None:
    batch = encode_rows(make_rows(3), llama.tokenizer)
    batch = dataclasses.replace(batch, counterfactual=batch.target.clone())
    with pytest.raises(DatasetError, match="r0, r1, r2"):
        attribute_batch(llama, batch, 4, AttributionOptions())


def test_nan_gradient_names_the_layer(tmp_path: Path) -> None:
    lm = build_tiny("LlamaForCausalLM", tmp_path)
    with torch.no_grad():
        lm.model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(ModelError, match=r"layer\(s\) \[0"):
        attribute_rows(lm, make_rows(2), AttributionOptions(), progress=False)


def test_multi_token_target_is_refused(llama: LoadedModel) -> None:
    row = make_rows(1)[0].model_copy(update={"target": " w3 w4"})
    with pytest.raises(DatasetError):
        attribute_rows(llama, [row], AttributionOptions(), progress=False)


def test_attributions_round_trip(llama: LoadedModel, tmp_path: Path) -> None:
    attr = attribute_rows(llama, make_rows(3), AttributionOptions(), progress=False)
    path = tmp_path / "raw.safetensors"
    attr.save(path)
    back = Attributions.load(path)
    assert torch.equal(back.scores, attr.scores) and torch.equal(back.valid, attr.valid)
    assert back.ids == attr.ids
    (tmp_path / "bad.safetensors").write_text(json.dumps({"not": "tensors"}))
    with pytest.raises(ArtifactError, match=r"bad\.safetensors"):
        Attributions.load(tmp_path / "bad.safetensors")
