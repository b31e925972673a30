"""Network guard, loaded by every Python process started with this folder on PYTHONPATH.

Armed when ``CIRCUITLAB_NETGUARD_LOG`` names a file: any attempt to open a connection to, or
resolve, a host other than this machine (loopback or a Unix socket: W&B's own local service)
raises ``ConnectionRefusedError`` and is appended to that file as one JSON line. Each process
that arms the guard also writes an ``armed`` line, so a test can tell that the guard really
ran in the stage processes and was not silently skipped.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys

_LOG = os.environ.get("CIRCUITLAB_NETGUARD_LOG", "")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _record(kind: str, target: object) -> None:
    line = json.dumps(
        {"pid": os.getpid(), "kind": kind, "target": repr(target), "argv": sys.argv[:3]}
    )
    with open(_LOG, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _is_local_host(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str) or host.lower() in _LOCAL_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a host name other than localhost: resolving it is network access
    return addr.is_loopback or addr.is_unspecified


def _is_local_address(family: int, address: object) -> bool:
    if family == getattr(socket, "AF_UNIX", None):
        return True
    if isinstance(address, tuple) and address:
        return _is_local_host(address[0])
    return False


def _arm() -> None:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> None:
        if not _is_local_address(self.family, address):
            _record("connect", address)
            raise ConnectionRefusedError(f"network guard: connect to {address!r} refused")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if not _is_local_address(self.family, address):
            _record("connect_ex", address)
            raise ConnectionRefusedError(f"network guard: connect to {address!r} refused")
        return real_connect_ex(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if not _is_local_host(host):
            _record("getaddrinfo", host)
            raise socket.gaierror(socket.EAI_NONAME, f"network guard: lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    # socket.create_connection resolves through socket.getaddrinfo and connects through
    # socket.socket.connect, so it is covered by the two patches above.
    _record("armed", sys.executable)


if _LOG:
    _arm()
