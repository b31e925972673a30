"""scripts/cost_table.py on a fake finished run: benchmark TSVs summed per stage, ACDC's
counted passes as forward-equivalents, the H100 estimate from FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitlab.models.random import build_random_model, read_shape, shape_path
from circuitlab.models.settings import RandomModelConfig
from circuitlab.models.spec import ModelSpec
from circuitlab.types import TaskRow
from script_support import load_script

ROOT = Path(__file__).resolve().parents[1]
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


cost = load_script("cost_table")


def bench(run: Path, rel: str, seconds: float, rss_mb: str, cpu_s: float = 900.0) -> None:
    path = run / "data" / "benchmarks" / f"{rel}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = f"{seconds}\t0:00:0{int(seconds)}\t{rss_mb}\t1\t1\t1\t0\t0\t50\t{cpu_s}\n"
    path.write_text(HEADER + row)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of model `m` (a tiny random model, its reference, a dataset), two other
    models' and a model-free job's benchmarks that must not count."""
    run = tmp_path_factory.mktemp("run")
    models = run / "data" / "models"
    entry = RandomModelConfig(
        source="random", shape="tiny-llama", corpus={"sentences_per_family": 200}
    )
    build_random_model(
        entry, read_shape(shape_path("tiny-llama", ROOT)), {"capitals": {}}, models / "m"
    )
    ModelSpec(id=str(models / "m"), device="cpu").to_reference(models / "m.json")
    rows = [
        TaskRow(id=f"r{i}", split="train" if i < 6 else "test", prompt="The capital of France is",
                target=" Paris", counterfactual=" Rome", corrupt_prompt="The capital of Italy is")
        for i in range(8)
    ]  # fmt: skip
    data = run / "data" / "datasets" / "m" / "capitals.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    bench(run, "evaluate_model/m/capitals", 2.0, "1024")
    bench(run, "evaluate_model/m/induction", 1.0, "512")
    bench(run, "acdc_circuit/m/capitals/eap", 4.0, "2048")
    bench(run, "acdc_circuit/m/induction/eap", 4.0, "NA")
    bench(run, "random_model/m", 3.0, "300")
    bench(run, "evaluate_model/m2/capitals", 99.0, "9999")  # another model
    bench(run, "datasets/capitals", 99.0, "9999")  # no model
    for task in ("capitals", "induction"):
        art = run / "data" / "circuits" / "m" / task / "eap.json"
        art.parent.mkdir(parents=True)
        art.write_text(json.dumps({"n_forward": 3, "n_backward": 1, "edges": ["a", "b", "c"]}))
        # a neuron circuit beside them has no pass counts
        (art.parent / "lrp.json").write_text(json.dumps({"neurons": [], "method": "lrp"}))
    return run


def test_stages_sum_wall_time_and_keep_the_peak_memory(run: Path) -> None:
    costs = {c.stage: c for c in cost.stage_costs(run, "m")}
    assert set(costs) == {"evaluate_model", "acdc_circuit/eap", "random_model"}
    ev, eap = costs["evaluate_model"], costs["acdc_circuit/eap"]
    assert (ev.jobs, ev.wall_s, ev.peak_rss_mb, ev.cpu_s) == (2, 3.0, 1024.0, 1800.0)
    assert (eap.jobs, eap.wall_s, eap.peak_rss_mb, eap.n_edges) == (2, 8.0, 2048.0, 3)
    # counted: (3 forwards + 2 × 1 backward) per task; others: CPU time in plain forwards
    # (a job sharing its core takes longer by the clock, not in CPU seconds), else wall time
    assert eap.fwd_eq(forward_s=0.5) == 10
    assert ev.fwd_eq(forward_s=0.5) == 3600.0
    assert cost.StageCost("x", 1, wall_s=3.0, peak_rss_mb=None).fwd_eq(forward_s=0.5) == 6.0


def test_the_h100_forward_is_two_flops_per_parameter_and_token() -> None:
    fwd = cost.Forward(seconds=0.1, tokens=160, n_prompts=8, parameters=124_439_808, device="cpu")
    assert fwd.h100_s() == pytest.approx(2 * 124_439_808 * 160 / (0.40 * 989e12))
    assert fwd.h100_s(utilisation=0.2) == pytest.approx(2 * fwd.h100_s())
    # a small batch on a GPU is bound by its layers' launch latency, not its FLOPs
    small = cost.Forward(seconds=0.1, tokens=160, n_prompts=8, parameters=124_439_808,
                         device="cpu", n_layers=12)  # fmt: skip
    assert small.h100_s() == pytest.approx(12 * cost.LAYER_LATENCY_S)
    assert small.h100_s() > small.flops_s()


def test_the_table_measures_one_forward_and_states_its_method(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "cost.md"
    threads_before = torch.get_num_threads()
    assert cost.main(["--model", "m", "--run", str(run), "--prompts", "4", "--repeats", "2",
                      "--out", str(out)]) == 0  # fmt: skip
    text = out.read_text()
    assert "One plain forward of 4 prompts (24 tokens)" in text  # <bos> + 5 words, 4 prompts
    assert "40% of 989 TFLOP/s" in text and "ACDC graph 3 edges" in text
    row = next(line for line in text.splitlines() if line.startswith("| acdc_circuit/eap "))
    assert row.split("|")[2:7] == [" 2 ", " 8.0 ", " 1,800 ", " 2.00 ", " 10 † "]
    assert "| random_model | 1 | 3.0 | 900 | 0.29 |" in text
    assert "| **all** | 5 | 14.0 | 4,500 (1.25 h) |" in text
    # timed on the jobs' one thread (Snakemake's OMP_NUM_THREADS), the process's own restored
    assert "measured on cpu on 1 thread, as the run's jobs ran" in text
    assert torch.get_num_threads() == threads_before


def test_the_forward_runs_on_the_threads_asked_for(run: Path) -> None:
    seen: list[int] = []
    real = torch.nn.Module.__call__

    def spy(self: torch.nn.Module, *a: object, **k: object) -> object:
        seen.append(torch.get_num_threads())
        return real(self, *a, **k)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.nn.Module, "__call__", spy)
            fwd = cost.measure_forward(run, "m", "capitals", 2, 1, threads=1)
        assert fwd.threads == 1 and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_run_without_the_models_benchmarks_says_so(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cost.main(["--model", "nope", "--run", str(run)]) == 1
    assert "no benchmark files of model 'nope'" in capsys.readouterr().out


def test_memory_below_the_weights_is_marked_as_unseen_by_the_benchmark() -> None:
    """A model-loading job whose peak RSS is below its weights ran as a warm-process fork
    (Snakemake's benchmark saw only the client): the table says so instead of a number."""
    fwd = cost.Forward(seconds=0.1, tokens=10, n_prompts=1, parameters=1, device="cpu",
                       weight_bytes=500 * 2**20)  # fmt: skip
    rows = [cost.StageCost("evaluate_model", 1, 1.0, 27.0),  # the warm client's 27 MB
            cost.StageCost("random_model", 1, 1.0, 27.0),  # loads no model: a real figure
            cost.StageCost("blacklist", 1, 1.0, 900.0)]  # fmt: skip
    text = cost.markdown("m", rows, fwd)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if "|" in line}
    assert "–‡" in lines["evaluate_model"] and "0.03" in lines["random_model"]
    assert "0.88" in lines["blacklist"] and "CIRCUITLAB_WARM=0" in text


def test_the_timed_batch_defaults_to_acdcs_first_task_and_a_missing_one_is_named(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cost.default_task(run, "m") == "capitals"  # ACDC ran on capitals and induction
    assert cost.main(["--model", "m", "--run", str(run), "--task", "ioi"]) == 1
    assert "no dataset of task 'ioi' for model 'm'; --task one of ['capitals']" in (
        capsys.readouterr().out
    )
