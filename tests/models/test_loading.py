"""load_model / ModelSpec: local dirs, reference files, hub ids offline, clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    PreTrainedTokenizerFast,
)

from circuitlab.errors import ArtifactError, CircuitlabError, ModelError
from circuitlab.models import ADAPTERS, LoadedModel, ModelSpec, load_model
from circuitlab.models import loading as loading_mod
from circuitlab.models.adapters.llama import LLAMA


def _save_tiny_llama(path: Path, *, tokenizer: bool = True) -> Path:
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).save_pretrained(path)
    if tokenizer:
        vocab = {"<unk>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(62)}}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>"
        ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture
def from_pretrained_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the kwargs of every AutoModelForCausalLM.from_pretrained call."""
    calls: list[dict[str, Any]] = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(loading_mod.AutoModelForCausalLM, "from_pretrained", spy)
    return calls


def test_load_local_dir(llama_dir: Path, from_pretrained_calls: list[dict[str, Any]]) -> None:
    lm = load_model(llama_dir)
    assert isinstance(lm, LoadedModel)
    assert lm.adapter is LLAMA
    assert lm.spec == ModelSpec(id=str(llama_dir))
    assert lm.device == torch.device("cpu")  # the default, on a GPU host too
    assert lm.backend == "native"
    assert not lm.model.training
    assert all(p.dtype == torch.float32 for p in lm.model.parameters())
    assert all(p.requires_grad for p in lm.model.parameters())  # left as loaded (LRP)
    assert lm.model.config._attn_implementation == "eager"
    (kwargs,) = from_pretrained_calls
    assert kwargs["trust_remote_code"] is False
    assert kwargs["use_safetensors"] is True
    assert kwargs["attn_implementation"] == "eager"
    assert kwargs["dtype"] == torch.float32
    assert kwargs["local_files_only"] is True
    with pytest.raises(AttributeError):
        lm.model = None  # type: ignore[misc]  # frozen


def test_tokenizer_pad_set_to_eos_on_our_instance(llama_dir: Path) -> None:
    lm = load_model(str(llama_dir))
    assert lm.tokenizer.pad_token == lm.tokenizer.eos_token == "<eos>"
    enc = lm.tokenizer(["w1 w2 w3", "w4"], padding=True, return_tensors="pt")
    assert enc["input_ids"].shape == (2, 3)
    # the saved tokenizer on disk is untouched
    saved = json.loads((llama_dir / "tokenizer_config.json").read_text())
    assert saved.get("pad_token") in (None, "")


def test_config_json_path_and_spec_options(llama_dir: Path) -> None:
    lm = load_model(ModelSpec(id=str(llama_dir), dtype="bfloat16", device="cpu"))
    assert all(p.dtype == torch.bfloat16 for p in lm.model.parameters())
    assert lm.device == torch.device("cpu")
    assert load_model(llama_dir / "config.json").spec.id == str(llama_dir)


def test_spec_defaults_are_safe() -> None:
    spec = ModelSpec(id="gpt2")
    assert spec.trust_remote_code is False
    assert spec.attn_implementation == "eager"
    assert spec.dtype == "float32"
    assert spec.device == "cpu"
    assert spec.device_map is None
    assert not spec.is_local()
    assert ModelSpec(id="meta-llama/Llama-3.1-8B").is_local() is False
    assert ModelSpec(id="./models/toy").is_local()
    with pytest.raises(ValueError, match="extra"):
        ModelSpec(id="gpt2", trust_remote=True)  # type: ignore[call-arg]


def test_reference_round_trip(tmp_path: Path, llama_dir: Path) -> None:
    spec = ModelSpec(id=str(llama_dir), revision=None, dtype="float32", device="cpu")
    ref = tmp_path / "models" / "tiny.json"
    spec.to_reference(ref)
    assert ModelSpec.from_reference(ref) == spec
    assert json.loads(ref.read_text())["trust_remote_code"] is False
    lm = load_model(ref)
    assert lm.spec == spec
    assert lm.adapter is LLAMA


def test_bad_reference_file(tmp_path: Path) -> None:
    ref = tmp_path / "bad.json"
    ref.write_text(json.dumps({"id": "gpt2", "dtipe": "float32"}))
    with pytest.raises(ArtifactError, match="dtipe"):
        ModelSpec.from_reference(ref)
    with pytest.raises(ArtifactError, match="model"):
        load_model(tmp_path / "missing.json")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"does not exist"):
        load_model(tmp_path / "nope")


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no config\.json"):
        load_model(tmp_path)


def test_directory_without_safetensors(tmp_path: Path) -> None:
    path = _save_tiny_llama(tmp_path / "m")
    for f in path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelError, match="safetensors"):
        load_model(path)


@pytest.mark.parametrize("cut", ["half", "tail"])
def test_truncated_weights_give_one_paragraph(tmp_path: Path, cut: str) -> None:
    """An interrupted copy or download: the error names the file and the fix, no traceback."""
    path = _save_tiny_llama(tmp_path / "m")
    weights = path / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as f:
        f.truncate(size // 2 if cut == "half" else size - 64)
    with pytest.raises(ModelError, match=r"the weights in .* are damaged .* truncated") as err:
        load_model(path)
    assert "make reproduce" in str(err.value) and "\n" not in str(err.value)


def test_directory_without_tokenizer(
    tmp_path: Path, from_pretrained_calls: list[dict[str, Any]]
) -> None:
    path = _save_tiny_llama(tmp_path / "m", tokenizer=False)
    with pytest.raises(ModelError, match="tokenizer=False"):
        load_model(path, tokenizer=True)  # what every pipeline stage asks for
    assert from_pretrained_calls == []  # checked before any weight is read


def test_directory_without_tokenizer_loads_for_token_ids(tmp_path: Path) -> None:
    """An exported model often has no tokenizer: it loads, and text fails with the fix."""
    from circuitlab.prompts import batch_from_ids, encode_rows
    from circuitlab.types import TaskRow

    path = _save_tiny_llama(tmp_path / "m", tokenizer=False)
    lm = load_model(path)
    assert lm.tokenizer is None
    assert load_model(_save_tiny_llama(tmp_path / "t"), tokenizer=False).tokenizer is None
    row = TaskRow(id="r", split="train", prompt="a", corrupt_prompt="b", target=" c",
                  counterfactual=" d")  # fmt: skip
    with pytest.raises(ModelError, match="batch_from_ids"):
        encode_rows([row], lm.tokenizer)
    batch = batch_from_ids([[1, 2, 3]], [[1, 4, 3]], [5], [6])
    logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert logits.shape[:2] == (1, 3)


@pytest.mark.parametrize(
    ("config", "arch"),
    [
        (OPTConfig(vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                   num_attention_heads=4, word_embed_proj_dim=32), "OPTForCausalLM"),
        (BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4), "BertForMaskedLM"),
    ],
)  # fmt: skip
def test_unsupported_architecture_fails_before_weights(
    tmp_path: Path,
    config: Any,
    arch: str,
    from_pretrained_calls: list[dict[str, Any]],
) -> None:
    config.architectures = [arch]
    config.save_pretrained(tmp_path)  # config only: reading weights would fail differently
    with pytest.raises(ModelError) as err:
        load_model(tmp_path)
    text = str(err.value)
    assert f"unsupported architecture '{arch}'; circuitlab's adapters: " in text
    assert ", ".join(sorted(ADAPTERS)) in text
    # a causal LM TransformerLens can wrap gets the way to run it; a masked LM does not
    assert ("backend: transformer_lens" in text) == (arch == "OPTForCausalLM")
    assert from_pretrained_calls == []


def test_hub_id_offline_not_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as err:
        load_model("circuitlab-tests/definitely-not-a-model")
    msg = str(err.value)
    assert "circuitlab-tests/definitely-not-a-model" in msg
    assert "HF_HUB_OFFLINE" in msg
    assert isinstance(err.value, CircuitlabError)


@pytest.mark.parametrize("arch", ["Qwen2ForCausalLM", "MistralForCausalLM", "GPT2LMHeadModel"])
def test_generic_tokenizer_loads_as_saved_whatever_the_model_type(
    tmp_path: Path, arch: str
) -> None:
    """AutoTokenizer would swap a bare `tokenizers` tokenizer for the model type's class (Qwen2's
    encodes a word-level vocabulary to nothing); we load exactly the saved one."""
    from tiny_models import build_tiny

    lm = build_tiny(arch, tmp_path)
    assert lm.tokenizer("w1 w2 w3")["input_ids"] == [3, 4, 5]
