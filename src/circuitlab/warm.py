"""One warm process per pipeline run: the heavy libraries imported once, every job forked from it.

Every Snakemake job is a `circuitlab <command>` process, and importing torch, transformers'
model code and W&B costs about 4.5 s of CPU per process here — more than many stages compute
(BENCHMARKS.md, "make reproduce in 12 minutes"). A local run starts one server when the
Snakefile is read (`start`). The server imports those third-party libraries — never the
package's own modules, so each job still loads (and `CIRCUITLAB_TRACE_MODULES` still traces)
exactly the package code its command runs — and listens on a Unix socket in a private
temporary folder. The `circuitlab` process of each job (`delegate`) sends its arguments,
working directory, environment and standard streams; the server forks, and the child runs the
command as the job's own process would have. The child's exit status — its code, or the signal
that ended it — comes back to the job's process, which ends the same way. A signal the job's
process receives (Snakemake stopping a run) goes to the child, and a job process that dies takes
its child with it, before the job's outputs are looked at.

Results are bit-identical to a fresh process (tests/integration/test_determinism.py runs the
pipeline once each way and compares every artifact): the server never computes with torch, so
each child starts its own OpenMP and MKL state; the child takes torch's thread count from the
job's ``OMP_NUM_THREADS``, as a fresh process would. A job whose environment differs from the
server's in a variable that a library reads when it is imported (`import_time_env`) is refused
and runs in its own process, as it would without a server. ``CIRCUITLAB_WARM=0`` turns the
server off; a dry run, a report and a cluster node never start one (`circuitlab.provenance.guard.acts`).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV = "CIRCUITLAB_WARM"  # the server's socket in a job's environment; "0" turns it off
#: third-party modules the server imports (what a stage imports that costs time; each optional)
PRELOAD = (
    "numpy",
    "torch",
    "safetensors.torch",
    "tokenizers",
    "transformers",
    "transformers.modeling_utils",
    "transformers.models.llama.modeling_llama",
    "transformers.models.gpt2.modeling_gpt2",
    "transformers.models.qwen2.modeling_qwen2",
    "transformers.models.mistral.modeling_mistral",
    "transformers.models.gemma.modeling_gemma",
    "wandb",
    "scipy.stats",
    "matplotlib.pyplot",
    "yaml",
    "pydantic",
    "typer",
    "rich.console",
)
#: variables read when those libraries are imported (or that change what is imported): a job
#: whose value differs from the server's runs in its own process
_IMPORT_TIME = (
    "PYTHON",
    "HF_",
    "TRANSFORMERS_",
    "TORCH",
    "PYTORCH_",
    "MKL_",
    "KMP_",
    "GOMP_",
    "OMP_",
    "ATEN_",
    "ONEDNN_",
    "DNNL_",
    "CUDA_",
    "CUBLAS_",
    "WANDB_",
    "MPL",
    "TOKENIZERS_",
    "LD_",
    "CIRCUITLAB_NETGUARD",
    "CIRCUITLAB_KILL",
    "SLURM_JOB_ID",  # not read at import: a job of another allocation must run there
)
_PER_JOB = ("_NUM_THREADS", "_MAXIMUM_THREADS")  # Snakemake sets these per job: the child applies
_MAX_MESSAGE = 1 << 20
_forked = False  # True in a job forked from the server


def in_warm_process() -> bool:
    """Whether this process is a job forked from a warm server."""
    return _forked


def import_time_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that libraries read at import (less the per-job thread counts),
    and ``SLURM_JOB_ID`` (a job of another allocation must run there, not here)."""
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME) and not k.endswith(_PER_JOB)}


def refusal(request: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str | None:
    """Why the server cannot run this job for its process (None: it can)."""
    env = os.environ if env is None else env
    if request.get("executable") != sys.executable:
        return f"another Python ({request.get('executable')})"
    ours, theirs = import_time_env(env), import_time_env(request.get("env", {}))
    differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    return f"environment differs in {', '.join(differ)}" if differ else None


# ---------------------------------------------------------------------------- the job's side


def _send(sock: socket.socket, message: Mapping[str, Any]) -> None:
    sock.send(json.dumps(message).encode())


def _receive(sock: socket.socket) -> dict[str, Any] | None:
    data = sock.recv(_MAX_MESSAGE)
    return json.loads(data) if data else None


def delegate(entry: str, argv: list[str]) -> int | None:
    """Run the entry point ``entry`` (``"module:function"``, the process's own: the server does
    not know the CLI) with ``argv`` in the warm server named by ``CIRCUITLAB_WARM``: the exit
    code (after the job's process has been killed by the signal that killed the command, where
    one did). None when there is no server or it refuses the job: run it here."""
    path = os.environ.get(ENV, "")
    if path in ("", "0"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    streams = [fd for fd in (0, 1, 2) if _open(fd)]
    env = {k: v for k, v in os.environ.items() if k != ENV}
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)  # `python -m …` or a script
    request = {
        "entry": entry,
        "argv": argv,
        "argv0": sys.argv[0],
        "main": spec.name if spec else None,
        "cwd": os.getcwd(),
        "env": env,
        "executable": sys.executable,
        "streams": streams,
    }
    try:
        socket.send_fds(sock, [json.dumps(request).encode()], streams)
        reply = _receive(sock)
    except OSError:
        reply = None
    if reply is None or "refused" in reply:
        sock.close()
        why = "the warm process ended" if reply is None else reply["refused"]
        sys.stderr.write(f"circuitlab: this job runs in its own process ({why})\n")
        return None

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            _send(sock, {"signal": signum})

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    status = None
    while status is None:
        try:
            message = _receive(sock)
        except OSError:
            message = None
        if message is None:  # the server died: the command's end is unknown
            sys.stderr.write("circuitlab: the warm process ended while running this job\n")
            return 1
        status = message.get("status")
    if status < 0:  # killed by a signal: end the job's process the same way
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return int(status)


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------- the server's side


@dataclass
class _Job:
    pid: int
    pidfd: int
    conn: socket.socket | None


def preload() -> list[str]:
    """Import `PRELOAD`; returns the modules that are not installed."""
    import importlib

    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:
            missing.append(name)
    return missing


def serve(path: str, parent: int) -> None:
    """Accept jobs on the Unix socket ``path`` until SIGTERM or until process ``parent`` (the
    Snakemake run) ends."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)  # jobs that connect now wait in the backlog until the imports are done
    listener.listen(64)
    started_with = dict(os.environ)  # importing torch sets variables of its own
    preload()
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches each job through its process
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    jobs: dict[int, _Job] = {}  # by pidfd
    try:
        while not stopping and os.getppid() == parent:
            for key, _ in sel.select(timeout=0.5):
                try:  # one job's trouble must not end the server (its jobs die with it)
                    if key.data is None:
                        _accept(listener, sel, jobs, started_with)
                    elif key.data[1].pidfd not in jobs:
                        continue  # ended earlier in this same batch of events
                    elif key.data[0] == "conn":
                        _from_job(key.data[1], sel)
                    else:
                        _ended(key.data[1], sel, jobs)
                except Exception:
                    import traceback

                    traceback.print_exc()
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _accept(
    listener: socket.socket,
    sel: selectors.BaseSelector,
    jobs: dict[int, _Job],
    env: Mapping[str, str],
) -> None:
    conn, _ = listener.accept()
    conn.settimeout(10)  # the request comes at once; a stalled client must not stall the rest
    try:
        data, fds, _flags, _addr = socket.recv_fds(conn, _MAX_MESSAGE, 3)
        request = json.loads(data)
    except (OSError, ValueError):
        conn.close()
        return
    why = refusal(request, env)
    if why is not None or len(fds) != len(request.get("streams", ())):
        _send(conn, {"refused": why or "standard streams missing"})
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        inherited = [listener.fileno(), conn.fileno(), *(j.pidfd for j in jobs.values()),
                     *(j.conn.fileno() for j in jobs.values() if j.conn)]  # fmt: skip
        _child(request, fds, inherited)
    for fd in fds:
        os.close(fd)
    conn.settimeout(None)
    job = _Job(pid, os.pidfd_open(pid), conn)
    jobs[job.pidfd] = job
    sel.register(conn, selectors.EVENT_READ, ("conn", job))
    sel.register(job.pidfd, selectors.EVENT_READ, ("exit", job))
    with contextlib.suppress(OSError):
        _send(conn, {"pid": pid})


def _from_job(job: _Job, sel: selectors.BaseSelector) -> None:
    """A signal to pass on, or the job's process gone (then its command goes too)."""
    assert job.conn is not None  # unregistered when closed: no event comes for it after
    try:
        message = _receive(job.conn)
    except (OSError, ValueError):
        message = None
    if message is None:
        sel.unregister(job.conn)
        job.conn.close()
        job.conn = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.pid, signal.SIGKILL)
    elif "signal" in message:
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.pid, int(message["signal"]))


def _ended(job: _Job, sel: selectors.BaseSelector, jobs: dict[int, _Job]) -> None:
    _, status = os.waitpid(job.pid, 0)
    sel.unregister(job.pidfd)
    os.close(job.pidfd)
    del jobs[job.pidfd]
    if job.conn is not None:
        with contextlib.suppress(OSError):
            _send(job.conn, {"status": os.waitstatus_to_exitcode(status)})
        sel.unregister(job.conn)
        job.conn.close()
        job.conn = None


def _child(request: Mapping[str, Any], fds: list[int], inherited: list[int]) -> None:
    """Become the job's command: its streams, folder, environment, arguments and threads."""
    global _forked
    _forked = True
    code = 1
    try:
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        _die_with_server()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip(request["streams"], fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _as_invoked(request)
        _fresh_state()
        code = _run(request["entry"])
    except BaseException:  # a bug here must still end the child
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _die_with_server() -> None:
    """Linux: this job is killed if the server dies first (its job's process then reports a
    failure, and nothing may write outputs after that)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _as_invoked(request: Mapping[str, Any]) -> None:
    """``sys.argv`` and ``__main__``'s module spec of the job's process (click names the
    program in its messages from them)."""
    import importlib.util

    sys.argv = [request.get("argv0") or "circuitlab", *request["argv"]]
    main = sys.modules["__main__"]
    name = request.get("main")
    main.__spec__ = importlib.util.find_spec(name) if name else None
    main.__package__ = main.__spec__.parent if main.__spec__ else None


def _fresh_state() -> None:
    """What a fresh process would start with that the fork copied from the server."""
    import random
    import tempfile

    random.seed()
    tempfile.tempdir = None  # the job's TMPDIR
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(int(threads))
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(threads))  # numpy's BLAS pool was sized by the server's start


def _run(entry: str) -> int:
    """Call the entry point ``"module:function"``: its exit code, after the interpreter's exit
    handlers have run."""
    import atexit
    import importlib
    import threading

    module, function = entry.split(":")
    code = 1
    try:
        getattr(importlib.import_module(module), function)()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            sys.stderr.write(f"{exc.code}\n")
    except BaseException:  # as an uncaught exception ends a fresh process: traceback, code 1
        sys.excepthook(*sys.exc_info())
    finally:  # what the interpreter does on its way out: join threads, run exit handlers
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    return code


# ---------------------------------------------------------------------------- the run's side


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    path: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            Path(self.path).parent.rmdir()


def start(env: dict[str, str] | None = None, *, timeout: float = 120.0) -> Server | None:
    """Start a server for this process's jobs and name it in ``env`` (default: this process's
    environment, which the jobs inherit). None where ``CIRCUITLAB_WARM=0``, where a server
    is already named, or where it does not come up (the jobs then run as their own processes)."""
    env = os.environ if env is None else env
    if env.get(ENV, "") != "" or not hasattr(os, "pidfd_open") or not hasattr(os, "fork"):
        return None
    folder = tempfile.mkdtemp(prefix="circuitlab-warm-")  # mode 0700: this user's jobs only
    path = os.path.join(folder, "socket")
    process = subprocess.Popen(
        # -P: not the working folder first on sys.path, as for the `circuitlab` command (a
        # module there must not shadow a library in the jobs)
        [sys.executable, "-P", "-m", "circuitlab.warm", "serve", path, str(os.getpid())],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal reaches the jobs, not the server
    )
    server = Server(process, path)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            return None
        time.sleep(0.05)
    env[ENV] = path
    return server


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "serve":
    # through the package's module, not this `__main__` copy: the jobs read its state
    from circuitlab import warm

    warm.serve(sys.argv[2], int(sys.argv[3]))
