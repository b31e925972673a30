"""Bad input across the stages, through the CLI as Snakemake calls it (issue 6 §5).

Each case runs `circuitlab …` in-process (the console script's `main`), pointing every output
into a fresh `out/` folder, and expects exit code 2, a message naming the field or file and
the fix, no traceback, and nothing left in `out/`. Together with the cases in tests/test_cli.py
(datasets, check-dataset, acdc-circuit, acdc-evaluate) and tests/lrp/test_cli_lrp.py (lrp-circuit,
blacklist shape) the CLI has more than 30 distinct bad-input tests.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from circuitlab import cli
from circuitlab.io import write_jsonl
from tiny_models import build_tiny, make_rows

TINY_TOY = {
    "source": "toy",
    "architecture": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "d_mlp": 32},
    "training": {"steps": 2, "batch_size": 4, "warmup_steps": 0},
    "corpus": {"sentences_per_family": 5, "filler_sentences": 5},
}
HUB = {"source": "hf", "id": "org/model"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny saved Llama, rows for it, and the broken variants the cases need."""
    root = tmp_path_factory.mktemp("bad_input")
    model = root / "models" / "tiny"
    build_tiny("LlamaForCausalLM", model)
    rows = [r.model_dump() for r in make_rows(12)]
    write_jsonl(root / "tiny" / "toy.jsonl", rows)
    write_jsonl(root / "tiny" / "train_only.jsonl", [r for r in rows if r["split"] == "train"])
    (root / "broken.jsonl").write_text(json.dumps(rows[0]) + "\n{not json\n")
    (root / "broken.json").write_text("{not json")
    # a model saved only as pickle (.bin): must be refused, never unpickled
    pickled = root / "models" / "pickled"
    shutil.copytree(model, pickled)
    from safetensors.torch import load_file

    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    no_config = root / "models" / "no_config"
    shutil.copytree(model, no_config)
    (no_config / "config.json").unlink()
    (root / "models" / "bad_ref.json").write_text(json.dumps({"id": "org/m", "dtype": "float8"}))
    cfg = root / "configs"
    cfg.mkdir()
    (cfg / "typo.yaml").write_text("models: {toy: {source: toy}}\nlrpp: {}\n")
    (cfg / "syntax.yaml").write_text("models: {toy: [source: toy}\n")
    (cfg / "all_off.yaml").write_text("models: {toy: null}\n")
    (cfg / "bad_name.yaml").write_text("models: {'my model': {source: toy}}\n")
    (cfg / "no_task.yaml").write_text(
        "models: {toy: {source: toy}}\ntasks: {capitals: null, ioi: null, sva: null, "
        "induction: null}\nbehaviours: {refusal: null, sentiment: null}\n"
    )
    return {
        "root": root,
        "model": model,
        "rows": root / "tiny" / "toy.jsonl",
        "train_only": root / "tiny" / "train_only.jsonl",
        "broken_rows": root / "broken.jsonl",
        "broken_json": root / "broken.json",
        "pickled": pickled,
        "no_config": no_config,
        "bad_ref": root / "models" / "bad_ref.json",
        "cfg": cfg,
    }


Args = Callable[[dict[str, Path], Path], list[object]]


def _train(params: dict, tasks: str = "{}") -> Args:
    return lambda i, o: [
        "train-toy-model", "--params", json.dumps(params), "--tasks", tasks,
        "--out", o / "model", "--metrics", o / "m.json", "--plot", o / "p.json",
    ]  # fmt: skip


def _ref(params: dict) -> Args:
    return lambda i, o: ["model-ref", "--params", json.dumps(params), "--out", o / "ref.json"]


def _check(model: str = "model", data: str = "rows", on_invalid: str = "fail") -> Args:
    return lambda i, o: [
        "check-dataset", "--model", i[model], "--data", i[data], "--on-invalid", on_invalid,
        "--out", o / "rows.jsonl", "--metrics", o / "m.json",
    ]  # fmt: skip


def _evaluate(model: str = "model", batch_size: str = "8") -> Args:
    return lambda i, o: [
        "evaluate-model", "--model", i[model], "--data", i["rows"],
        "--batch-size", batch_size, "--out", o / "m.json",
    ]  # fmt: skip


def _blacklist(params: dict, model: str = "model") -> Args:
    return lambda i, o: [
        "blacklist", "--model", i[model], "--params", json.dumps(params),
        "--out", o / "bl.json", "--metrics", o / "m.json",
    ]  # fmt: skip


def _lrp(blacklist: str | None = None, params: str = "{}") -> Args:
    def args(i: dict[str, Path], o: Path) -> list[object]:
        extra = ["--blacklist", i[blacklist]] if blacklist else []
        return [
            "lrp-attribution", "--model", i["model"], "--data", i["rows"], "--params", params,
            "--raw", o / "raw.safetensors", "--metrics", o / "m.json", *extra,
        ]  # fmt: skip

    return args


def _faith(data: str = "rows", faithfulness: str = "{}", raw: str | None = None) -> Args:
    return lambda i, o: [
        "lrp-faithfulness", "--model", i["model"], "--data", i[data],
        "--raw", i[raw] if raw else i["root"] / "missing.safetensors",
        "--faithfulness", faithfulness, "--metrics", o / "m.json", "--plot", o / "p.png",
    ]  # fmt: skip


def _contrastive(skip: str) -> Args:
    return lambda i, o: [
        "contrastive-circuit", "--model", i["model"], "--data", i["rows"],
        "--skip-layers", skip, "--out", o / "c.json", "--metrics", o / "m.json",
    ]  # fmt: skip


def _acdc_eval(params: str = "{}", circuit: str = "broken_json") -> Args:
    return lambda i, o: [
        "acdc-evaluate", "--model", i["model"], "--data", i["rows"], "--circuits", i[circuit],
        "--params", params, "--metrics", o / "m.json", "--plot", o / "p.png",
    ]  # fmt: skip


def _validate(name: str) -> Args:
    return lambda i, o: ["validate-config", i["cfg"] / name]


def _datasets(params: str) -> Args:
    return lambda i, o: [
        "datasets", "--task", "ioi", "--params", params,
        "--out", o / "ioi.jsonl", "--metrics", o / "m.json",
    ]  # fmt: skip


CASES: dict[str, tuple[Args, str]] = {
    # config files
    "config: unknown key": (_validate("typo.yaml"), "lrpp"),
    "config: YAML syntax": (_validate("syntax.yaml"), "not valid YAML"),
    "config: every model disabled": (_validate("all_off.yaml"), "every model is disabled"),
    "config: model name with a space": (_validate("bad_name.yaml"), "may only hold letters"),
    "config: no task enabled": (_validate("no_task.yaml"), "no task or behaviour is enabled"),
    "config: file missing": (_validate("nope.yaml"), "does not exist"),
    # datasets
    "datasets: wrong type": (_datasets('{"n_train": "many"}'), "n_train"),
    # toy model
    "train: heads do not divide d_model": (
        _train({**TINY_TOY, "architecture": {"d_model": 30, "n_heads": 4}}),
        "d_model=30 is not divisible by n_heads=4",
    ),
    "train: corpus weight not positive": (
        _train({**TINY_TOY, "corpus": {"weights": {"ioi": 0}}}),
        "corpus weights must be > 0",
    ),
    "train: --tasks not JSON": (_train(TINY_TOY, tasks="{ioi"), "--tasks is not valid JSON"),
    "train: unknown training key": (_train({**TINY_TOY, "training": {"stepz": 3}}), "stepz"),
    # hub model reference
    "model-ref: unknown dtype": (_ref({**HUB, "dtype": "float8"}), "dtype"),
    "model-ref: typo'd key": (_ref({**HUB, "trust_remote": True}), "trust_remote"),
    "model-ref: attention kernel": (_ref({**HUB, "attn_implementation": "flash"}), "eager"),
    # dataset check
    "check: --on-invalid value": (_check(on_invalid="skip"), "--on-invalid must be 'fail' or"),
    "check: a row is not JSON": (_check(data="broken_rows"), "is not valid JSON"),
    # model loading
    "model: pickle-only weights refused": (_evaluate("pickled"), "pickle .bin weights are refused"),
    "model: directory without config.json": (_evaluate("no_config"), "has no config.json"),
    "model: bad reference file": (_evaluate("bad_ref"), "is not a valid model reference"),
    "evaluate: --batch-size 0": (_evaluate(batch_size="0"), "--batch-size"),
    # blacklist
    "blacklist: too few prompts": (_blacklist({"prompts": ["a b"] * 5}), "prompts"),
    "blacklist: top_k 0": (_blacklist({"top_k": 0}), "top_k"),
    # LRP
    "lrp: blacklist file not JSON": (_lrp(blacklist="broken_json"), "is not valid JSON"),
    "lrp: --params not an object": (_lrp(params="[1, 2]"), "--params must be a JSON object"),
    # (an existing --raw: a missing one is reported first, before any work)
    "faithfulness: one random seed": (
        _faith(faithfulness='{"random_seeds": 1}', raw="rows"),
        "random_seeds",
    ),
    "faithfulness: train rows only": (
        _faith(data="train_only", raw="rows"),
        "needs both train and test",
    ),
    "faithfulness: raw scores missing": (_faith(), "made by the Snakemake rule 'lrp_attribution'"),
    "contrastive: --skip-layers": (_contrastive("1,a"), "--skip-layers must be comma-separated"),
    # edge circuits
    "acdc-evaluate: circuit not JSON": (_acdc_eval(), "is not valid JSON"),
    "acdc-evaluate: bad params": (_acdc_eval(params='{"random_seeds": 2}'), "random_seeds"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(
    case: str,
    inputs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    build, message = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(torch, "load", _no_unpickling)
    monkeypatch.setattr(sys, "argv", ["circuitlab", *map(str, build(inputs, out))])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2, f"{case}: exit {code}\n{err}"
    assert message in " ".join(err.split()), f"{case}: {message!r} not in\n{err}"
    assert "Traceback" not in err
    assert list(out.rglob("*")) == [], f"{case} left {list(out.rglob('*'))}"


def _no_unpickling(*args: object, **kwargs: object) -> None:
    raise AssertionError("torch.load called: a stage unpickled a file")
