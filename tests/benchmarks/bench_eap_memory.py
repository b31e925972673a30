"""EAP's memory at a real model's shape: the bytes autograd saves for the backward, measured
against `circuitlab.acdc.memory.saved_bytes`, for the destination-input path (what EAP, EAP-IG
and guided group testing run) and the per-edge mask path (what they ran before, and what the
TransformerLens backend still runs), with the wall time of each, in one process.

    .venv/bin/python tests/benchmarks/bench_eap_memory.py --model RUN/data/models/gpt2-small.json \\
        --data RUN/data/datasets/gpt2-small/ioi.jsonl --prompts 4 --steps 1 5

The model is one a scale run built (config/scale-*.yaml: a random model of a published shape);
the prompts are the first ``--prompts`` train rows of the dataset. Writes one JSON line per
(path, IG steps) to stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

from circuitlab.acdc.backend import patchable
from circuitlab.acdc.batch import encode_pairs
from circuitlab.acdc.eap import _mask_gradient, eap_scores
from circuitlab.acdc.memory import measured_saved_bytes, saved_bytes
from circuitlab.acdc.patch import prepare
from circuitlab.models import load_model
from circuitlab.tasks.io import load_rows


def saved(fn: Callable[[], object], exclude: set[int]) -> tuple[int, float]:
    """(`measured_saved_bytes` of ``fn``, its wall seconds)."""
    start = time.perf_counter()
    return measured_saved_bytes(fn, exclude), time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5])
    p.add_argument("--paths", nargs="+", default=["probe", "mask"])
    args = p.parse_args()

    lm = load_model(args.model, tokenizer=True)
    pm = patchable(lm)
    rows = load_rows(args.data, rule="check_dataset", split="train")[: args.prompts]
    ctx = prepare(pm, encode_pairs(rows, lm.tokenizer), "resample")
    exclude = {q.untyped_storage().data_ptr() for q in lm.model.parameters()}
    b, s = ctx.batch.input_ids.shape
    gpt2 = lm.architecture == "GPT2LMHeadModel"
    style = {"rms_norm": not gpt2, "mlp": "gelu_new" if gpt2 else "gated"}
    for steps in args.steps:
        for path in args.paths:
            if path == "probe":
                run = lambda k=steps: eap_scores(ctx, "logit_diff", k, micro_batch=b)  # noqa: E731
            else:
                run = lambda k=steps: _mask_gradient(ctx, "logit_diff", k)  # noqa: E731
            measured, wall = saved(run, exclude)
            formula = saved_bytes(pm.dims, batch=b, seq=s, dtype=pm.dtype, path=path,
                                  ig_steps=steps, **style)  # fmt: skip
            print(
                json.dumps(
                    {
                        "model": lm.architecture,
                        "edges": pm.graph.n_edges,
                        "dtype": str(pm.dtype),
                        "prompts": b,
                        "tokens": s,
                        "path": path,
                        "ig_steps": steps,
                        "saved_measured_gib": round(measured / 2**30, 3),
                        "saved_formula_gib": round(formula / 2**30, 3),
                        "wall_s": round(wall, 2),
                        "process_peak_rss_gib": round(
                            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
                        ),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
