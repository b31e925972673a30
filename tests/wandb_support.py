"""Reading an offline W&B run as the tests check it (the `.wandb` file wandb-core writes)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any


def wandb_records(path: Path) -> list[Any]:
    """Records of a W&B transaction log (`run-<id>.wandb`).

    wandb 0.31 writes no `files/wandb-summary.json` for offline runs; everything lives in this
    file: a 7-byte header (b":W&B", magic 0xBEE1, version 0), then LevelDB-log framing (32 KiB
    blocks; chunks with a 7-byte header: crc32c, length, type FULL/FIRST/MIDDLE/LAST), each record
    a serialised `wandb_internal_pb2.Record`.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        chunk, pos = data[pos : pos + length], pos + length
        if len(chunk) < length:  # still being written
            break
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def offline_run(root: Path) -> dict[str, Any]:
    """The single offline run under `root/logs/wandb/`: run fields, config, summary, history."""
    runs = sorted((root / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    return read_run(runs[0])


def read_run(path: Path) -> dict[str, Any]:
    """One offline run's `.wandb` file: run fields, config, summary, history.

    `run.finish()` returns before wandb-core has flushed the file; wait for the exit record.
    """
    deadline = time.monotonic() + 20
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, f"{path} has no exit record"
        time.sleep(0.05)
    run: dict[str, Any] = {"config": {}, "summary": {}, "history": []}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.update(project=r.project, group=r.run_group, job_type=r.job_type)
            run.update(name=r.display_name, tags=list(r.tags))
            run["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "config":
            run["config"].update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "summary":
            for u in rec.summary.update:
                key = u.key or "/".join(u.nested_key)
                run["summary"][key] = json.loads(u.value_json)
        elif kind == "history":
            row = {
                "/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item
            }
            run["history"].append(row)
    return run
