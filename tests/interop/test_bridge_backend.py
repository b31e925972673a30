"""The `transformer_lens` backend: circuitlab's hook-only stages on TransformerLens 4's bridge.

* On a family circuitlab *does* have an adapter for (Llama with GQA), the hook patch layer
  (`circuitlab.acdc.hooked`) must agree with the native patch layer: patched logits for random
  edge masks under every ablation, edge gradients, and the circuits of exact ACDC, group testing,
  EAP and head pruning.
* On GPT-NeoX (parallel attention and MLP; no circuitlab adapter) the graph drops the edges a
  parallel block does not have, and patching is checked against TL's own caches: every edge
  patched gives the corrupt run, every edge into one MLP gives the corrupt MLP input.
* CAA vectors and residual steering through the bridge equal the native ones on Llama.
* Stages that need an adapter fail at their start, naming the stage; the native backend's error
  for an unsupported architecture names the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

pytest.importorskip("transformer_lens")

from transformers import (
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    OlmoConfig,
    OlmoForCausalLM,
    PhiConfig,
    PhiForCausalLM,
)

from circuitlab.acdc import patchable, prepare_rows
from circuitlab.acdc.discover import discover_artifact
from circuitlab.acdc.hooked import HookedContext
from circuitlab.acdc.patch import PatchContext, forward
from circuitlab.acdc.settings import AcdcConfig
from circuitlab.errors import ModelError
from circuitlab.models import LoadedModel, load_model
from circuitlab.models.spec import ModelSpec
from circuitlab.steering.caa import add_vector, control_vectors, neuron_differences
from circuitlab.steering.neurons import NeuronSet, steer_neurons
from circuitlab.types import TaskRow
from tiny_models import build_tiny, save_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ATOL = 2e-5


def rows(n: int = 6, seed: int = 0) -> list[TaskRow]:
    """Rows of varied length whose corrupt prompt differs from the clean one."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        words = torch.randint(2, 60, (3 + i % 3,), generator=g).tolist()
        corrupt = [words[0], *((w + 13) % 58 + 2 for w in words[1:])]
        out.append(TaskRow(
            id=f"r{i}", split="train", prompt=" ".join(f"w{w}" for w in words),
            corrupt_prompt=" ".join(f"w{w}" for w in corrupt),
            target=f" w{(words[-1] + 1) % 58 + 2}", counterfactual=f" w{(words[-1] + 5) % 58 + 2}",
            meta={"polarity": "positive" if i % 2 else "negative"},
        ))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def llama_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, LoadedModel]:
    """The same tiny Llama loaded natively and with the transformer_lens backend."""
    path = tmp_path_factory.mktemp("llama") / "m"
    native = build_tiny("LlamaForCausalLM", path)
    return native, load_model(ModelSpec(id=str(path), backend="transformer_lens"))


@pytest.fixture(scope="module")
def neox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-NeoX (parallel attention + MLP, partial rotary) saved to disk."""
    path = tmp_path_factory.mktemp("neox") / "m"
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, rotary_pct=0.5, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=1,
    )  # fmt: skip
    GPTNeoXForCausalLM(config).save_pretrained(path)
    save_tokenizer(path)
    return path


def test_the_bridge_backend_loads_without_an_adapter(llama_pair: Any) -> None:
    native, tl = llama_pair
    assert tl.adapter is None and tl.bridge is not None
    assert tl.dims == native.dims
    ids = torch.tensor([[2, 5, 9, 11]])
    with torch.no_grad():  # the HF model wrapped by the bridge computes what it did before
        assert torch.allclose(tl.model(ids).logits, native.model(ids).logits, atol=ATOL)


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
def test_hooked_patching_equals_the_native_patch_layer(llama_pair: Any, ablation: str) -> None:
    native, tl = llama_pair
    a = prepare_rows(patchable(native), rows(), ablation)
    b = prepare_rows(patchable(tl), rows(), ablation)
    assert isinstance(a, PatchContext) and isinstance(b, HookedContext)
    assert a.graph.edges == b.graph.edges
    assert torch.allclose(a.clean_logits, b.clean_logits, atol=ATOL)
    torch.manual_seed(1)
    masks = (torch.rand(4, a.graph.n_edges) < 0.3).float()
    masks[1] = torch.rand(a.graph.n_edges)  # fractional masks mix the two runs
    ours, theirs = forward(a, masks), forward(b, masks)
    assert (ours - a.clean_logits).abs().max() > 1e-2  # the masks change the logits
    assert torch.allclose(ours, theirs, atol=ATOL), (ours - theirs).abs().max()
    grads = []
    for ctx in (a, b):
        m = masks[0].clone().requires_grad_(True)
        forward(ctx, m).pow(2).sum().backward()
        grads.append(m.grad)
    assert grads[0].abs().max() > 1e-3
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


@pytest.mark.parametrize("method", ["acdc", "acdc_window", "acdc_approx", "eap", "head_pruning"])
def test_every_edge_method_finds_the_native_circuits(llama_pair: Any, method: str) -> None:
    native, tl = llama_pair
    cfg = AcdcConfig(tao_bases=[1.0], tao_exps=[-4, -3], eap={"sizes": [0.2, 0.5]}, n_prompts=6)
    ours = discover_artifact(native, rows(), cfg, method)
    theirs = discover_artifact(tl, rows(), cfg, method)
    assert [c.kept for c in ours.circuits] == [c.kept for c in theirs.circuits]
    assert 0 < len(ours.circuits[0].kept) < len(ours.edges)


def test_caa_vectors_and_residual_steering_through_the_bridge(llama_pair: Any) -> None:
    native, tl = llama_pair
    pos = [r.prompt for r in rows() if r.meta["polarity"] == "positive"]
    neg = [r.prompt for r in rows() if r.meta["polarity"] == "negative"]
    for site in ("resid", "mlp_out"):
        ours = control_vectors(native, pos, neg, site=site)
        theirs = control_vectors(tl, pos, neg, site=site)
        assert ours.abs().max() > 1e-3
        assert torch.allclose(ours, theirs, atol=ATOL)
    vec = control_vectors(native, pos, neg)[0]
    ids = native.tokenizer(pos[0], return_tensors="pt")["input_ids"]
    out = []
    for lm in (native, tl):
        with torch.no_grad(), add_vector(lm, 0, vec, 4.0, positions="all"):
            out.append(lm.model(ids).logits)
        with torch.no_grad():  # the hook is gone after the block
            assert torch.allclose(lm.model(ids).logits, native.model(ids).logits, atol=ATOL)
    assert (out[0] - native.model(ids).logits).abs().max() > 1e-2
    assert torch.allclose(out[0], out[1], atol=ATOL)


def test_neuron_stages_fail_at_their_start_naming_the_stage(llama_pair: Any) -> None:
    _, tl = llama_pair
    steer = steer_neurons(tl, NeuronSet.from_pairs([(0, 1)]), 2.0)
    with pytest.raises(ModelError, match=r"neuron steering needs circuitlab's architecture"):
        steer.__enter__()
    with pytest.raises(ModelError, match=r"CAA's neuron differences .*backend: transformer_lens"):
        neuron_differences(tl, ["w2 w3"], ["w4 w5"])


def parallel_rows() -> list[TaskRow]:
    """Equal-length rows: TL's caches below are compared position by position."""
    return [TaskRow(id=r.id, split=r.split, prompt=" ".join(r.prompt.split()[:3]),
                    corrupt_prompt=" ".join(r.corrupt_prompt.split()[:3]), target=r.target,
                    counterfactual=r.counterfactual) for r in rows()]  # fmt: skip


def test_a_parallel_architecture_is_patched_on_its_own_graph(neox: Path) -> None:
    with pytest.raises(ModelError, match=r"GPTNeoXForCausalLM.*backend: transformer_lens"):
        load_model(neox)  # the native backend names the fix
    lm = load_model(ModelSpec(id=str(neox), backend="transformer_lens"))
    ctx = prepare_rows(patchable(lm), parallel_rows(), "resample")
    graph = ctx.graph
    assert "A1.0->MLP 1" not in graph.edges and "A0.0->MLP 1" in graph.edges
    bridge = lm.bridge
    ids, corrupt = ctx.batch.input_ids, ctx.batch.corrupt_ids
    with torch.no_grad():
        corrupt_logits, cache = bridge.run_with_cache(corrupt)
        # every edge patched: each destination reads the corrupt run
        last = ctx.batch.last
        every = forward(ctx, torch.ones(graph.n_edges))
        assert torch.allclose(every, corrupt_logits[torch.arange(len(last)), last], atol=ATOL)
        # every edge into MLP 1: its input is the corrupt run's, nothing else changes
        mask = torch.zeros(graph.n_edges)
        block = graph.mlp_block(1)
        mask[block.offset : block.stop] = 1.0

        def corrupt_input(x: Tensor, hook: Any) -> Tensor:
            return cache["blocks.1.hook_mlp_in"]

        expected = bridge.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_mlp_in", corrupt_input)])
        got = forward(ctx, mask)
    assert (got - ctx.clean_logits).abs().max() > 1e-3
    assert torch.allclose(got, expected[torch.arange(len(last)), last], atol=ATOL)


SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4)  # fmt: skip
#: architecture → (model, None if edge patching works, else what the refusal says)
OTHERS: dict[str, tuple[Any, str | None]] = {
    "OlmoForCausalLM": (OlmoForCausalLM(OlmoConfig(**SMALL, num_key_value_heads=2)), None),
    # the MLP reads the attention's norm output: no MLP input hook fires
    "PhiForCausalLM": (PhiForCausalLM(PhiConfig(**SMALL)), r"hook_mlp_in \(0×\)"),
    # norms on the attention and MLP outputs: head outputs do not add up to the residual
    "Olmo2ForCausalLM": (
        Olmo2ForCausalLM(Olmo2Config(**SMALL, num_key_value_heads=2)),
        "do not decompose it additively",
    ),
    # TL 4.3.0 has no per-head attention hooks for GPT-J
    "GPTJForCausalLM": (
        GPTJForCausalLM(GPTJConfig(vocab_size=64, n_embd=32, n_layer=2, n_head=4, rotary_dim=4)),
        "cannot split its attention per head",
    ),
}


@pytest.mark.parametrize("arch", sorted(OTHERS))
def test_edge_patching_is_refused_where_the_hooks_do_not_decompose_the_model(
    arch: str, tmp_path: Path
) -> None:
    """`hooked` checks the bridge's hooks on a probe (fire once each, in order; inputs are the
    sum of their sources; every edge patched gives the corrupt run) and refuses, naming why;
    evaluation and CAA still run on a refused model."""
    model, refusal = OTHERS[arch]
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial norm weights, as in tiny_models
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.config.architectures = [arch]
    model.save_pretrained(tmp_path)
    save_tokenizer(tmp_path)
    lm = load_model(ModelSpec(id=str(tmp_path), backend="transformer_lens"))
    if refusal is None:
        assert patchable(lm).graph.n_edges > 0
    else:
        with pytest.raises(ModelError, match=refusal):
            patchable(lm)
    vectors = control_vectors(lm, ["w2 w3 w4", "w5 w6"], ["w7 w8 w9", "w10 w11"])
    assert vectors.shape == (2, 32) and bool(vectors.abs().max() > 0)


def test_an_architecture_neither_backend_knows_is_refused_before_loading(tmp_path: Path) -> None:
    path = tmp_path / "m"
    build_tiny("LlamaForCausalLM", path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "architectures": ["FooForCausalLM"]}))
    with pytest.raises(ModelError, match="unsupported architecture 'FooForCausalLM'") as exc:
        load_model(path)
    assert "transformer_lens" not in str(exc.value)  # no hint TL cannot honour
    with pytest.raises(ModelError, match="no bridge adapter for 'FooForCausalLM'"):
        load_model(ModelSpec(id=str(path), backend="transformer_lens"))


def test_the_readme_model_table_matches_what_each_backend_runs() -> None:
    """Every stage of `circuitlab.models.bridge.STAGES` is in the README's table, with "yes" in
    the transformer_lens column exactly when that backend runs it."""
    import re

    from circuitlab.models.bridge import STAGES

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("| stage | `native`")
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in readme[start:].split("\n\n")[0].splitlines()[2:]
    ]
    for stage, why in STAGES.items():
        for rule in re.findall(r"\b[a-z_]+\b", stage.split(" (")[0]):
            row = [r for r in rows if re.search(rf"\b{rule}\b", r[0])]
            assert len(row) == 1, f"{rule} is not (once) in the README's model table"
            assert row[0][1] == "yes"
            assert row[0][2].startswith("yes") == (why is None), (rule, row[0][2])


def test_a_native_reference_is_written_as_before_the_option_existed(tmp_path: Path) -> None:
    """`backend` appears in a model reference (and a hub model's rule params) only when it is
    not the default, so existing native runs keep their references and rerun nothing."""
    native, bridged = ModelSpec(id="org/m"), ModelSpec(id="org/m", backend="transformer_lens")
    assert "backend" not in native.model_dump(mode="json")
    assert ModelSpec.from_reference(native.to_reference(tmp_path / "a.json")) == native
    assert bridged.model_dump(mode="json")["backend"] == "transformer_lens"
    assert ModelSpec.from_reference(bridged.to_reference(tmp_path / "b.json")) == bridged
