"""tracking: the metrics JSON (what DVC reads) and the W&B run (offline, read back from disk)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import torch

from circuitlab import tracking
from circuitlab.errors import ArtifactError, CircuitlabError, ConfigError
from wandb_support import offline_run

# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean W&B environment: no keys, no netrc, project root = tmp_path."""
    for var in (
        "WANDB_MODE",
        "WANDB_DISABLED",
        "WANDB_API_KEY",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_BASE_URL",
        "NETRC",
        "CIRCUITLAB_RUN_GROUP",
        "CIRCUITLAB_RULE",
        "CIRCUITLAB_WANDB_PROJECT",
    ):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CIRCUITLAB_ROOT", str(tmp_path))
    return tmp_path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Reject (and record) every Python-level connect to a non-loopback address."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                attempts.append(address)
                raise OSError(f"network access blocked in tests: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


class StageParams(pydantic.BaseModel):
    taus: tuple[float, ...] = (0.01, 0.1)
    faithfulness: str = "kl"
    out_dir: Path = Path("data/circuits")


METRICS = {
    "faithfulness": np.float32(0.75),
    "n_edges": torch.tensor(12),
    "diverged": float("nan"),
    "per_layer": {"l0": np.int64(3), "l1": float("inf"), "kept": True},
    "method": "acdc",
}
EXPECTED = {
    "diverged": None,
    "faithfulness": 0.75,
    "method": "acdc",
    "n_edges": 12,
    "per_layer": {"kept": True, "l0": 3, "l1": None},
}


# --------------------------------------------------------------------------- metrics JSON


def test_metrics_json_is_written_plain_and_deterministic(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = env / "data" / "metrics" / "acdc.json"

    written = tracking.log_metrics("acdc", METRICS, out)
    first = out.read_bytes()
    tracking.log_metrics("acdc", dict(reversed(METRICS.items())), out)

    assert written == EXPECTED
    assert out.read_bytes() == first  # same numbers, same bytes (sorted keys, no timestamps)
    assert tracking.read_metrics(out) == EXPECTED
    assert b"NaN" not in first and b"Infinity" not in first
    assert list(json.loads(first)) == sorted([*EXPECTED, "provenance"])
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left nothing behind


def test_every_metrics_file_records_its_provenance(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("MKL_CBWR", "AUTO")  # a pin overridden by the user is recorded as such
    out = env / "m.json"
    tracking.log_metrics("acdc", {"effect": 0.5}, out)
    record = tracking.read_provenance(out)
    envr = record["environment"]
    assert envr["pins"]["MKL_CBWR"] == "AUTO" and envr["pinned"] is False
    assert envr["torch"] and envr["transformers"] and envr["python"]
    assert len(envr["commit"]) == 40 and isinstance(envr["dirty"], bool)
    with pytest.raises(CircuitlabError, match="reserved"):
        tracking.log_metrics("acdc", {"provenance": 1}, out)


def test_provenance_names_the_command_that_made_the_result(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CLI command names itself while it runs and never after: a library call later in the
    same process (a test, a notebook) is not recorded as that command's result."""
    from cli_support import run

    monkeypatch.setenv("WANDB_MODE", "disabled")
    made = env / "cli.json"
    args = ("datasets", "--task", "sva", "--params", '{"n_train": 2, "n_test": 2}')
    ran = run(*args, "--out", env / "d.jsonl", "--metrics", made, cwd=env)
    assert ran.returncode == 0, ran.stderr
    assert tracking.read_provenance(made)["made_by"] == "circuitlab datasets"
    assert tracking.read_provenance(made)["code"]["command"] == "datasets"
    tracking.log_metrics("lrp_faithfulness", {"area": 0.5}, env / "lib.json")
    record = tracking.read_provenance(env / "lib.json")
    assert "code" not in record and not record["made_by"].startswith("circuitlab")
    assert "CIRCUITLAB_COMMAND" not in os.environ


def test_disabled_mode_writes_json_only(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracking.log_metrics(
        "steer", {"effect": 0.5}, env / "m.json", series={"loss": [1, 2]}, plots_out=env / "p.csv"
    )
    assert tracking.read_metrics(env / "m.json") == {"effect": 0.5}
    assert (env / "p.csv").read_text() == "step,loss\n0,1\n1,2\n"
    assert not (env / "logs").exists()


def test_series_plot_files(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    series = {"loss": torch.tensor([3.0, 2.0, float("nan")]), "eval": np.array([1.5])}
    tracking.log_metrics("model", {}, env / "m.json", series=series, plots_out=env / "p.json")
    assert json.loads((env / "p.json").read_text()) == [
        {"step": 0, "loss": 3.0, "eval": 1.5},
        {"step": 1, "loss": 2.0, "eval": None},
        {"step": 2, "loss": None, "eval": None},
    ]
    tracking.log_metrics("model", {}, env / "m.json", series=series, plots_out=env / "p.tsv")
    assert (env / "p.tsv").read_text() == "step\teval\tloss\n0\t1.5\t3.0\n1\t\t2.0\n2\t\t\n"


@pytest.mark.parametrize(
    ("metrics", "named"),
    [
        ({"curve": [1.0, 2.0]}, "'curve'"),
        ({"outer": {"inner": object()}}, "'outer/inner'"),
        ({"vec": torch.ones(2)}, "'vec'"),
        ({"z": 1j}, "'z'"),
        ({"raw": b"bytes"}, "'raw'"),
        ({3: 1.0}, "3"),
        ({"a/b": 1, "a": {"b": 2}}, "'a/b'"),
    ],
)
def test_bad_metric_values_raise_naming_the_key(
    env: Path, monkeypatch: pytest.MonkeyPatch, metrics: dict[Any, Any], named: str
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(CircuitlabError, match="stage 'acdc'") as info:
        tracking.log_metrics("acdc", metrics, env / "m.json")
    assert named in str(info.value)
    assert not (env / "m.json").exists()


def test_bad_series_and_options_raise(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = env / "m.json"
    with pytest.raises(CircuitlabError, match=r"\['loss'\] is both a metric and a series"):
        tracking.log_metrics("t", {"loss": 1.0}, out, series={"loss": [1.0]})
    with pytest.raises(CircuitlabError, match="series 'loss' step 1"):
        tracking.log_metrics("t", {}, out, series={"loss": [1.0, "x"]})
    with pytest.raises(CircuitlabError, match="without series"):
        tracking.log_metrics("t", {}, out, plots_out=env / "p.json")
    with pytest.raises(CircuitlabError, match="must end in"):
        tracking.log_metrics("t", {}, out, series={"loss": [1.0]}, plots_out=env / "p.png")
    assert not out.exists()  # every check runs before anything is written
    with pytest.raises(CircuitlabError, match="config value 'fn'"):
        tracking.log_metrics("t", {}, out, config={"fn": print})
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="WANDB_MODE='sometimes'"):
        tracking.log_metrics("t", {}, out)


def test_read_metrics_rejects_non_objects(env: Path) -> None:
    (env / "list.json").write_text("[1, 2]\n")
    with pytest.raises(ArtifactError, match="expected a JSON object"):
        tracking.read_metrics(env / "list.json")
    with pytest.raises(ArtifactError, match="does not exist"):
        tracking.read_metrics(env / "missing.json")


# --------------------------------------------------------------------------- W&B


def test_offline_run_holds_metrics_config_and_series(
    env: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[Any]
) -> None:
    monkeypatch.setenv("CIRCUITLAB_RUN_GROUP", "pipeline-42")
    monkeypatch.setenv("CIRCUITLAB_RULE", "acdc_edges")
    monkeypatch.setenv("CIRCUITLAB_WANDB_PROJECT", "circuitlab-test")

    tracking.log_metrics(
        "acdc",
        METRICS,
        env / "m.json",
        config=StageParams(),
        series={"loss": [3.0, 2.0, float("nan")]},
        tags={"model": "toy"},
        run_name="toy-ioi",
    )

    run = offline_run(env)
    assert (run["project"], run["group"]) == ("circuitlab-test", "pipeline-42")
    assert (run["job_type"], run["name"], run["tags"]) == (
        "acdc_edges",
        "acdc:toy-ioi",
        ["model=toy"],
    )
    config = {k: v for k, v in run["config"].items() if k != "_wandb"}
    # the run's config holds the stage's parameters and the same provenance record as the file
    assert config.pop("provenance") == tracking.read_provenance(env / "m.json")
    assert config == {"taus": [0.01, 0.1], "faithfulness": "kl", "out_dir": "data/circuits"}
    summary = run["summary"]
    assert summary["faithfulness"] == 0.75 and summary["n_edges"] == 12
    assert summary["per_layer/l0"] == 3 and summary["per_layer/kept"] is True
    assert summary["diverged"] is None and summary["per_layer/l1"] is None
    assert summary["method"] == "acdc"
    assert [(h["_step"], h["loss"]) for h in run["history"]] == [(0, 3.0), (1, 2.0), (2, None)]
    assert not list((env / "logs" / "wandb").glob("offline-run-*/files/*"))  # no code/requirements
    assert no_network == []


def test_online_without_key_falls_back_to_offline(
    env: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[Any]
) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    (env / "home" / ".netrc").write_text("machine example.org login user password secret\n")

    with pytest.warns(tracking.TrackingWarning, match="no W&B API key"):
        tracking.log_metrics("blacklist", {"n_universal": 7}, env / "m.json")

    assert offline_run(env)["summary"]["n_universal"] == 7
    assert tracking.run_group().startswith("adhoc-")  # no CIRCUITLAB_RUN_GROUP: one per process
    assert no_network == []


def test_credentials_are_detected_without_wandb(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    (env / "home" / ".netrc").write_text("machine api.wandb.ai login user password k3y\n")
    assert tracking.resolve_mode() == "online"
    (env / "home" / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k3y")
    assert tracking.resolve_mode() == "online"


def test_online_start_failure_falls_back_to_offline(
    env: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[Any]
) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    real_init = wandb.init

    def init(*args: Any, settings: Any, **kwargs: Any) -> Any:
        if settings.mode == "online":
            raise wandb.errors.CommError("server unreachable")
        return real_init(*args, settings=settings, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    with pytest.warns(tracking.TrackingWarning, match="server unreachable"):
        tracking.log_metrics("compare", {"cosine": 0.25}, env / "m.json")
    assert offline_run(env)["summary"]["cosine"] == 0.25
    assert no_network == []


def test_the_runs_record_holds_every_metric_the_config_the_hashes_and_the_page(
    env: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[Any]
) -> None:
    """`circuitlab record` (the pipeline's last job): one W&B run with every metrics file of
    the run flattened under its path, the resolved config, the md5 of each file it summarises
    (DVC 3's file hash) and a copy of the report page; the same metrics in the record JSON."""
    import hashlib

    from circuitlab.tracking.record import log_record

    monkeypatch.chdir(env)
    monkeypatch.setenv("CIRCUITLAB_RUN_GROUP", "run-1")
    a = env / "data" / "metrics" / "evaluate_model" / "toy" / "ioi.json"
    b = env / "data" / "metrics" / "steering" / "toy" / "summary.json"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracking.log_metrics("evaluate_model", {"test": {"accuracy": 0.9}}, a)
    tracking.log_metrics("steering_summary", {"counts": {"suppress": {"beat": 3}}}, b)
    page = env / "data" / "report" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html>report</html>")
    monkeypatch.setenv("WANDB_MODE", "offline")
    rel = [str(p.relative_to(env)) for p in (a, b)]
    out = env / "data" / "report" / "record.json"
    log_record(rel, out, config={"seed": 0, "compare": {"top_k": 50}}, attach=[page])

    assert tracking.read_metrics(out) == {
        "evaluate_model/toy/ioi": {"test": {"accuracy": 0.9}},
        "steering/toy/summary": {"counts": {"suppress": {"beat": 3}}},
    }
    run = offline_run(env)
    assert (run["name"], run["group"]) == ("record", "run-1")
    assert run["summary"]["evaluate_model/toy/ioi/test/accuracy"] == 0.9
    assert run["summary"]["steering/toy/summary/counts/suppress/beat"] == 3
    assert run["config"]["config"] == {"seed": 0, "compare": {"top_k": 50}}
    md5 = {p: hashlib.md5((env / p).read_bytes()).hexdigest() for p in rel}
    md5[str(page)] = hashlib.md5(page.read_bytes()).hexdigest()
    assert run["config"]["inputs_md5"] == md5
    assert run["config"]["provenance"]["environment"]["commit"]
    kept = list((env / "logs" / "wandb").glob("offline-run-*/files/index.html"))
    assert [k.read_text() for k in kept] == ["<html>report</html>"]
    with pytest.raises(ArtifactError, match="missing"):
        log_record([*rel, "data/metrics/gone.json"], out, config={})
    assert no_network == []
