"""The network guard used by the offline pipeline test really catches connections: a guarded
process that tries to reach another host is refused and logged, loopback still works, and an
HTTP client that honours the proxy variables lands in the recorder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline_support import guard_events, network_guard

PROBE = r"""
import socket, urllib.request
out = []
try:
    socket.create_connection(("example.com", 80), timeout=2)
    out.append("dns+connect: open")
except OSError as e:
    out.append("dns+connect: " + type(e).__name__)
s = socket.socket()
try:
    s.connect(("93.184.215.14", 443))
    out.append("ip connect: open")
except OSError as e:
    out.append("ip connect: " + type(e).__name__)
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
c = socket.create_connection(srv.getsockname(), timeout=2); c.close(); srv.close()
out.append("loopback: ok")
try:
    urllib.request.urlopen("http://example.com/", timeout=2)
except Exception as e:
    out.append("http via proxy: " + type(e).__name__)
print("|".join(out))
"""


def test_guard_refuses_and_logs_remote_connections(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    with network_guard(log) as (env, hits):
        proc = subprocess.run(
            [sys.executable, "-c", PROBE],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        recorded = list(hits)
    assert proc.returncode == 0, proc.stderr
    result = proc.stdout.strip().split("|")
    assert result[0] == "dns+connect: gaierror"
    assert result[1] == "ip connect: ConnectionRefusedError"
    assert result[2] == "loopback: ok"
    assert result[3].startswith("http via proxy:")
    kinds = [e["kind"] for e in guard_events(log)]
    assert kinds[:3] == ["armed", "getaddrinfo", "connect"]
    assert any("example.com" in h for h in recorded), recorded


def test_unarmed_without_the_log_variable(tmp_path: Path) -> None:
    with network_guard(tmp_path / "events.jsonl") as (env, _):
        env = {k: v for k, v in env.items() if k != "CIRCUITLAB_NETGUARD_LOG"}
        proc = subprocess.run(
            [sys.executable, "-c", "import socket; print(type(socket.socket.connect).__name__)"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.stdout.strip() == "method_descriptor"  # the C method, not the guard's function
