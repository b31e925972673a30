"""The benchmark code runs end to end on a tiny model (no timing asserted), so it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run
from tiny_models import build_tiny, make_rows

bench_lrp = run.bench_lrp  # the module the runner registered (imported once)


def test_lrp_case_runs_and_fast_equals_reference(tmp_path: Path) -> None:
    lm = build_tiny("LlamaForCausalLM", tmp_path)
    settings = bench_lrp.Settings.make(quick=True, repeats=1)
    res = bench_lrp.run_case("tiny", lm, make_rows(5), settings)
    (check,) = res["checks"]
    assert check["passed"], check
    assert check["n_values"] > 0 and check["tolerance_used"] <= 1
    assert check["batch1_max_abs_diff"] < 1e-5
    assert {t["name"] for t in res["timings"]} >= {"fast attribute_batch"}
    assert all(r["value"] > 0 for r in res["ratios"])
    assert all(p.grad is None for p in lm.model.parameters())  # baselines cleaned up


def test_equivalence_check_catches_a_difference(tmp_path: Path) -> None:
    lm = build_tiny("LlamaForCausalLM", tmp_path)
    rows = make_rows(3)
    opts = bench_lrp.AttributionOptions(batch_size=3)
    fast = bench_lrp.attribute_rows(lm, rows, opts, progress=False)
    ref, metric = bench_lrp.reference_attribution(lm, rows, opts)
    assert bench_lrp.compare(fast, ref, metric)["passed"]
    key = next(iter(ref[1]))
    ref[1][key] += 1e-2
    assert not bench_lrp.compare(fast, ref, metric)["passed"]


def test_runner_writes_json_and_fails_only_on_a_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake(ok: bool) -> list[dict]:
        return [
            {"case": "skipped-one", "skipped": "no model"},
            {
                "case": "c",
                "setup": {"n_prompts": 1, "n_layers": 1, "d_mlp": 2, "attn_implementation": "eager",
                          "prompt_tokens_min_max": [3, 3]},
                "timings": [{"name": "t", "median_s": 1.0, "runs_s": [1.0], "warmup_s": 1.0}],
                "ratios": [{"name": "r", "value": 9.0, "goal": "<= 1.5×", "met": False}],
                "checks": [{"name": "eq", "passed": ok, "max_abs_diff": 0.0, "max_rel_diff": 0.0,
                            "tolerance_used": 0.0, "tolerance": "x"}],
            },
        ]  # fmt: skip

    out = tmp_path / "bench.json"
    # keep the test process's global state: its thread count and transformers' progress bars
    monkeypatch.setattr(run.torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(run.hf_logging, "disable_progress_bar", lambda: None)
    monkeypatch.setitem(run.BENCHMARKS, "lrp", lambda quick, repeats, log: fake(True))
    assert run.main(["--only", "lrp", "--threads", "1", "--out", str(out)]) == 0  # MISS ≠ failure
    report = json.loads(out.read_text())
    assert report["machine"]["torch_threads"] == 1
    assert report["benchmarks"]["lrp"][1]["ratios"][0]["met"] is False
    monkeypatch.setitem(run.BENCHMARKS, "lrp", lambda quick, repeats, log: fake(False))
    assert run.main(["--only", "lrp", "--threads", "1", "--out", str(out)]) == 1


def test_acdc_case_runs_and_fast_equals_sequential(tmp_path: Path) -> None:
    bench_acdc = run.bench_acdc
    settings = bench_acdc.Settings.make(quick=True, repeats=1)
    lm = bench_acdc.random_llama(tmp_path, n_layers=1)
    rows = bench_acdc.b1_rows(settings.n_prompts, settings.seq_len)
    cfg = bench_acdc.SweepConfig(tao_bases=(1,), tao_exps=(-3,))
    res = bench_acdc.run_case("tiny", lm, rows, cfg, settings)
    (check,) = res["checks"]
    assert check["passed"], check
    names = {r["name"] for r in res["ratios"]}
    assert {"(c) exact fast ACDC", "(e) EAP", "(c) / (d2) cost"} <= names
    assert all(r["value"] > 0 for r in res["ratios"])
    assert res["setup"]["n_edges"] > 0


def test_peer_benchmark_skips_without_the_peer_and_compares_traces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from circuitlab.acdc import EdgeTrace, TauResult

    bench_peer = run.bench_peer
    monkeypatch.setattr(bench_peer, "PEER_VENV", tmp_path / "no-venv")
    settings = bench_peer.Settings.make(quick=True, repeats=None)
    (res,) = bench_peer.run(settings, log=lambda _msg: None)
    assert "setup.sh" in res["skipped"]
    # the edge-by-edge comparison finds the first divergence and says whether it is near τ
    edges = ("a", "b", "c")
    trace = EdgeTrace((0, 1, 2), (0.0, 0.0, 0.005), (0.0, 0.005, 0.02), (True, True, False),
                      (False, False, False))  # fmt: skip
    ours = TauResult(0.01, ("c",), 2, 0.005, 0, trace)
    peer = [["a", 0.0, True], ["b", 0.005, True], ["c", 0.02, False]]
    same = bench_peer.compare_tau(peer, ours, edges, 0.01)
    assert same["same_order"] and same["differing_decisions"] == 0
    peer[1] = ["b", 0.0100001, False]  # the peer rounded b's Δ to just above τ
    diff = bench_peer.compare_tau(peer, ours, edges, 0.01)
    assert diff["differing_decisions"] == 1 and diff["first_divergence"] == "b"
    assert diff["first_divergence_near_tau"]
    peer[1] = ["b", 0.5, False]
    assert not bench_peer.compare_tau(peer, ours, edges, 0.01)["first_divergence_near_tau"]


def test_mib_benchmark_skips_without_the_peer_and_the_toy_case_without_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench_mib = run.bench_mib
    monkeypatch.setattr(bench_mib, "MIB_VENV", tmp_path / "no-venv")
    settings = bench_mib.Settings.make(quick=False, repeats=None)
    results = bench_mib.run(settings, log=lambda _msg: None)
    assert [r["case"] for r in results] == ["tiny", "planted", "toy/ioi", "toy/induction"]
    assert all("setup.sh" in r["skipped"] for r in results)
    monkeypatch.setattr(bench_mib, "DATA", tmp_path / "no-data")
    assert "make reproduce" in bench_mib._case_inputs("toy/ioi", tmp_path)  # type: ignore[operator]
