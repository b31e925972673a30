"""The config model, its generated schema, and the errors a user sees for bad keys."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from circuitlab.config import load_config, resolved_yaml, schema_yaml
from circuitlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "config" / "config.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def default_raw() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def test_default_config_is_valid() -> None:
    cfg = load_config(DEFAULT)
    assert cfg.models["toy"].source == "toy"
    assert set(cfg.task_names()) == {"capitals", "ioi", "sva", "induction"}
    assert set(cfg.behaviour_names()) == {"refusal", "sentiment"}


def test_committed_schema_matches_the_model() -> None:
    """workflow/schemas/config.schema.yaml is generated; regenerate with `circuitlab schema`."""
    assert SCHEMA.read_text() == schema_yaml(), (
        "schema out of date: run `circuitlab schema --out workflow/schemas/config.schema.yaml`"
    )


def test_committed_params_file_is_the_default_config_resolved() -> None:
    """config/resolved.yaml (DVC's params file) holds every key of the default config, its
    defaults included; each run rewrites it, and the committed one is the default run's."""
    text = (ROOT / "config" / "resolved.yaml").read_text()
    assert text == resolved_yaml(load_config(DEFAULT)), (
        "config/resolved.yaml out of date: run `.venv/bin/circuitlab validate-config "
        "config/config.yaml --resolved config/resolved.yaml`"
    )
    params = yaml.safe_load(text)
    assert "top_k" not in default_raw().get("compare", {})  # left at its default in the YAML
    assert params["compare"]["top_k"] == 50  # and written out here


def test_schema_and_pydantic_agree_on_the_default_and_on_typos() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    jsonschema.validate(default_raw(), schema)
    bad = default_raw()
    bad["tasks"]["capitals"]["n_tran"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(ConfigError):
        load_config(bad)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(sed=1), ["sed: unknown key", "allowed keys here:", "models"]),
        (lambda c: c["tasks"].update(capitols={}), ["tasks.capitols: unknown key", "capitals"]),
        (
            lambda c: c["models"]["toy"]["training"].update(stepz=3),
            ["training.stepz: unknown key", "steps"],
        ),
        (lambda c: c["models"]["toy"].update(source="onnx"), ["models.toy", "'toy'", "'hf'"]),
        (lambda c: c["datasets"].update(on_invalid="skip"), ["datasets.on_invalid", "'drop'"]),
        (
            lambda c: c["models"]["toy"]["architecture"].update(n_kv_heads=3),
            ["not divisible by n_kv_heads=3"],
        ),
        (lambda c: c.update(models={}), ["models"]),
    ],
)
def test_bad_config_names_the_key_and_the_choices(mutate, expected) -> None:
    raw = default_raw()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    for fragment in expected:
        assert fragment in str(info.value), str(info.value)


def test_hub_model_entry_and_trust_remote_code_off_by_default() -> None:
    raw = default_raw()
    raw["models"] = {"gpt2": {"source": "hf", "id": "openai-community/gpt2"}}
    cfg = load_config(raw)
    assert cfg.models["gpt2"].trust_remote_code is False


def test_corpus_params_exclude_split_sizes() -> None:
    raw = default_raw()
    before = load_config(raw).corpus_params()
    raw["tasks"]["capitals"]["n_train"] = 7
    assert load_config(raw).corpus_params() == before


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_config_is_frozen() -> None:
    cfg = load_config(DEFAULT)
    seed = cfg.seed
    with pytest.raises(ValidationError, match="frozen"):
        cfg.seed = seed + 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        cfg.acdc.seed = seed + 1  # type: ignore[misc]  # sections too
    assert cfg.seed == seed and cfg.acdc.seed == seed


def merge(base: dict, override: dict) -> dict:
    """Snakemake's --configfile semantics: nested dicts are updated key by key."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_gpt2_config_merges_into_the_default() -> None:
    override = yaml.safe_load((ROOT / "config" / "gpt2.yaml").read_text())
    cfg = load_config(merge(default_raw(), override))
    assert list(cfg.active_models()) == ["gpt2"]
    assert cfg.model("gpt2").id == "openai-community/gpt2"
    with pytest.raises(ConfigError, match="unknown model 'toy'; enabled: gpt2"):
        cfg.model("toy")


def test_all_models_disabled_is_an_error() -> None:
    raw = default_raw()
    raw["models"]["toy"] = None
    with pytest.raises(ConfigError, match="every model is disabled"):
        load_config(raw)


def test_snakemake_gives_the_short_message_for_a_typo(tmp_path: Path) -> None:
    """`snakemake` on a mistyped overlay prints the pydantic message (key, allowed keys), not the
    2,000-line schema dump."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("acdc:\n  taos: 1\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-n", "--configfile", str(bad)],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "acdc.taos: unknown key; allowed keys here:" in proc.stderr
    assert len((proc.stdout + proc.stderr).splitlines()) < 30


def test_a_transformer_lens_model_refuses_the_native_only_edge_methods() -> None:
    raw = default_raw()
    raw["models"]["hooked"] = {"source": "hf", "id": "some/model", "backend": "transformer_lens"}
    with pytest.raises(ConfigError, match=r"eap_ig_inputs.*backend: transformer_lens"):
        load_config(raw)
    raw["acdc"] = {"methods": ["acdc", "eap", "edge_pruning"]}
    assert load_config(raw).acdc.methods == ["acdc", "eap", "edge_pruning"]
