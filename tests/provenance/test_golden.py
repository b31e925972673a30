"""Bit-identical results on any x86-64 CPU with AVX2: a short training of the default
architecture and one LRP and one EAP/patching pass on it must give these sha256 values on
every machine CI runs on. A mismatch means the numerics pins (circuitlab.provenance.numerics)
no longer hold, or a change altered the numbers: the message says which part differs.

Regenerate, only after a change meant to alter results: `python tests/provenance/golden.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from circuitlab.provenance import numerics

HERE = Path(__file__).resolve().parent

# eap_scores and patched_kl regenerated 2026-12-02 (issue 14): the patch layer now mixes
# destination inputs around the mask's majority with matrix products (another summation
# order); training, weights and LRP did not change.
GOLDEN = {
    "weights": "8577acb821b0eb64b975e2a2088b9986df7cec2a209654a7a00109b09452bbda",
    "lrp_attribution": "aeb5dc5d58b4f92367eb7a8c151bd12cf51c2ee76015f670c8e8299e025a7426",
    "eap_scores": "4339a0082c37caa75b963117801d503337f12fbf3c26f6ba8eebb61be70d7ea1",
    "patched_kl": "ede1b9f5656487e81508a4788fb7eb5da7a2e2ef0b52151beb8a573ff114e180",
}

pytestmark = pytest.mark.slow  # trains a model (about 25 s)


def test_golden_fingerprint_matches_on_this_machine() -> None:
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINS}  # the defaults
    proc = subprocess.run(
        [sys.executable, str(HERE / "golden.py"), "--steps", "100"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    where = f"cpu={got['environment']['cpu']!r}, capability={got['environment']['cpu_capability']}"
    assert got["environment"]["pinned"], got["environment"]
    differ = {k: got[k] for k in GOLDEN if got[k] != GOLDEN[k]}
    assert not differ, f"golden hashes differ on this machine ({where}): {differ}"
