"""Random models of published shapes (`circuitlab.models.random`, config/shapes/): the shape
files give the published parameter and ACDC edge counts, and a tiny shape builds, saves and
loads through its reference exactly as a hub model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitlab.acdc.graph import build_graph
from circuitlab.errors import ConfigError, ModelError
from circuitlab.models import load_model
from circuitlab.models.adapters import ADAPTERS
from circuitlab.models.loading import architecture_of
from circuitlab.models.random import (
    SOURCE_KEY,
    build_random_model,
    n_parameters,
    read_shape,
    shape_config,
    shape_path,
)
from circuitlab.models.settings import RandomModelConfig
from cli_support import run

ROOT = Path(__file__).resolve().parents[2]
#: corpus params of two task families (the tokenizer's vocabulary) and a small corpus
TASKS = {"capitals": {}, "induction": {}}
SMALL_CORPUS = {"sentences_per_family": 200, "filler_sentences": 200}

#: shape → (parameters, ACDC edges of `build_graph`, sources); the parameter counts are the
#: published ones (GPT-2 124M, Qwen2.5 0.49B, Llama-3.2 1.24B, tied embeddings counted once)
PUBLISHED = {
    "gpt2-small": (124_439_808, 32_491, 157),
    "qwen2.5-0.5b": (494_032_768, 79_813, 361),
    "llama-3.2-1b": (1_235_814_400, 195_865, 529),
}


def entry(shape: str, **extra: object) -> RandomModelConfig:
    return RandomModelConfig.model_validate(
        {"source": "random", "shape": shape, "corpus": SMALL_CORPUS, **extra}
    )


@pytest.mark.parametrize("shape", list(PUBLISHED))
def test_real_shapes_give_the_published_parameter_and_edge_counts(shape: str) -> None:
    """Counted on the `meta` device (nothing allocated) and from the config through the
    adapter, as the stages read the dimensions."""
    raw = read_shape(shape_path(shape, ROOT))
    assert SOURCE_KEY not in raw
    config = shape_config(raw)
    params, edges, sources = PUBLISHED[shape]
    assert n_parameters(config) == params
    graph = build_graph(ADAPTERS[architecture_of(config)].dims(config))
    assert (graph.n_edges, len(graph.sources)) == (edges, sources)
    assert config.tie_word_embeddings


def test_every_shape_file_says_where_its_figures_come_from() -> None:
    for path in (ROOT / "config" / "shapes").glob("*.json"):
        note = json.loads(path.read_text())[SOURCE_KEY]
        assert len(note) > 40, path


def test_a_layer_slice_keeps_every_other_dimension() -> None:
    raw = read_shape(shape_path("qwen2.5-0.5b", ROOT))
    full, cut = shape_config(raw), shape_config(raw, n_layers=2)
    assert cut.num_hidden_layers == 2 and cut.max_window_layers == 2
    assert (cut.hidden_size, cut.vocab_size, cut.num_key_value_heads) == (
        full.hidden_size, full.vocab_size, full.num_key_value_heads,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="more than the shape's 24 layers"):
        shape_config(raw, n_layers=25)


def test_an_unknown_shape_lists_the_shapes() -> None:
    with pytest.raises(ConfigError, match="gpt2-small"):
        shape_path("gpt3", ROOT)


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-gpt2"])
def test_the_cli_builds_a_tiny_shape_that_loads_through_its_reference(
    shape: str, tmp_path: Path
) -> None:
    """The real vocabulary size is kept (rows above the tokenizer's ids unused), embeddings stay
    tied after save/load, the saved dtype is the entry's, and the reference says it."""
    params = entry(shape, dtype="bfloat16").model_dump(mode="json")
    out, ref = tmp_path / "m", tmp_path / "m.json"
    ran = run(
        "random-model", "--params", json.dumps(params), "--tasks", json.dumps(TASKS),
        "--shape", shape_path(shape, ROOT), "--out", out, "--ref", ref,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    written = json.loads(ref.read_text())
    assert (written["id"], written["dtype"], written["device"]) == (str(out), "bfloat16", "cpu")
    lm = load_model(ref, tokenizer=True)
    raw = read_shape(shape_path(shape, ROOT))
    assert lm.dims.vocab_size == raw["vocab_size"] > len(lm.tokenizer)
    assert lm.model.dtype == torch.bfloat16
    embed, unembed = lm.model.get_input_embeddings(), lm.model.get_output_embeddings()
    assert embed.weight.data_ptr() == unembed.weight.data_ptr()
    assert lm.model.config.bos_token_id == lm.tokenizer.bos_token_id
    ids = lm.tokenizer(" Paris", add_special_tokens=True)["input_ids"]
    assert ids[0] == lm.tokenizer.bos_token_id and lm.tokenizer.unk_token_id not in ids


def test_the_same_seed_gives_the_same_weights_and_another_seed_others(tmp_path: Path) -> None:
    def weights(seed: int, where: str) -> dict[str, torch.Tensor]:
        model, _ = build_random_model(
            entry("tiny-llama", seed=seed), read_shape(shape_path("tiny-llama", ROOT)),
            TASKS, tmp_path / where,
        )  # fmt: skip
        return model.state_dict()

    a, b, c = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    norm = a["model.layers.0.input_layernorm.weight"]
    assert not torch.equal(norm, torch.ones_like(norm))  # perturbed: no norm is the identity


def test_a_vocabulary_smaller_than_the_corpus_is_refused(tmp_path: Path) -> None:
    shape = {**read_shape(shape_path("tiny-llama", ROOT)), "vocab_size": 16}
    with pytest.raises(ModelError, match="larger vocab_size"):
        build_random_model(entry("tiny-llama"), shape, TASKS, tmp_path / "m")


@pytest.mark.parametrize("overlay", sorted((ROOT / "config").glob("scale-*.yaml")), ids=str)
def test_each_scale_overlay_validates_and_builds_its_models_first(overlay: Path) -> None:
    """Merged into the default config as `make reproduce CONFIG=…` merges it: valid for the
    generated schema and for pydantic, every shape it names exists, and each random model's
    first job is `random_model` (the stages then load its reference)."""
    import jsonschema
    import yaml

    from circuitlab.config import Config, merge_config, read_config_yaml
    from circuitlab.jobs import model_jobs

    raw = merge_config(read_config_yaml(ROOT / "config" / "config.yaml"), read_config_yaml(overlay))
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    jsonschema.validate(raw, schema)
    cfg = Config.model_validate(raw)
    for name, model in cfg.active_models().items():
        assert isinstance(model, RandomModelConfig)
        shape_path(model.shape, ROOT)
        assert model_jobs(cfg, name)[0].label == f"random_model[random={name}]"
