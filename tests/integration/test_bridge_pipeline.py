"""The pipeline on an architecture circuitlab has no adapter for, through TransformerLens 4.

A tiny random GPT-NeoX (Pythia's architecture: parallel attention and MLP, partial rotary) with
a word-level tokenizer over the tasks' corpus is saved to disk and configured as
``source: hf, backend: transformer_lens``. `snakemake` runs the hook-only stages end to end —
dataset checks, evaluation, every ACDC method (exact, speculative, group testing, head pruning,
EAP) on one task, the edge-circuit evaluation, CAA vectors, CAA steering, the steering summary and the
report — and plans none of the adapter stages; one of those, asked for by hand, fails at once
naming the stage.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformer_lens")

from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from circuitlab.models.toy.corpus import build_corpus
from circuitlab.models.toy.settings import ToyCorpus
from circuitlab.models.toy.tokenizer import build_tokenizer
from pipeline_support import BIN, HOOK_METHODS, TINY, make_workdir, snakemake, snakemake_env

TASKS = {"capitals": {"n_train": 6, "n_test": 4}}  # one task: every edge method runs on it
BEHAVIOURS = {"refusal": {"n_train": 6, "n_test": 4}}


def save_neox(path: Path) -> None:
    corpus = build_corpus(
        {**dict.fromkeys(TASKS), **dict.fromkeys(BEHAVIOURS)},
        ToyCorpus(sentences_per_family=3000, filler_sentences=2000),
        seed=0,
    )
    tok = build_tokenizer(corpus)
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, rotary_pct=0.5, max_position_embeddings=64,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    GPTNeoXForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)


@pytest.fixture(scope="module")
def bridge_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    model = tmp_path_factory.mktemp("neox") / "pythia-tiny"
    save_neox(model)
    config = {
        **{k: v for k, v in TINY.items() if k not in ("models", "tasks", "behaviours")},
        "models": {"neox": {"source": "hf", "id": str(model), "backend": "transformer_lens"}},
        "tasks": TASKS,
        "behaviours": BEHAVIOURS,
        "caa": {"multipliers": [0.0, 1.0, 4.0], "random_seeds": 5, "batch_size": 8},
        # the EAP-IG estimators need the native patch layer (a config error otherwise)
        "acdc": {**TINY["acdc"], "methods": HOOK_METHODS},
    }
    work = make_workdir(tmp_path_factory.mktemp("bridge"), config)
    proc = snakemake(work)
    return work, proc.stderr


def test_the_hook_only_stages_run_end_to_end(bridge_run: tuple[Path, str]) -> None:
    work, stderr = bridge_run
    data = work / "data"
    ref = json.loads((data / "models" / "neox.json").read_text())
    assert ref["backend"] == "transformer_lens"
    for task in TASKS:
        evaluation = json.loads((data / "metrics/evaluate_model/neox" / f"{task}.json").read_text())
        assert evaluation["test"]["n"] == 4
        for method in HOOK_METHODS:
            art = json.loads((data / "circuits/neox" / task / f"{method}.json").read_text())
            edges = art["edges"]
            assert "A1.0->MLP 1" not in edges and "A0.0->MLP 1" in edges  # parallel blocks
            assert art["circuits"], method
        assert (data / "metrics/acdc_evaluate/neox" / f"{task}.json").is_file()
    assert (data / "caa/neox/refusal.safetensors").is_file()
    steering = json.loads((data / "steering/neox/refusal/caa.json").read_text())
    assert steering
    assert (data / "metrics/steering/neox/summary.json").is_file()
    report = (data / "report/index.html").read_text()
    assert "backend: transformer_lens" in report  # the note naming what is not available
    assert 'id="neox-blacklist"' not in report and 'id="neox-lrp"' not in report
    assert 'id="neox-acdc"' in report
    # nothing that needs an adapter was planned, and the run said so
    assert not (data / "blacklists").exists()
    assert not list(data.glob("circuits/neox/*/lrp.json"))
    assert not (data / "compare").exists()
    assert "not available without circuitlab's adapter" in stderr


def test_an_adapter_stage_asked_for_by_hand_fails_at_once(bridge_run: tuple[Path, str]) -> None:
    work, _ = bridge_run
    start = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "circuitlab"), "blacklist", "--model", "data/models/neox.json",
         "--out", str(work / "bl.json"), "--metrics", str(work / "bl_metrics.json")],
        cwd=work, env=snakemake_env(work), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    text = " ".join(proc.stderr.split())
    assert "the neuron blacklist needs circuitlab's architecture adapter" in text
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - start < 10
