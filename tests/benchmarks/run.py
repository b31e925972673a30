"""Run the benchmarks, print a table and write JSON (`make bench`).

    python tests/benchmarks/run.py [--only lrp|acdc|acdc_scaling|numerics|peer|mib|tl|backend] [--quick] [--threads 2] [--out data/benchmarks/bench.json]

Speed goals are ratios measured within this one run and are reported as PASS/MISS, never
asserted; the process exits non-zero only when a correctness check (e.g. fast ≡ reference)
fails. Timings are the median of N repeats after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (HERE, HERE.parent):  # bench_* modules, then tests/ (lrp_reference, tiny_models)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bench_acdc  # noqa: E402
import bench_lrp  # noqa: E402
import bench_mib  # noqa: E402
import bench_numerics  # noqa: E402
import bench_peer  # noqa: E402
import bench_tl  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

Result = dict[str, Any]

#: name → runner(quick, repeats, log) returning one result per case
BENCHMARKS: dict[str, Callable[[bool, int | None, Callable[[str], None]], list[Result]]] = {
    "lrp": lambda quick, repeats, log: bench_lrp.run(bench_lrp.Settings.make(quick, repeats), log),
    "acdc": lambda quick, repeats, log: bench_acdc.run(
        bench_acdc.Settings.make(quick, repeats), log
    ),
    "acdc_scaling": lambda quick, repeats, log: bench_acdc.run_scaling(
        bench_acdc.Settings.make(quick, repeats), log
    ),
    "numerics": lambda quick, repeats, log: bench_numerics.run(
        bench_numerics.Settings.make(quick, repeats), log
    ),
    "tl": lambda quick, repeats, log: bench_tl.run(bench_tl.Settings.make(quick, repeats), log),
    "backend": lambda quick, repeats, log: bench_tl.run_backend(
        bench_tl.Settings.make(quick, repeats), log
    ),
    "mib": lambda quick, repeats, log: bench_mib.run(bench_mib.Settings.make(quick, repeats), log),
    "peer": lambda quick, repeats, log: bench_peer.run(
        bench_peer.Settings.make(quick, repeats), log
    ),
}


def machine_info(threads: int) -> dict[str, Any]:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "cuda": torch.cuda.is_available(),
    }


def _status(met: bool | None, *, check: bool = False) -> str:
    if met is None:
        return ""
    if check:
        return "[green]PASS[/]" if met else "[bold red]FAIL[/]"
    return "[green]PASS[/]" if met else "[yellow]MISS[/]"


def render(bench: str, results: list[Result], console: Console) -> None:
    table = Table(title=f"benchmark: {bench}", show_lines=False)
    for col in ("case", "measurement", "value", "goal", "status"):
        table.add_column(col, justify="right" if col == "value" else "left", no_wrap=True)
    for res in results:
        case = res["case"]
        if "skipped" in res:
            table.add_row(case, f"skipped: {res['skipped']}", "", "", "[yellow]SKIP[/]")
            continue
        setup = res["setup"]
        about = setup.get("about")
        if about is None:
            lo, hi = setup["prompt_tokens_min_max"]
            shape = f"{setup['n_layers']}×{setup['d_mlp']} neurons"
            about = f"{setup['n_prompts']} prompts, {shape}, {lo}–{hi} tokens, {setup['attn_implementation']}"
        table.add_row(case, about, "", "", "")
        for t in res["timings"]:
            n = len(t["runs_s"])
            table.add_row("", t["name"], f"{t['median_s']:.3f} s", f"median of {n}", "")
        for r in res["ratios"]:
            unit = r.get("unit", "×")
            if unit == "×":
                value = f"{r['value']:.2f}×"
            elif unit == "AUC":
                value = f"{r['value']:.3f}"
            else:
                value = f"{r['value']:.1f} {unit}"
            table.add_row("", r["name"], value, r["goal"] or "", _status(r["met"]))
        for c in res["checks"]:
            if "detail" in c:
                table.add_row(
                    "", c["name"], c["detail"], c["tolerance"], _status(c["passed"], check=True)
                )
                continue
            table.add_row(
                "",
                c["name"],
                f"abs {c['max_abs_diff']:.1e}, rel {c['max_rel_diff']:.1e} "
                f"({c['tolerance_used']:.0%} of tol)",
                c["tolerance"],
                _status(c["passed"], check=True),
            )
            if "batch1_max_abs_diff" in c:
                table.add_row(
                    "",
                    "    fast at batch size 1 vs reference",
                    f"max abs {c['batch1_max_abs_diff']:.1e}",
                    "(info)",
                    "",
                )
        table.add_section()
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="repeatable")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (smoke)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "benchmarks" / "bench.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    info = machine_info(args.threads)
    console.print(
        f"[bold]circuitlab benchmarks[/] — {info['cpu']}, {info['cpu_count']} CPUs, "
        f"torch {info['torch']}, {args.threads} threads{' (quick)' if args.quick else ''}"
    )

    report: dict[str, Any] = {"machine": info, "quick": args.quick, "benchmarks": {}}
    failed: list[str] = []
    for name in args.only or sorted(BENCHMARKS):
        results = BENCHMARKS[name](args.quick, args.repeats, lambda msg: console.print(msg))
        report["benchmarks"][name] = results
        render(name, results, console)
        for res in results:
            failed += [
                f"{name}/{res['case']}: {c['name']}"
                for c in res.get("checks", [])
                if not c["passed"]
            ]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    console.print(f"wrote {args.out}")
    if failed:
        console.print("[bold red]correctness check failed:[/] " + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
