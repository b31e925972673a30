"""The accelerator check (`make gpu-check`): every stage on a real model shape on the device, the
same small case on the CPU, results compared within tolerance, timings and peak memory in one
JSON.

    python scripts/gpu_check.py [--device cuda] [--shape gpt2-small] [--dtype float32]
                                [--out data/gpu-check/gpt2-small-cuda.json]

Each leg is one whole pipeline run (Snakemake, the default profile) of the overlay
config/gpu-check.yaml in a fresh folder, with the model entry's ``shape``, ``dtype`` and
``device`` set for that leg: the *reference* leg on ``cpu``, the *device* leg on ``--device``.
Then every number of every metrics JSON (``data/metrics/``, provenance left out) and every edge
circuit (``data/circuits/``: scores, pass counts) of the two legs is compared, timings excepted,
with ``|a - b| <= atol + rtol·|b|`` (defaults: 1e-3 / 1e-4 in float32; 5e-2 / 5e-2 in bfloat16 or
float16, whose last bit is 4e-3). A result outside it is listed, and the exit code is 1.

``--device cpu`` runs both legs on the CPU: the whole check end to end without an accelerator
(the test suite does so at ``--shape tiny-llama``); there the legs must agree exactly, as the
pipeline is deterministic on one machine.

The JSON holds, per leg: the device (and GPU name), wall seconds of the run, wall and CPU
seconds and peak RSS per stage (the jobs' Snakemake benchmarks, cost_table.stage_costs), and on
CUDA the peak GPU memory in use during the run (``nvidia-smi`` sampled every 0.2 s: what every
job's process held, the CUDA context included); then the comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_table import stage_costs

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "config" / "gpu-check.yaml"
#: keys whose numbers measure the machine, not the result
TIMING = ("second", "wall", "rss", "cpu_time", "mtime")
#: (rtol, atol) by dtype
TOLERANCE = {"float32": (1e-3, 1e-4), "bfloat16": (5e-2, 5e-2), "float16": (5e-2, 5e-2)}


# --------------------------------------------------------------------------- one leg
def leg_workdir(base: Path, leg: str, overlay: dict[str, Any]) -> Path:
    """A fresh folder with the workflow, the config folder (shapes included) and the overlay."""
    work = base / leg
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copy(ROOT / "Snakefile", work / "Snakefile")
    shutil.copytree(ROOT / "workflow", work / "workflow")
    shutil.copytree(ROOT / "config", work / "config")
    (work / "gpu-check.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    return work


def leg_overlay(overlay: dict[str, Any], shape: str, dtype: str, device: str) -> dict[str, Any]:
    """The overlay with its (only) model entry's shape, dtype and device set."""
    models = {k: v for k, v in overlay["models"].items() if v is not None}
    if len(models) != 1:
        raise SystemExit(f"{OVERLAY} must enable exactly one model, got {sorted(models)}")
    name, entry = next(iter(models.items()))
    entry = {**entry, "shape": shape, "dtype": dtype, "device": device}
    return {**overlay, "models": {**overlay["models"], name: entry}}


class GpuMemory:
    """Peak memory in use on the visible GPUs (MiB), sampled with nvidia-smi while it runs."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak_mib, self.name = interval, 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _query(self, field: str) -> list[str]:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return [line.strip() for line in out.splitlines() if line.strip()]

    def _poll(self) -> None:
        while not self._stop.is_set():
            used = sum(int(v) for v in self._query("memory.used"))
            self.peak_mib = max(self.peak_mib, used)
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuMemory:
        self.name = ", ".join(self._query("name"))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_leg(work: Path, cores: int, device: str) -> dict[str, Any]:
    """One pipeline run in `work`; its timings and memory (SystemExit with the log's tail if
    it fails)."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "CIRCUITLAB_ROOT": str(work),
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("CIRCUITLAB_RUN_GROUP", None)
    cmd = [
        str(bin_dir / "snakemake"), "--cores", str(cores),
        "--workflow-profile", "workflow/profiles/default", "--configfile", "gpu-check.yaml",
    ]  # fmt: skip
    gpu = GpuMemory() if device.startswith("cuda") else None
    start = time.perf_counter()
    if gpu is not None:
        with gpu:
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    else:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the {device} leg failed in {work}:\n{proc.stderr[-4000:]}")
    model = next(p.name for p in (work / "data" / "models").iterdir() if p.is_dir())
    stages = {
        c.stage: {
            "jobs": c.jobs,
            "seconds": round(c.wall_s, 3),
            "cpu_seconds": None if c.cpu_s is None else round(c.cpu_s, 3),
            "peak_rss_mb": c.peak_rss_mb,
        }
        for c in sorted(stage_costs(work, model), key=lambda c: c.stage)
    }
    return {
        "device": device,
        "gpu": None if gpu is None else gpu.name,
        "peak_gpu_memory_mib": None if gpu is None else gpu.peak_mib,
        "wall_seconds": round(wall, 3),
        "stages": stages,
    }


# --------------------------------------------------------------------------- comparison
def numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a JSON value with its path, timings left out."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not any(t in str(k) for t in TIMING):
                yield from numbers(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(value, int | float) or value in ("inf", "-inf", "nan"):
        # a bool is an int; circuitlab writes infinities as the strings "inf" / "-inf"
        yield path, float(value)


def results(work: Path) -> dict[str, dict[str, float]]:
    """File (relative to data/) → path → number, for every metrics JSON and edge circuit."""
    from circuitlab.tracking import read_metrics

    out = {}
    for sub, read in (("metrics", read_metrics), ("circuits", _read_json)):
        for path in sorted((work / "data" / sub).rglob("*.json")):
            out[str(path.relative_to(work / "data"))] = dict(numbers(read(path)))
    return out


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def close(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def compare(
    ref: dict[str, dict[str, float]], got: dict[str, dict[str, float]], rtol: float, atol: float
) -> dict[str, Any]:
    """What differs between two legs' results: files or numbers on one side only, and numbers
    outside the tolerance (with both values)."""
    mismatches = []
    for name in sorted(ref.keys() & got.keys()):
        a, b = got[name], ref[name]
        for key in sorted(a.keys() | b.keys()):
            if key not in a or key not in b:
                mismatches.append(
                    {"file": name, "key": key, "only_in": "ref" if key in b else "device"}
                )
            elif not close(a[key], b[key], rtol, atol):
                mismatches.append({"file": name, "key": key, "device": a[key], "ref": b[key]})
    return {
        "rtol": rtol,
        "atol": atol,
        "files": len(ref.keys() & got.keys()),
        "numbers": sum(len(ref[f]) for f in ref.keys() & got.keys()),
        "missing_files": sorted(ref.keys() ^ got.keys()),
        "mismatches": mismatches,
    }


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="the checked leg's device (cpu: both on CPU)")
    p.add_argument("--shape", default="gpt2-small", help="a shape in config/shapes/")
    p.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    p.add_argument("--out", type=Path, help="default: data/gpu-check/<shape>-<device>.json")
    p.add_argument("--workdir", type=Path, help="where the two runs go (default: a temp folder)")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    out = args.out or ROOT / "data" / "gpu-check" / f"{args.shape}-{args.device}.json"
    base = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    overlay = yaml.safe_load(OVERLAY.read_text())
    legs = {}
    for leg, device in (("reference", "cpu"), ("device", args.device)):
        work = leg_workdir(base, leg, leg_overlay(overlay, args.shape, args.dtype, device))
        print(f"gpu-check: {leg} leg on {device} in {work}", flush=True)
        legs[leg] = (work, run_leg(work, args.cores, device))
    rtol, atol = TOLERANCE[args.dtype]
    comparison = compare(results(legs["reference"][0]), results(legs["device"][0]), rtol, atol)
    report = {
        "shape": args.shape,
        "dtype": args.dtype,
        "legs": {leg: info for leg, (_, info) in legs.items()},
        "comparison": comparison,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    bad = comparison["mismatches"] or comparison["missing_files"]
    print(
        f"gpu-check: {comparison['numbers']} numbers in {comparison['files']} files compared, "
        f"{len(comparison['mismatches'])} outside rtol {rtol} / atol {atol}; "
        f"{len(comparison['missing_files'])} files on one side only → {out}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
