"""What a run cost, per stage, for one model of a finished run folder: a markdown table.

    python scripts/cost_table.py --model gpt2-small [--run .] [--out cost.md]

Read from the run (nothing is rerun):
* every job's Snakemake benchmark TSV (``data/benchmarks/<rule>/<model>…tsv``: ``s`` = wall
  seconds, ``cpu_time`` = CPU seconds, ``max_rss`` = peak resident memory in MB), summed (time)
  or maxed (memory) per stage; ACDC discovery (`acdc_circuit`) is one stage per method;
* each ACDC artifact's pass counts (``data/circuits/<model>/<task>/<method>.json``:
  ``n_forward``, ``n_backward``) and its graph size (``edges``).

Measured here, once: one plain forward of the model (loaded through its reference, as every
stage loads it) on the batch ACDC discovers on — the first ``--prompts`` train prompts of
``--task`` — as the median of ``--repeats`` runs after a warm-up (as
tests/benchmarks/bench_acdc.py's ``plain_forward_s``), on ``--threads`` CPU threads (default 1:
Snakemake runs each job with ``OMP_NUM_THREADS`` set to its rule's ``threads``, 1 for every
stage but the toy's training, so the jobs' times are single-thread times and the forward they
are divided by must be too). A stage's work in forward-equivalents (fwd-eq) is then its pass
count (ACDC: forwards + 2 × backwards, a backward costing about two forwards) where the
artifact has one, else its CPU time (wall time where the benchmark has none) over that
forward's time, which also counts loading and Python overhead. CPU time, not wall time: a job
that shared its core with other work took longer by the wall clock but not in CPU seconds.

The H100 estimate is fwd-eq × the forward time from FLOPs: 2 · parameters · batch tokens per
forward, at a stated utilisation (default 40 %) of the H100's dense bf16 peak (989 TFLOP/s).
It ignores attention's own FLOPs (small at these sequence lengths), loading and host work, so
it is a floor for stages whose CPU time is not forwards.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: H100 SXM dense bf16 peak (NVIDIA's datasheet: 1,979 TFLOP/s with sparsity, half dense).
H100_BF16_TFLOPS = 989.0
#: what fraction of the peak a forward is assumed to reach (stated in the table's caption)
UTILISATION = 0.40
#: a backward pass in forward-equivalents (two matmuls per forward matmul)
BACKWARD_FWD_EQ = 2
#: the least one forward costs per layer on a GPU, whatever its FLOPs: eager PyTorch launches
#: about 20 kernels per decoder layer at about 5 µs each. At the prompt counts interpretability
#: runs (tens of prompts of tens of tokens) this latency, not the FLOPs, bounds a small model's
#: forward; an assumption, stated in the table, until `make gpu-check` measures it.
LAYER_LATENCY_S = 1e-4


@dataclass(frozen=True)
class StageCost:
    stage: str
    jobs: int
    wall_s: float
    peak_rss_mb: float | None
    cpu_s: float | None = None  # summed CPU seconds (benchmark's cpu_time), where recorded
    n_forward: int | None = None  # ACDC artifacts only, summed over tasks
    n_backward: int | None = None
    n_edges: int | None = None

    def fwd_eq(self, forward_s: float) -> float:
        """Counted passes where known, else CPU time (wall time where not recorded) in units
        of one plain single-thread forward."""
        if self.n_forward is not None:
            return self.n_forward + BACKWARD_FWD_EQ * (self.n_backward or 0)
        return (self.wall_s if self.cpu_s is None else self.cpu_s) / forward_s


@dataclass(frozen=True)
class Forward:
    seconds: float  # measured plain forward, this process, this machine
    tokens: int  # batch × padded length
    n_prompts: int
    parameters: int
    device: str
    weight_bytes: int = 0  # the loaded weights, in their dtype
    n_layers: int = 0
    threads: int = 0  # CPU threads it ran on (0: not recorded)

    def flops_s(self, utilisation: float = UTILISATION, tflops: float = H100_BF16_TFLOPS) -> float:
        """The forward's time from its FLOPs: 2 · parameters · tokens at `utilisation`."""
        return 2 * self.parameters * self.tokens / (utilisation * tflops * 1e12)

    def h100_s(self, utilisation: float = UTILISATION, tflops: float = H100_BF16_TFLOPS) -> float:
        """The forward's time on one H100: its FLOP time, or the launch latency of its layers
        (`LAYER_LATENCY_S` each) where that is longer."""
        return max(self.flops_s(utilisation, tflops), self.n_layers * LAYER_LATENCY_S)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "NA", "-") else None
    except ValueError:
        return None


Job = tuple[float, float | None, float | None]  # wall s, peak RSS MB, CPU s


def read_benchmarks(run: Path, model: str) -> dict[str, list[Job]]:
    """Stage → (wall s, peak RSS MB, CPU s) of each of `model`'s jobs; ACDC discovery keyed
    ``acdc_circuit/<method>``."""
    root = run / "data" / "benchmarks"
    out: dict[str, list[Job]] = defaultdict(list)
    for path in sorted(root.glob("*/**/*.tsv")):
        parts = path.relative_to(root).with_suffix("").parts
        if len(parts) < 2 or parts[1] != model:
            continue  # another model's job, or one of no model (datasets)
        stage = f"{parts[0]}/{parts[-1]}" if parts[0] == "acdc_circuit" else parts[0]
        with path.open(newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                wall = _number(row.get("s"))
                if wall is not None:
                    out[stage].append(
                        (wall, _number(row.get("max_rss")), _number(row.get("cpu_time")))
                    )
    return dict(out)


def acdc_artifacts(run: Path, model: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """`model`'s ACDC artifacts (``data/circuits/<model>/<task>/<method>.json`` with pass
    counts), by path; neuron circuits (LRP, contrastive) have none and are skipped."""
    for path in sorted((run / "data" / "circuits" / model).glob("*/*.json")):
        art = json.loads(path.read_text())
        if "n_forward" in art:
            yield path, art


def datasets_dir(run: Path, model: str) -> Path:
    return run / "data" / "datasets" / model


def read_acdc_counts(run: Path, model: str) -> dict[str, tuple[int, int, int]]:
    """``acdc_circuit/<method>`` → (forwards, backwards, edges of the graph), summed over tasks
    (edges: the largest graph)."""
    out: dict[str, tuple[int, int, int]] = {}
    for path, art in acdc_artifacts(run, model):
        key = f"acdc_circuit/{path.stem}"
        f, b, e = out.get(key, (0, 0, 0))
        out[key] = (f + art["n_forward"], b + art["n_backward"], max(e, len(art["edges"])))
    return out


def stage_costs(run: Path, model: str) -> list[StageCost]:
    counts = read_acdc_counts(run, model)
    costs = []
    for stage, rows in read_benchmarks(run, model).items():
        rss = [r for _, r, _ in rows if r is not None]
        cpu = [c for _, _, c in rows if c is not None]
        f, b, e = counts.get(stage, (None, None, None))
        costs.append(
            StageCost(
                stage,
                len(rows),
                sum(w for w, _, _ in rows),
                max(rss) if rss else None,
                sum(cpu) if len(cpu) == len(rows) else None,
                f,
                b,
                e,
            )
        )
    return costs


def measure_forward(
    run: Path, model: str, task: str, n_prompts: int, repeats: int, threads: int = 1
) -> Forward:
    """One plain forward of the run's model on the first `n_prompts` train prompts of `task`
    (median of `repeats` after a warm-up), on `threads` CPU threads as the run's jobs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _time_forward(run, model, task, n_prompts, repeats, threads)
    finally:
        torch.set_num_threads(before)


def _time_forward(
    run: Path, model: str, task: str, n_prompts: int, repeats: int, threads: int
) -> Forward:
    import torch

    from circuitlab.models import load_model
    from circuitlab.tasks.io import load_rows

    lm = load_model(run / "data" / "models" / f"{model}.json", tokenizer=True)
    path = datasets_dir(run, model) / f"{task}.jsonl"
    prompts = [r.prompt for r in load_rows(path, rule="check_dataset", split="train")][:n_prompts]
    batch = lm.tokenizer(prompts, padding=True, return_tensors="pt").to(lm.device)
    runs = []
    with torch.no_grad():
        lm.model(**batch)
        for _ in range(repeats):
            t = time.perf_counter()
            lm.model(**batch)
            if lm.device.type == "cuda":
                torch.cuda.synchronize(lm.device)
            runs.append(time.perf_counter() - t)
    return Forward(
        seconds=statistics.median(runs),
        tokens=int(batch["input_ids"].numel()),
        n_prompts=len(prompts),
        parameters=sum(p.numel() for p in lm.model.parameters()),
        device=str(lm.device),
        weight_bytes=sum(p.numel() * p.element_size() for p in lm.model.parameters()),
        n_layers=lm.dims.n_layers,
        threads=threads,
    )


def default_task(run: Path, model: str) -> str | None:
    """The first task (by name) with an ACDC artifact — the batch fwd-eq counts in — else the
    model's first dataset."""
    acdc = [path.parent.name for path, _ in acdc_artifacts(run, model)]
    datasets = sorted(f.stem for f in datasets_dir(run, model).glob("*.jsonl"))
    return (acdc or datasets or [None])[0]


def markdown(
    model: str,
    costs: list[StageCost],
    fwd: Forward,
    utilisation: float = UTILISATION,
    tflops: float = H100_BF16_TFLOPS,
) -> str:
    """The table, with its method in the caption."""
    edges = max((c.n_edges or 0 for c in costs), default=0)
    h100 = fwd.h100_s(utilisation, tflops)
    where = fwd.device
    if fwd.device == "cpu" and fwd.threads:
        s = "" if fwd.threads == 1 else "s"
        where = f"cpu on {fwd.threads} thread{s}, as the run's jobs ran (Snakemake's `threads`)"
    lines = [
        f"**{model}**: {fwd.parameters:,} parameters"
        + (f", ACDC graph {edges:,} edges" if edges else "")
        + f". One plain forward of {fwd.n_prompts} prompts ({fwd.tokens} tokens): "
        f"{fwd.seconds * 1e3:.1f} ms measured on {where}; on one H100 {h100 * 1e3:.2f} ms, "
        f"the longer of its FLOP time (2 · parameters · tokens at {utilisation:.0%} of "
        f"{tflops:g} TFLOP/s dense bf16: {fwd.flops_s(utilisation, tflops) * 1e3:.3f} ms) and "
        f"an assumed launch latency of {LAYER_LATENCY_S * 1e3:g} ms per layer "
        f"({fwd.n_layers} layers). fwd-eq: ACDC's counted passes (forwards + 2 × backwards) "
        "where the artifact has them (†), else CPU s / the measured forward (which also "
        "counts loading and host work). H100 estimate = fwd-eq × the H100 forward, not "
        "counting loading the model (seconds to a minute per job) or host work: a floor, to "
        "be replaced by `make gpu-check`'s measurement.",
        "",
        "| stage | jobs | wall s | CPU s | peak RSS GiB | fwd-eq | H100 estimate s |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    unseen = False
    for c in sorted(costs, key=lambda c: c.stage):
        eq = c.fwd_eq(fwd.seconds)
        rss = "–" if c.peak_rss_mb is None else f"{c.peak_rss_mb / 1024:.2f}"
        if c.peak_rss_mb is not None and _client_only(c, fwd):
            rss, unseen = "–‡", True
        mark = " †" if c.n_forward is not None else ""
        lines.append(
            f"| {c.stage} | {c.jobs} | {c.wall_s:.1f} | {_seconds(c.cpu_s)} | {rss} "
            f"| {eq:,.0f}{mark} | {eq * h100:.3g} |"
        )
    total = sum(c.wall_s for c in costs)
    cpu = [c.cpu_s for c in costs]
    total_cpu = None if None in cpu else sum(c for c in cpu if c is not None)
    total_h100 = sum(c.fwd_eq(fwd.seconds) * h100 for c in costs)
    lines.append(
        f"| **all** | {sum(c.jobs for c in costs)} | {total:.1f} | {_seconds(total_cpu)}"
        f"{'' if total_cpu is None else f' ({total_cpu / 3600:.2f} h)'} | "
        f"| {total_h100:.3g} |"
    )
    if unseen:
        lines += [
            "",
            "‡ below the weights' own size: the job ran in the pipeline's warm process "
            "(circuitlab.warm), a fork Snakemake's benchmark does not see; rerun with "
            "`CIRCUITLAB_WARM=0` to measure its memory.",
        ]
    return "\n".join(lines) + "\n"


def _seconds(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:,.0f}"


def _client_only(cost: StageCost, fwd: Forward) -> bool:
    """Whether a model-loading stage's peak RSS is below its model's weights — impossible
    for the process that loaded them, so the benchmark measured only the job's client."""
    from circuitlab.stages import STAGES

    stage = STAGES.get(cost.stage.split("/")[0])
    loads = stage is not None and stage.loads_model
    return loads and cost.peak_rss_mb is not None and cost.peak_rss_mb * 2**20 < fwd.weight_bytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the model's name in the run's config")
    p.add_argument("--run", type=Path, default=Path("."), help="the run's folder (holds data/)")
    p.add_argument(
        "--task",
        help="the task whose train prompts are timed (default: the first task ACDC ran on)",
    )
    p.add_argument("--prompts", type=int, default=8, help="batch size (acdc.n_prompts)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads", type=int, default=1, help="CPU threads of the timed forward (the jobs' own)"
    )
    p.add_argument("--utilisation", type=float, default=UTILISATION)
    p.add_argument("--tflops", type=float, default=H100_BF16_TFLOPS, help="accelerator peak")
    p.add_argument("--out", type=Path, help="write the table here (default: stdout)")
    args = p.parse_args(argv)
    costs = stage_costs(args.run, args.model)
    if not costs:
        print(f"no benchmark files of model {args.model!r} under {args.run}/data/benchmarks")
        return 1
    task = args.task or default_task(args.run, args.model)
    datasets = datasets_dir(args.run, args.model)
    if task is None or not (datasets / f"{task}.jsonl").is_file():
        have = sorted(f.stem for f in datasets.glob("*.jsonl"))
        print(f"no dataset of task {task!r} for model {args.model!r}; --task one of {have}")
        return 1
    fwd = measure_forward(args.run, args.model, task, args.prompts, args.repeats, args.threads)
    text = markdown(args.model, costs, fwd, args.utilisation, args.tflops)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
