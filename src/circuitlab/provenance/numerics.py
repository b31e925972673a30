"""The numerics pins every job runs under, and the record of the environment a result came from.

On a CPU, the same torch wheel computes different floats on different x86-64 machines: ATen
picks its vectorised kernels by the CPU's instruction set (AVX2 or AVX-512), MKL picks its
GEMM code path by CPU model and vendor and, unless told otherwise, splits its work by the
thread count, and oneDNN does the same. Measured on this project's toy training
(`tests/benchmarks/bench_numerics.py`, BENCHMARKS.md "Numerics"), ATen's choice and MKL's
choice each change the trained weights. `PINS` fixes them:

* ``ATEN_CPU_CAPABILITY=avx2``: ATen's AVX2 kernels even where AVX-512 exists;
* ``MKL_CBWR=AVX2,STRICT``: MKL's AVX2 reproducible branch in strict mode, which gives the same
  bits for any number of threads (measured: 1, 2, 4, 8 threads, the same weights;
  `tests/provenance/test_golden.py` checks 1 against 3), so training may use every core.
  Intel documents the branch as the same on Intel CPUs with AVX2; on other vendors MKL runs
  its automatic branch instead (Intel's documentation; not measured here). Until issue 29 the
  pin was ``COMPATIBLE`` (SSE2), meant to give every vendor the same bits: measured, it did not (an AMD EPYC and an Intel Xeon differ,
  BENCHMARKS.md "Golden hashes across CPU vendors"), and it made training 2.4x slower;
* ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's kernels capped at AVX2;
* ``CUBLAS_WORKSPACE_CONFIG=:4096:8``: no effect on a CPU. On CUDA, cuBLAS is deterministic
  only with a fixed workspace, and reads the variable when it starts: set here, before torch
  is imported, so a job that runs on a GPU (`set_determinism`) has it whatever initialises CUDA;
* ``GOMP_SPINCOUNT=3000``: not numerics — an OpenMP thread waiting at a barrier spins briefly,
  then sleeps. Measured on the toy training (2 threads, 2 cores): 0.081 s per step idle and
  0.172 s with one busy process beside it, against 0.111 / 0.135 s for sleeping at once
  (``OMP_WAIT_POLICY=PASSIVE``, the pin before issue 29) and 0.074 / 0.246 s for spinning
  longer (10,000).

The thread count of each job is fixed by its rule (training: every core up to 8; the other
rules one), and the results do not depend on it. `apply` sets the pins as defaults before
torch is imported: the CLI entry point, the Snakefile and the test suite call it, so every job
inherits them. A variable already set in the environment wins (e.g. ``MKL_CBWR=AUTO``);
`environment` records what was in effect, and every metrics file and W&B run carries that
record (`circuitlab.tracking`).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "GOMP_SPINCOUNT": "3000",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}


def apply(environ: Any = None) -> dict[str, str]:
    """Set every pin that the environment does not already set; returns what is in effect.

    Must run before torch is imported to take effect in this process (ATen and MKL read these
    once); child processes inherit them either way."""
    env = os.environ if environ is None else environ
    for key, value in PINS.items():
        env.setdefault(key, value)
    return {key: env[key] for key in PINS}


def pinned() -> bool:
    """Whether this process runs with exactly the default pins."""
    return all(os.environ.get(k) == v for k, v in PINS.items())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@lru_cache(maxsize=1)
def git_state(root: str | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository at ``root``
    (default: the checkout holding this package's ``src/``); None where git or a repository is
    missing (e.g. an installed wheel)."""
    where = Path(root) if root else Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "src",
                "workflow",
                "Snakefile",
                "config",
                # written by every run (DVC's params file): the config files themselves count
                ":(exclude)config/resolved.yaml",
                "pyproject.toml",
            ],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """What a result depends on besides its inputs, config and code: library versions, the CPU
    and the code paths in use, the thread count, the pins, the git state. The code path and
    thread count are those of torch in this process (imported here if the job did not: a job
    forked from the warm process, `circuitlab.warm`, has it either way, and the record must
    not depend on where the job ran); None where torch is not installed."""
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            torch = None
    return {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "platform": f"{sys.platform}-{platform.machine()}",
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability() if torch else None,
        "threads": torch.get_num_threads() if torch else None,
        "cuda": torch.version.cuda if torch and torch.cuda.is_available() else None,
        "pins": {key: os.environ.get(key) for key in PINS},
        "pinned": pinned(),
        **git_state(),
    }


def set_determinism(device: Any) -> None:
    """On a CUDA ``device``: deterministic kernels, and no TF32 (an fp32 matmul or convolution
    in TF32 keeps 10 mantissa bits, and whether it is used depends on the GPU generation).
    Nothing is changed for a CPU device (the pins above are the CPU's determinism).

    ``torch.use_deterministic_algorithms(True, warn_only=True)``: an op with no deterministic
    CUDA kernel warns (in the job's log) instead of failing the job; that warning says the
    result of that job may vary between runs. ``CUBLAS_WORKSPACE_CONFIG`` is one of `PINS`
    (it must be set before cuBLAS starts); if a caller removed it, it is set here, which
    still holds when this runs before the first CUDA operation (a stage calls this before
    loading its model)."""
    import torch

    if torch.device(device).type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", PINS["CUBLAS_WORKSPACE_CONFIG"])
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def device_record(device: Any, dtype: Any) -> dict[str, Any]:
    """The device and dtype a stage ran its model on, for its provenance: on CUDA also the GPU
    model and compute capability and the CUDA and cuDNN versions, on which a GPU result's bits
    depend (README, "Determinism on a GPU")."""
    import torch

    device = torch.device(device)
    record: dict[str, Any] = {"device": str(device), "dtype": str(dtype).removeprefix("torch.")}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        record |= {
            "gpu": torch.cuda.get_device_name(index),
            "capability": f"{major}.{minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "tf32": torch.backends.cuda.matmul.allow_tf32,
        }
    return record
