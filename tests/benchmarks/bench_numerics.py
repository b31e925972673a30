"""Numerics pins and load: what each pin changes, what the pins cost, and how training degrades
when another process is busy on the cores.

Every measurement is a fresh child process (the pins must be set before torch is imported)
training the default architecture for a few steps on a small corpus; it reports the sha256 of
the weights and the seconds per step.

* pins: the weights with no pins, with ATen capped at AVX2 only, with all pins, and with all
  pins on a *simulated AVX2-only host* (MKL and oneDNN told to use no more than AVX2, as on a
  CPU without AVX-512). The check: the pinned weights equal the pinned weights on the
  simulated host (bit-identity across ISAs), while unpinned weights differ between the two
  (the problem the pins solve). The ratio: pinned / unpinned seconds per step (their cost).
* load: seconds per step idle and with one busy-loop competitor process, for the pinned wait
  (libgomp spins ``GOMP_SPINCOUNT`` times, then sleeps), OpenMP's PASSIVE policy (sleep at
  once: the pin before issue 29) and ACTIVE (spin for good).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Result = dict[str, Any]
HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
PIN_KEYS = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "ONEDNN_MAX_CPU_ISA",
    "GOMP_SPINCOUNT",
    "OMP_WAIT_POLICY",
)


@dataclasses.dataclass(frozen=True)
class Settings:
    steps: int = 100
    threads: int = 2

    @classmethod
    def make(cls, quick: bool, repeats: int | None = None) -> Settings:
        return cls(steps=15) if quick else cls()


def child(steps: int, threads: int) -> None:
    """In the child: train (`tests/provenance/golden.py`'s short training, the environment's
    pins as they are), print {hash, s_per_step, capability}."""
    sys.path.insert(0, str(ROOT / "tests" / "provenance"))
    import golden

    _, model, _, result, _ = golden.short_training(steps, threads=threads, warmup=5)
    import torch

    out = {
        "hash": golden.sha(*(v for _, v in sorted(model.state_dict().items())))[:16],
        "s_per_step": result.seconds / steps,
        "capability": torch.backends.cpu.get_cpu_capability(),
    }
    print(json.dumps(out))


def _run(settings: Settings, env: dict[str, str]) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if k not in PIN_KEYS}
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", str(settings.steps), str(settings.threads)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _busy() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(settings: Settings, log: Callable[[str], None]) -> list[Result]:
    from circuitlab.provenance.numerics import PINS

    avx2_host = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    variants = {
        "no pins (this host's ISA)": {},
        "no pins, simulated AVX2-only host": {**avx2_host, "ATEN_CPU_CAPABILITY": "avx2"},
        "ATen capped at AVX2 only": {"ATEN_CPU_CAPABILITY": "avx2"},
        "all pins": dict(PINS),
        "all pins, simulated AVX2-only host": {**avx2_host, **PINS},
        # where the cost is: the wait (no numerics effect) and MKL's branch
        "all pins but GOMP_SPINCOUNT unset": {
            k: v for k, v in PINS.items() if k != "GOMP_SPINCOUNT"
        },
        "all pins but MKL_CBWR=COMPATIBLE (the SSE2 branch pinned before issue 29)": {
            **PINS,
            "MKL_CBWR": "COMPATIBLE",
        },
    }
    got: dict[str, dict[str, Any]] = {}
    for name, env in variants.items():
        log(f"numerics: {name} …")
        got[name] = _run(settings, env)
    pinned, host = got["all pins"], got["all pins, simulated AVX2-only host"]
    free, free_avx2 = got["no pins (this host's ISA)"], got["no pins, simulated AVX2-only host"]
    pins_case: Result = {
        "case": "numerics pins",
        "setup": {"about": f"default architecture, {settings.steps} training steps, "
                  f"{settings.threads} threads; weights sha256[:16] per variant"},
        "timings": [
            {"name": f"{n}: {r['hash']} ({r['capability']})", "median_s": r["s_per_step"],
             "runs_s": [r["s_per_step"]]}
            for n, r in got.items()
        ],
        "ratios": [
            {"name": "cost of the pins (pinned / unpinned s per step)",
             "value": pinned["s_per_step"] / free["s_per_step"], "goal": None, "met": None},
        ],
        "checks": [
            {"name": "pinned weights identical on a simulated AVX2-only host",
             "detail": f"{pinned['hash']} vs {host['hash']}", "tolerance": "bit-identical",
             "passed": pinned["hash"] == host["hash"]},
            {"name": "(info) unpinned weights differ across the two hosts",
             "detail": f"{free['hash']} vs {free_avx2['hash']}", "tolerance": "info",
             "passed": True},
        ],
        "variants": got,
    }  # fmt: skip

    load: dict[str, dict[str, float]] = {}
    waits = {  # the pin (short spin, then sleep), sleeping at once, spinning for good
        f"GOMP_SPINCOUNT={PINS['GOMP_SPINCOUNT']} (the pin)": dict(PINS),
        "OMP_WAIT_POLICY=PASSIVE (the pin before issue 29)": {**PINS, "OMP_WAIT_POLICY": "PASSIVE"},
        "OMP_WAIT_POLICY=ACTIVE": {**PINS, "OMP_WAIT_POLICY": "ACTIVE"},
    }
    for policy, env in waits.items():
        log(f"load: {policy}, idle …")
        idle = _run(settings, env)["s_per_step"]
        competitor = _busy()
        try:
            time.sleep(0.5)
            log(f"load: {policy}, one busy competitor …")
            busy = _run(settings, env)["s_per_step"]
        finally:
            competitor.kill()
            competitor.wait()
        load[policy] = {"idle": idle, "busy": busy}
    ratios = [
        {"name": f"{p}: busy / idle s per step", "value": v["busy"] / v["idle"], "goal": None,
         "met": None}
        for p, v in load.items()
    ]  # fmt: skip
    load_case: Result = {
        "case": "training under load",
        "setup": {"about": f"pinned, {settings.threads} threads, one `while True` competitor"},
        "timings": [
            {"name": f"{p} {k}", "median_s": s, "runs_s": [s]}
            for p, v in load.items()
            for k, s in v.items()
        ],
        "ratios": ratios,
        "checks": [],
    }
    return [pins_case, load_case]


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--child":
    child(int(sys.argv[2]), int(sys.argv[3]))
