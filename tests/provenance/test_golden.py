"""Bit-identical results for a CPU family and for any thread count: a short training of the
default architecture and one LRP and one EAP/patching pass on it must give the committed sha256
values of this machine's CPU family, all four from the same set, and the same four values
whatever the number of training threads. A mismatch means the numerics pins
(circuitlab.provenance.numerics) no longer hold on this machine, or a change altered the
numbers: the message says which part differs.

Measured 2026-12-06 (BENCHMARKS.md, "Golden hashes across CPU vendors"): no MKL setting gives
an AMD EPYC and an Intel Xeon the same bits, so each family has its set. The pins changed on
2026-12-07 (issue 29: MKL's strict AVX2 branch, reproducible for any thread count, instead of
the SSE2 `COMPATIBLE` branch that was 2.4x slower and thread-count-bound), so the sets recorded
before are void; the Intel set below was recorded with the new pins. A family without a set
(AMD EPYC now) is not failed for its values — they are printed as a warning, to be recorded
from a run on that machine — but the thread-count check holds there too.

Regenerate, only after a change meant to alter results: `python tests/provenance/golden.py`
on each family's machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from circuitlab.provenance import numerics

HERE = Path(__file__).resolve().parent
PARTS = ("weights", "lrp_attribution", "eap_scores", "patched_kl")

#: CPU family (a substring of the CPU's model name) -> its four sha256 values under the pins
GOLDEN: dict[str, dict[str, str]] = {
    # Intel Xeon with AVX-512 FP16 (Sapphire Rapids class), recorded 2026-12-07 at the pins
    # of issue 29 (MKL_CBWR=AVX2,STRICT); eap_scores re-recorded for issue 31 (EAP sums its
    # edge products per prompt and block from destination-input gradients: the same scores,
    # summed in another order; tests/acdc/test_eap_memory.py checks them against the reference)
    "Intel(R) Xeon(R)": {
        "weights": "f1353d1a1d09b3caa06a180986c27522e2495876a35a0e740fc6be2a53e3a8c6",
        "lrp_attribution": "80ff7c85cafb45ef190d0b555ad499cb7c499327764871a9af1f2ff2361a55a4",
        "eap_scores": "091ac2b14ced27b35f186e32a1a2611523325e474a7346c37423d197818a5894",
        "patched_kl": "d27d7065cfd668f2b10d0f7bbcf0d743c2be861a9240e14f974b9642933c4872",
    },
}

pytestmark = pytest.mark.slow  # trains a model (about 25 s)


def golden(steps: int, threads: int | None = None) -> dict:
    """tests/provenance/golden.py in a fresh process under the default pins."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINS}  # the defaults
    more = ["--threads", str(threads)] if threads else []
    proc = subprocess.run(
        [sys.executable, str(HERE / "golden.py"), "--steps", str(steps), *more],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["environment"]["pinned"], got["environment"]
    return got


def test_golden_fingerprint_matches_on_this_machine() -> None:
    got = golden(100)
    cpu = got["environment"]["cpu"]
    where = f"cpu={cpu!r}, capability={got['environment']['cpu_capability']}"
    parts = {k: got[k] for k in PARTS}
    family = next((f for f in GOLDEN if f in cpu), None)
    if family is None:
        warnings.warn(f"no golden set recorded for {where}: record {parts}", stacklevel=1)
        return
    differ = sorted(k for k in PARTS if GOLDEN[family][k] != parts[k])
    assert not differ, (
        f"golden hashes differ on this machine ({where}) from its family's ({family}) in "
        f"{differ}; this machine gives {parts}"
    )


def test_the_results_do_not_depend_on_the_number_of_training_threads() -> None:
    """1 and 3 threads (3: more than this project's 2-core machines have) give the same bits
    in every part: training may use every core a machine has. MKL's AVX2 branch, strict for
    any thread count, exists on Intel CPUs only (elsewhere MKL takes its automatic branch,
    per Intel's documentation; not measured here): on another CPU a difference is a warning
    that says to fix `training.threads` there."""
    one, three = golden(30, threads=1), golden(30, threads=3)
    same = {k: one[k] for k in PARTS} == {k: three[k] for k in PARTS}
    if "Intel" not in one["environment"]["cpu"] and not same:  # the CPU's model name
        warnings.warn(
            "on this non-Intel CPU the results depend on the number of training threads: set "
            "models.<name>.training.threads in the config to make them machine-independent",
            stacklevel=1,
        )
        return
    assert same, {k: (one[k][:12], three[k][:12]) for k in PARTS}
