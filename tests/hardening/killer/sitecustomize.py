"""Kill the process mid-write, loaded by Python processes started with this folder on PYTHONPATH.

``CIRCUITLAB_KILL_AT=write:SUBSTRING`` — the first `Path.write_text`/`write_bytes` to a path
containing SUBSTRING writes half of its data, flushes it to disk, and the process SIGKILLs
itself (no `finally`, no cleanup: what a node failure or the OOM killer does).
``CIRCUITLAB_KILL_AT=replace:SUBSTRING`` — SIGKILL just before `os.replace` onto such a path
(the artifact is complete in its temporary place but not yet renamed).
"""

from __future__ import annotations

import os
import pathlib
import signal

_SPEC = os.environ.get("CIRCUITLAB_KILL_AT", "")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(mode: str, needle: str) -> None:
    if mode == "write":
        real_text, real_bytes = pathlib.Path.write_text, pathlib.Path.write_bytes

        def write_text(self: pathlib.Path, data: str, *args: object, **kwargs: object) -> int:
            if needle not in str(self):
                return real_text(self, data, *args, **kwargs)  # type: ignore[arg-type]
            return write_bytes(self, data.encode())

        def write_bytes(self: pathlib.Path, data: bytes) -> int:
            if needle not in str(self):
                return real_bytes(self, data)
            with open(self, "wb") as fh:
                fh.write(bytes(data)[: max(1, len(data) // 2)])
                fh.flush()
                os.fsync(fh.fileno())
            _die()
            return 0

        pathlib.Path.write_text = write_text  # type: ignore[method-assign]
        pathlib.Path.write_bytes = write_bytes  # type: ignore[method-assign]
    elif mode == "replace":
        real_replace = os.replace

        def replace(src: object, dst: object, *args: object, **kwargs: object) -> None:
            if needle in os.fspath(dst):  # type: ignore[arg-type]
                _die()
            real_replace(src, dst, *args, **kwargs)  # type: ignore[arg-type]

        os.replace = replace  # type: ignore[assignment]


if ":" in _SPEC:
    _mode, _needle = _SPEC.split(":", 1)
    _arm(_mode, _needle)
