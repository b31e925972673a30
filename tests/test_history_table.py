"""`make history`'s table (circuitlab.tracking.history): snapshots side by side, the params that
changed between them, the headline rows, in one terminal screen."""

from __future__ import annotations

from circuitlab.tracking.history import Snapshot, flatten_params, headline_values, render


def _summaries(accuracy: float, beat: int) -> dict[str, dict]:
    return {
        "evaluate_model/toy/ioi.json": {"test_accuracy": accuracy, "train_accuracy": 1.0},
        "lrp_faithfulness/toy/ioi.json": {"area_mean": 0.66},
        "acdc_evaluate/toy/ioi.json": {"acdc_recovery": 0.7, "eap_recovery": 0.1},
        "steering/toy/summary.json": {"suppress_beat": beat, "amplify_beat": 4},
        "evaluate_model/toy-seed1/ioi.json": {"test_accuracy": 0.8},
        "datasets/ioi.json": {"rows": 10},
    }


def test_headline_values_pick_the_rows_by_model_and_task() -> None:
    values = headline_values(_summaries(0.9, 5))
    assert values == {
        "toy/ioi accuracy": 0.9,
        "toy-seed1/ioi accuracy": 0.8,
        "toy/ioi LRP faithfulness area": 0.66,
        "toy/ioi ACDC edge recovery": 0.7,
        "toy steering: suppress beats control": 5,
        "toy steering: amplify beats control": 4,
    }


def test_two_snapshots_and_their_differences_fit_one_screen() -> None:
    params = {"models": {"toy": {"source": "toy"}}, "compare": {"top_k": 50}, "seed": 0}
    first = Snapshot("a1b2c3d", "run 1", "2026-12-07", flatten_params(params))
    first.values = headline_values(_summaries(0.9, 5))
    params["compare"]["top_k"] = 20
    second = Snapshot("e4f5a6b", "run 2", "2026-12-07", flatten_params(params))
    second.values = headline_values(_summaries(0.75, 5))
    text = render([first, second])
    lines = text.splitlines()
    assert len(lines) <= 40 and max(map(len, lines)) <= 100
    assert "  a1b2c3d → e4f5a6b  compare.top_k: 50 → 20" in lines
    row = next(line for line in lines if line.startswith("toy/ioi accuracy*"))
    assert row.split()[-2:] == ["0.900", "0.750"]
    steady = next(line for line in lines if line.startswith("toy steering: suppress"))
    assert "*" not in steady and steady.split()[-2:] == ["5", "5"]
    # another model's unchanged rows are counted, not shown (--all shows them)
    assert not any(line.startswith("toy-seed1") for line in lines)
    assert "1 unchanged rows of other models not shown" in text
    assert any(
        line.startswith("toy-seed1/ioi accuracy")
        for line in render([first, second], every=True).splitlines()
    )
    assert "params changed:\n  none" in render([first, first])


def test_many_snapshots_keep_the_newest_that_fit() -> None:
    snaps = []
    for i in range(12):
        snap = Snapshot(f"c{i:06d}", f"run {i}", "2026-12-07", {"models.toy.source": "toy"})
        snap.values = headline_values(_summaries(i / 12, i))
        snaps.append(snap)
    text = render(snaps)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    assert "(6 older not shown: 6 columns fit 100 characters)" in text
    assert "c000011" in text and "c000005" not in text
