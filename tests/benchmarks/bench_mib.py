"""Side by side with MIB's circuit-localization track and EAP-IG on the same weights and token
ids (`--only mib`).

The peer lives in its own virtualenv (TransformerLens 2, transformers 4.52): build it once with
``EAP_IG_GIT=… MIB_GIT=… bash ../shared/peers/mib/setup.sh`` (``$MIB_VENV``, default
``/tmp/venv-mib``; harness folder ``$MIB_DIR``, default ``../shared/peers/mib`` beside this
repository). Without it every case is skipped with that message.

Per case, ``make_data.py`` (this venv) writes the token ids both tools read — train rows for
attribution, test rows for evaluation — and ``peer_mib.py`` (the peer's venv) runs EAP,
EAP-IG-inputs and EAP-IG-activations exactly as MIB's ``run_attribution.py`` calls them, then
MIB's ``evaluate_area_under_curve`` on each (CPR: signed ranking; CMD: absolute), recording
which edges each evaluated circuit kept. circuitlab loads the same model directory with the
per-query-head graph (``kv_edges="query_head"``: MIB's graph under grouped-query attention)
and computes the same things with its own stage functions. Reported per case:

* score agreement per method: Pearson and the largest difference relative to the largest
  score, after the documented sign and scale (peer = −circuitlab / B);
* faithfulness of the very edge sets the peer evaluated, and MIB's own pruning of its top-n;
* CPR and CMD of each method from each tool (circuitlab's from its own scores and pruning);
  circuitlab's ``edge_pruning`` beside them (no peer counterpart);
* wall time of each method's attribution against the peer's, and of the whole evaluation
  (the six curves) against the peer's, both one torch thread, each the median of the repeats
  after one warm-up (the peer's curves: one timed run each). The two tools are separate
  processes run back to back, so the machine load is printed beside the times.

Cases: the tiny model of ``tests/acdc/fixtures/mib_tiny`` (its fixture is rewritten from the
peer's output when ``MIB_WRITE_FIXTURE=1``), the planted-circuit model, and the toy model's
ioi and induction when a pipeline run's ``data/`` is there (``$MIB_BENCH_DATA``, default this
repository's ``data/``). Correctness checks (non-zero exit on failure): Pearson ≥ 0.999 and
relative difference ≤ 1e-4 per method, faithfulness of the same edge sets ≤ 1e-5, CPR/CMD ≤
1e-4.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuitlab.acdc import patchable, prepare
from circuitlab.acdc.artifact import CircuitArtifact
from circuitlab.acdc.discover import discover_artifact
from circuitlab.acdc.evaluate import run_masks
from circuitlab.acdc.mib import NodeIndex, areas, method_sets, prune
from circuitlab.acdc.settings import AcdcConfig
from circuitlab.models import load_model
from circuitlab.prompts import encode_rows
from circuitlab.types import TaskRow

ROOT = Path(__file__).resolve().parents[2]
MIB_VENV = Path(os.environ.get("MIB_VENV", "/tmp/venv-mib"))
MIB_DIR = Path(os.environ.get("MIB_DIR", ROOT.parent / "shared" / "peers" / "mib"))
DATA = Path(os.environ.get("MIB_BENCH_DATA", ROOT / "data"))
FIXTURE = ROOT / "tests" / "acdc" / "fixtures" / "mib_tiny"
PEER_METHODS = {"EAP": "eap", "EAP-IG-inputs": "eap_ig_inputs", "EAP-IG-activations": "eap_ig_activations"}  # fmt: skip

Result = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    cases: tuple[str, ...]
    repeats: int

    @classmethod
    def make(cls, quick: bool, repeats: int | None) -> Settings:
        if quick:
            return cls(("tiny",), repeats or 1)
        return cls(("tiny", "planted", "toy/ioi", "toy/induction"), repeats or 3)


def peer_missing() -> str | None:
    """Why the peer cannot run here, or None."""
    if not (MIB_VENV / "bin" / "python").exists():
        return (
            f"no MIB peer venv at {MIB_VENV}: run `EAP_IG_GIT=… MIB_GIT=… bash "
            f"{MIB_DIR}/setup.sh` (git dirs of hannamw/EAP-IG and hannamw/MIB-circuit-track)"
        )
    if not (MIB_DIR / "peer_mib.py").exists():
        return f"no MIB harness at {MIB_DIR} (set MIB_DIR)"
    return None


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _case_inputs(case: str, work: Path) -> tuple[Path, Path] | str:
    """(model directory, rows JSONL with train and test splits), or why the case is skipped."""
    if case == "tiny":
        return FIXTURE, FIXTURE / "rows.jsonl"
    if case == "planted":
        from circuitlab.acdc.planted import PlantedSpec, build_planted, planted_rows

        lm = build_planted(work / "planted", PlantedSpec())
        train = planted_rows(lm, 16, seed=0)
        test = [
            r.model_copy(update={"split": "test", "id": f"t{r.id}"})
            for r in planted_rows(lm, 32, seed=1)
        ]
        rows = work / "planted.jsonl"
        rows.write_text("".join(r.model_dump_json() + "\n" for r in train + test))
        return work / "planted", rows
    model, task = case.split("/")
    model_dir, rows = DATA / "models" / model, DATA / "datasets" / model / f"{task}.jsonl"
    if not (model_dir / "config.json").exists() or not rows.exists():
        return f"no {model_dir} or {rows}: run `make reproduce` first (or set MIB_BENCH_DATA)"
    return model_dir, rows


def _run(cmd: Sequence[str], *, peer: bool) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if peer:
        env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(list(cmd), env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _median(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, list[float]]:
    out = fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
    return out, statistics.median(runs), runs


def _curves(ctx: Any, index: NodeIndex, arts: Sequence[CircuitArtifact]) -> dict[str, Any]:
    """Every method's two MIB curves (clean and all-patched runs once, each distinct edge set
    once, one set per forward): faithfulness lists and areas."""
    n = ctx.graph.n_edges
    sets = {a.method: method_sets(index, a) for a in arts}
    masks = [torch.zeros(n), torch.ones(n)]
    seen: dict[bytes, int] = {}
    rows: dict[tuple[str, str], list[int]] = {}
    for method, by_kind in sets.items():
        for kind, keeps in by_kind.items():
            idx = []
            for keep in keeps:
                m = (~keep).float()
                key = m.numpy().tobytes()
                if key not in seen:
                    seen[key] = len(masks)
                    masks.append(m)
                idx.append(seen[key])
            rows[(method, kind)] = idx
    ld = run_masks(ctx, torch.stack(masks), 1)[:, 1].tolist()
    out: dict[str, Any] = {}
    for (method, kind), idx in rows.items():
        faith = [(ld[i] - ld[1]) / (ld[0] - ld[1]) for i in idx]
        out.setdefault(method, {})[kind] = {"faithfulness": faith, **areas(faith)}
    return out


def run_case(case: str, settings: Settings, log: Callable[[str], None]) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = _case_inputs(case, work)
        if isinstance(inputs, str):
            return {"case": case, "skipped": inputs}
        model_dir, rows_path = inputs
        data, peer_out = work / "data.json", work / "peer.json"
        n_attr, n_eval = (12, 12) if case == "tiny" else (16, 32)
        _run([sys.executable, str(MIB_DIR / "make_data.py"), "task",
              str(model_dir), str(rows_path), str(data), "--n-attr", str(n_attr),
              "--n-eval", str(n_eval)], peer=False)  # fmt: skip
        load_peer = loadavg()
        _run([str(MIB_VENV / "bin" / "python"), str(MIB_DIR / "peer_mib.py"),
              "--model-dir", str(model_dir), "--data", str(data), "--out", str(peer_out),
              "--repeats", str(settings.repeats), "--threads", "1"], peer=True)  # fmt: skip
        peer = json.loads(peer_out.read_text())
        if case == "tiny" and os.environ.get("MIB_WRITE_FIXTURE") == "1":
            write_fixture(peer)
        n_eval = len(json.loads(data.read_text())["eval"]["clean"])
        return compare(case, model_dir, rows_path, n_eval, peer, settings, load_peer, log)


def compare(
    case: str,
    model_dir: Path,
    rows_path: Path,
    n_eval: int,
    peer: dict[str, Any],
    settings: Settings,
    load_peer: list[float] | None,
    log: Callable[[str], None],
) -> Result:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [TaskRow(**json.loads(line)) for line in rows_path.read_text().splitlines() if line]
        train = [r for r in rows if r.split == "train"]
        test = [r for r in rows if r.split == "test"][:n_eval]  # the peer's evaluation rows
        n_attr = peer["attr_batch_size"]
        lm = load_model(model_dir)
        pm = patchable(lm, kv_edges="query_head")
        edges = pm.graph.edges
        assert sorted(edges) == sorted(peer["graph"]["edges"]), "graphs differ"
        pos = [edges.index(e) for e in peer["graph"]["edges"]]
        load_ours = loadavg()
        methods = [*PEER_METHODS.values(), "edge_pruning"]
        cfg = AcdcConfig(kv_edges="query_head", methods=methods, n_prompts=n_attr,
                         n_eval_prompts=len(test))  # fmt: skip
        arts: dict[str, CircuitArtifact] = {}
        timings, ratios, checks = [], [], []
        for peer_name, method in PEER_METHODS.items():
            art, med, runs = _median(
                lambda m=method: discover_artifact(lm, train[:n_attr], cfg, m), settings.repeats
            )
            arts[method] = art
            theirs = torch.tensor(peer["methods"][peer_name]["scores"])
            signed = torch.tensor(art.details["signed_scores"])
            mine = -signed[pos] / n_attr
            r = float(torch.corrcoef(torch.stack([mine, theirs]))[0, 1])
            rel = float((mine - theirs).abs().max() / theirs.abs().max())
            checks.append({"name": f"{method} scores = −peer/B", "passed": r >= 0.999 and rel <= 1e-4,
                           "detail": f"Pearson {r:.6f}, max rel diff {rel:.1e}",
                           "tolerance": "Pearson ≥ 0.999, rel ≤ 1e-4"})  # fmt: skip
            peer_s = peer["methods"][peer_name]["timing"]["median_s"]
            timings += [{"name": f"{method}: circuitlab", "median_s": med, "runs_s": runs},
                        {"name": f"{peer_name}: MIB/EAP-IG", "median_s": peer_s,
                         "runs_s": [x["s"] for x in peer["methods"][peer_name]["timing"]["runs"]]}]  # fmt: skip
            ratios.append({"name": f"{method}: peer time / circuitlab time", "value": peer_s / med,
                           "goal": "≥ 1×", "met": peer_s / med >= 1.0})  # fmt: skip
        arts["edge_pruning"], ep_s, ep_runs = _median(
            lambda: discover_artifact(lm, train[:n_attr], cfg, "edge_pruning"), 1
        )
        timings.append({"name": "edge_pruning: circuitlab (no peer)", "median_s": ep_s, "runs_s": ep_runs})  # fmt: skip

        ctx = prepare(pm, encode_rows(test, lm.tokenizer), "resample")
        index = NodeIndex.of(pm.graph)
        peer_arts = [arts[m] for m in PEER_METHODS.values()]
        curves, ours_s, ours_runs = _median(
            lambda: _curves(ctx, index, peer_arts), settings.repeats
        )
        ep_curves = _curves(ctx, index, [arts["edge_pruning"]])["edge_pruning"]
        peer_eval = sum(c["timing"]["s"] for c in peer["curves"].values())
        timings += [{"name": "evaluation, 6 curves: circuitlab", "median_s": ours_s, "runs_s": ours_runs},
                    {"name": "evaluation, 6 curves: MIB", "median_s": peer_eval, "runs_s": [peer_eval]}]  # fmt: skip
        ratios.append({"name": "whole evaluation: peer / circuitlab", "value": peer_eval / ours_s,
                       "goal": "≥ 3×", "met": peer_eval / ours_s >= 3.0})  # fmt: skip

        same_faith = same_prune = 0.0
        n_sets = 0
        for c in peer["curves"].values():
            masks = [torch.zeros(len(edges)), torch.ones(len(edges))]
            for unpruned, kept in zip(c["kept_topn_unpruned"], c["kept_pruned"], strict=True):
                keep = torch.zeros(len(edges), dtype=torch.bool)
                keep[[pos[i] for i in unpruned]] = True
                want = torch.zeros(len(edges), dtype=torch.bool)
                want[[pos[i] for i in kept]] = True
                same_prune += float(not torch.equal(prune(index, keep), want))
                masks.append((~want).float())
                n_sets += 1
            ld = run_masks(ctx, torch.stack(masks), 1)[:, 1].tolist()
            faith = [(v - ld[1]) / (ld[0] - ld[1]) for v in ld[2:]]
            diff = max(abs(a - b) for a, b in zip(faith, c["faithfulness"], strict=True))
            same_faith = max(same_faith, diff)
        checks.append({"name": "MIB's prune of its top-n = circuitlab's", "passed": same_prune == 0,
                       "detail": f"{int(same_prune)} of {n_sets} edge sets differ", "tolerance": "0"})  # fmt: skip
        checks.append({"name": "faithfulness of the peer's edge sets", "passed": same_faith <= 1e-5,
                       "detail": f"max |Δ| {same_faith:.1e}", "tolerance": "≤ 1e-5"})  # fmt: skip
        areas_table = {}
        worst = 0.0
        for peer_name, method in PEER_METHODS.items():
            cpr_p = peer["curves"][f"peer:{peer_name}:abs=False"]["area_under"]
            cmd_p = peer["curves"][f"peer:{peer_name}:abs=True"]["area_from_1"]
            cpr_o, cmd_o = curves[method]["signed"]["area_under"], curves[method]["abs"]["area_from_1"]  # fmt: skip
            worst = max(worst, abs(cpr_o - cpr_p), abs(cmd_o - cmd_p))
            areas_table[method] = {"cpr": cpr_o, "cmd": cmd_o, "peer_cpr": cpr_p, "peer_cmd": cmd_p}
            ratios += [{"name": f"{method}: CPR (MIB {cpr_p:.4f})", "value": cpr_o, "goal": "", "met": None, "unit": "AUC"},
                       {"name": f"{method}: CMD (MIB {cmd_p:.4f})", "value": cmd_o, "goal": "", "met": None, "unit": "AUC"}]  # fmt: skip
        areas_table["edge_pruning"] = {"cpr": ep_curves["signed"]["area_under"], "cmd": ep_curves["abs"]["area_from_1"]}  # fmt: skip
        ratios += [{"name": "edge_pruning: CPR (no peer)", "value": areas_table["edge_pruning"]["cpr"], "goal": "", "met": None, "unit": "AUC"},
                   {"name": "edge_pruning: CMD (no peer)", "value": areas_table["edge_pruning"]["cmd"], "goal": "", "met": None, "unit": "AUC"}]  # fmt: skip
        if case == "planted":  # every method's scores against the known circuit
            from circuitlab.acdc.planted import PlantedSpec, planted_aucs
            from circuitlab.acdc.registry import edge_methods

            every = tuple(edge_methods())
            found = planted_aucs(lm, PlantedSpec(), train[:n_attr], AcdcConfig(n_prompts=n_attr), every)  # fmt: skip
            for method, entry in found.items():
                areas_table.setdefault(method, {})["planted_auc"] = entry["auc"]
                ratios.append({"name": f"{method}: ROC AUC vs the planted edges (per KV head)",
                               "value": entry["auc"], "goal": "", "met": None, "unit": "AUC"})  # fmt: skip
        checks.append({"name": "CPR/CMD = MIB's", "passed": worst <= 1e-4,
                       "detail": f"max |Δ| {worst:.1e}", "tolerance": "≤ 1e-4"})  # fmt: skip
        log(f"  {case}: areas {json.dumps(areas_table)}")
        return {
            "case": case,
            "setup": {
                "about": f"{len(edges)} edges (per query head), {n_attr} attribution / "
                f"{len(test)} evaluation prompts, 1 thread; load peer {load_peer}, "
                f"ours {load_ours}",
                "peer_commits": peer.get("peer_commits"),
                "peer_versions": peer.get("versions"),
                "areas": areas_table,
            },
            "timings": timings,
            "ratios": ratios,
            "checks": checks,
        }
    finally:
        torch.set_num_threads(threads)


CURVE_KEYS = ("faithfulness", "area_under", "area_from_1", "kept_pruned", "kept_topn_unpruned")


def write_fixture(peer: dict[str, Any]) -> None:
    """Rewrite tests/acdc/fixtures/mib_tiny/peer.json from a peer run on that directory."""
    out = {
        "about": "MIB-circuit-track + EAP-IG on this directory's model and rows "
        "(tests/benchmarks/bench_mib.py with MIB_WRITE_FIXTURE=1): scores in circuitlab edge "
        "names, the peer's sign and scale (score = -circuitlab score / B); curves as MIB's "
        "evaluate_area_under_curve computed them",
        "peer_commits": peer["peer_commits"],
        "versions": peer["versions"],
        "ig_steps": peer["ig_steps"],
        "attr_batch_size": peer["attr_batch_size"],
        "edges": peer["graph"]["edges"],
        "scores": {m: v["scores"] for m, v in peer["methods"].items()},
        "curves": {k: {key: c[key] for key in CURVE_KEYS} for k, c in peer["curves"].items()},
    }
    (FIXTURE / "peer.json").write_text(json.dumps(out, indent=0) + "\n")


def run(settings: Settings, log: Callable[[str], None]) -> list[Result]:
    missing = peer_missing()
    if missing:
        return [{"case": c, "skipped": missing} for c in settings.cases]
    out = []
    for case in settings.cases:
        log(f"mib: {case} …")
        out.append(run_case(case, settings, log))
    return out
