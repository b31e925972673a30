"""Commands around the pipeline rather than in it: the config schema and its check, the plan of
a rerun, altered artifacts, watching a run, the report screenshot, circuit export, the
interactive REPL."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from circuitlab.cli.app import (
    BLACKLIST_IN,
    CIRCUIT_IN,
    PARAMS_HELP,
    app,
    backend_option,
    device_option,
    err_console,
    model_input,
    model_spec,
    output_path,
    parse_json_option,
    parse_params,
)
from circuitlab.errors import CircuitlabError, ConfigError

if TYPE_CHECKING:
    from circuitlab.provenance.plan import ConfigKeys


@app.command()
def schema(
    out: Path = typer.Option(None, callback=output_path, help="write here instead of printing"),
) -> None:
    """Print (or write) the config JSON schema generated from circuitlab.config.Config."""
    from circuitlab.config import schema_yaml
    from circuitlab.io import write_text_atomic

    text = schema_yaml()
    if out is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(out, text)


@app.command()
def plan(
    configfile: Path = typer.Option(
        None, help="an overlay config (as `snakemake --configfile`), e.g. config/gpt2.yaml"
    ),
    workdir: Path = typer.Option(Path("."), help="the project folder (holding the Snakefile)"),
    jobs: bool = typer.Option(False, "--jobs", help="also list every job with its reasons"),
) -> None:
    """What the next `make reproduce` would run, per rule, and why — from Snakemake's own dry
    run: config keys changed, package modules changed, inputs new, missing or rebuilt."""
    import shutil

    from rich.table import Table

    from circuitlab.provenance.manifest import altered as find_altered
    from circuitlab.provenance.plan import dry_run, missing_metadata, parse_dry_run
    from circuitlab.provenance.plan import plan as summarise

    exe = Path(sys.executable).parent / "snakemake"
    snakemake = str(exe) if exe.exists() else shutil.which("snakemake")
    if snakemake is None:
        raise CircuitlabError("snakemake is not installed here: run `make setup` first")
    if not (workdir / "Snakefile").exists():
        raise CircuitlabError(f"{workdir.resolve()} has no Snakefile: run in the project folder")
    configfile = configfile.resolve() if configfile is not None else None
    args = ["--configfile", str(configfile)] if configfile is not None else []
    keys = _config_keys(workdir, configfile)
    try:
        text = dry_run(workdir, snakemake, args)
    except RuntimeError as exc:
        raise CircuitlabError(str(exc)) from None
    # after the dry run: it restores a checked-out snapshot's state first (the guard), so a
    # file a `dvc checkout` wrote is not listed as an edit
    for c in find_altered(workdir):
        err_console.print(
            f"{c.why} by hand since its job wrote it: {c.path} — the next run rebuilds it "
            "(forced) with what depends on it",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    found = parse_dry_run(text)
    blind = missing_metadata(text)
    if blind:
        rules = ", ".join(blind)
        err_console.print(
            f"Snakemake has no record of how the outputs of {rules} were made (their jobs ran "
            "outside it, or before their outputs were declared as they are now), so a change "
            "of their code or config cannot rerun them. Rebuild them with "
            f'`make reproduce ARGS="--forcerun {" ".join(blind)}"`, or record the current code '
            "and config as theirs with `make accept`."
        )
    console = Console()
    if not found:
        console.print(
            "Nothing to be done: every output is up to date with its config, code and inputs."
        )
        return
    table = Table(title=f"{len(found)} job(s) would run", title_justify="left")
    table.add_column("rule")
    table.add_column("jobs", justify="right")
    table.add_column("why (jobs)")
    for rule, (n, reasons) in summarise(found, keys).items():
        why = "\n".join(f"{r} ({c})" if c != n else r for r, c in reasons.most_common())
        table.add_row(rule, str(n), why)
    console.print(table)
    if jobs:
        for job in found:
            console.print(
                f"{job.rule}[{job.wildcards}]: " + "; ".join(job.why),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


def _config_keys(workdir: Path, overlay: Path | None) -> ConfigKeys:
    """The run's resolved config as dotted keys (defaults included), to name the key behind a
    changed param. A wrong `overlay` is an error here, in one line (not Snakemake's traceback);
    a base config that cannot be read gives no keys (the dry run says why)."""
    from circuitlab.config import load_config
    from circuitlab.provenance.plan import ConfigKeys, flatten

    overlays = [overlay] if overlay is not None else []
    try:
        cfg = load_config(workdir / "config" / "config.yaml", *overlays)
    except (CircuitlabError, OSError, ValueError):
        if overlay is not None:
            raise
        return ConfigKeys()
    return ConfigKeys(flatten(cfg.model_dump(mode="json")))


@app.command()
def altered(
    accept: bool = typer.Option(
        False, "--accept", help="record the files on disk now as current (`make accept`)"
    ),
) -> None:
    """Pipeline artifacts edited by hand since their job wrote them (the next run sets them
    aside under .snakemake/circuitlab/edited/ and rebuilds them; `make plan` lists them)."""
    from circuitlab.provenance import manifest

    if accept:
        typer.echo(f"recorded {manifest.accept(Path('.'))} outputs as current")
        return
    for c in manifest.altered(Path(".")):
        typer.echo(f"{c.why} since its job wrote it: {c.path}")


@app.command("save-state")
def save_state() -> None:
    """Before a DVC snapshot (`make snapshot`): write data/state/ (what made each artifact, so
    a `dvc checkout` or `dvc pull` of the snapshot plans nothing) and copy the offline W&B
    runs into data/wandb/ (the history, versioned with the artifacts)."""
    from circuitlab.provenance.state import save_state as save
    from circuitlab.tracking.wandb_run import keep_runs

    saved = save(Path("."))
    typer.echo(
        f"data/state: the state of {saved.outputs} outputs ({saved.metadata} Snakemake "
        f"metadata files) and the times of {saved.files} other job files"
    )
    for output in saved.skipped:
        typer.echo(
            f"  edited since its job wrote it (a checkout of this snapshot rebuilds it; "
            f"`make reproduce` first to snapshot its job's result): {output}",
            err=True,
        )
    runs = keep_runs(Path("."))
    typer.echo(f"data/wandb: {len(runs)} W&B runs copied from logs/wandb")


@app.command()
def history(
    n: int = typer.Option(3, "-n", min=1, help="how many snapshots (newest), oldest shown left"),
    every: bool = typer.Option(False, "--all", help="every headline row, found or not"),
) -> None:
    """The recorded runs (DVC snapshots: `make snapshot` + a commit) side by side: headline
    results (accuracy, circuit faithfulness, edge recovery, steering verdicts) and the params
    that changed between them, in one terminal screen."""
    from circuitlab.tracking.history import history as read_history
    from circuitlab.tracking.history import render

    typer.echo(render(read_history(Path("."), n), every=every), nl=False)


@app.command()
def screenshot(
    report: Path = typer.Option(Path("data/report/index.html"), help="the report page"),
    out: Path = typer.Option(
        Path("data/report/screenshot.png"), callback=output_path, help="the PNG to write"
    ),
    width: int = typer.Option(1280, min=320, help="window width (CSS pixels)"),
    height: int = typer.Option(60000, min=320, help="window height: the page is long"),
    first_screen: bool = typer.Option(
        False, help="only the first screen (a 1280 × 800 window), as a reader first sees it"
    ),
) -> None:
    """A headless-Chromium screenshot of the report, to look at every figure as a browser
    draws it, or at its first screen (`make screenshots` writes both)."""
    from circuitlab.report.screenshot import screenshot as shoot

    if first_screen:
        shot = shoot(report, out, width=width, height=800, whole_page=False)
    else:
        shot = shoot(report, out, width=width, height=height)
    typer.echo(f"wrote {shot}")


@app.command()
def export(
    circuit: Path = typer.Option(
        ...,
        callback=CIRCUIT_IN,
        help="an edge circuit (data/circuits/…/{acdc,eap,…}.json) or a "
        "neuron circuit (…/lrp.json, …/contrastive.json)",
    ),
    out: Path = typer.Option(..., callback=output_path, help="the export (JSON)"),
    tau: float = typer.Option(
        None,
        help="edge circuits: the circuit at this τ of the sweep (default: the reference "
        "circuit the report draws, at the config's acdc.reference_tau)",
    ),
    label: str = typer.Option(
        None, help="edge circuits: the circuit with this label (a wrong one lists them)"
    ),
) -> None:
    """Write a circuit in TransformerLens 4 hook names (circuitlab.interop.tl), for a TL user."""
    from circuitlab.acdc.artifact import CircuitFile, load_circuit
    from circuitlab.interop.tl import export_edges, export_neurons, pick_circuit
    from circuitlab.io import read_json, write_json
    from circuitlab.lrp.circuit import NeuronCircuit, NeuronCircuitFile

    kind = read_json(circuit).get("format")
    if kind == CircuitFile.FORMAT:
        art = load_circuit(circuit)
        chosen, why = pick_circuit(art, tau, label, _reference_tau())
        data = export_edges(art, chosen)
    elif kind == NeuronCircuitFile.FORMAT:
        if tau is not None or label is not None:
            raise ConfigError("--tau and --label choose among an edge artifact's circuits")
        data = export_neurons(NeuronCircuit.load(circuit))
    else:
        raise ConfigError(
            f"{circuit} is neither an edge circuit ({CircuitFile.FORMAT}) nor a neuron circuit "
            f"({NeuronCircuitFile.FORMAT}); its format is {kind!r}"
        )
    write_json(out, data)
    n = len(data["kept"]) if data["kind"] == "edges" else len(data["neurons"])
    which = f" ({why})" if data["kind"] == "edges" else ""
    typer.echo(f"wrote {out}: {n} {data['kind']}{which} in TransformerLens hook names")


def _reference_tau() -> float:
    """The project's acdc.reference_tau (config/config.yaml here, else the default)."""
    from circuitlab.acdc.settings import AcdcConfig
    from circuitlab.config import load_config

    if Path("config/config.yaml").exists():
        try:
            return load_config("config/config.yaml").acdc.reference_tau
        except CircuitlabError:
            pass  # not this project's config: the default
    return AcdcConfig().reference_tau


@app.command()
def watch(
    interval: float = typer.Option(1.0, min=0.1, help="seconds between refreshes"),
    once: bool = typer.Option(False, "--once", help="print one snapshot and exit"),
) -> None:
    """Follow the running pipeline: jobs done, and one line per running job (its log's last
    line: the progress of its stage). Run it in a second terminal beside `make reproduce`."""
    from circuitlab.watch import watch as follow

    follow(Path("."), interval=interval, once=once)


@app.command("validate-config")
def validate_config(
    config: Path = typer.Argument(..., help="a config YAML file (the base or an overlay)"),
    base: Path = typer.Option(
        Path("config/config.yaml"),
        help="the config an overlay is merged into, as Snakemake merges --configfile",
    ),
    alone: bool = typer.Option(False, "--alone", help="validate the file on its own, unmerged"),
    resolved: Path | None = typer.Option(
        None,
        help="also write the resolved params file here (every key, defaults included: what a "
        "run writes to config/resolved.yaml for DVC)",
    ),
) -> None:
    """Validate a config as the pipeline would see it and list its models, tasks and behaviours.

    An overlay (config/gpt2.yaml, say) is merged into --base first, exactly as
    `snakemake --configfile` merges it; the base itself, or --alone, is validated on its own."""
    from circuitlab.config import load_config

    if alone or config.resolve() == base.resolve():
        cfg, label = load_config(config), str(config)
    else:
        if not base.exists():
            raise ConfigError(
                f"{config} is validated merged into {base}, which does not exist: run from the "
                "repository root, pass --base, or --alone for the file on its own"
            )
        cfg, label = load_config(base, config), f"{config} merged into {base}"
    typer.echo(f"{label}: valid")
    if resolved is not None:
        from circuitlab.config import write_resolved

        write_resolved(cfg, resolved)
        typer.echo(f"  wrote {resolved}")
    typer.echo(f"  models:     {', '.join(cfg.active_models())}")
    typer.echo(f"  tasks:      {', '.join(cfg.task_names()) or '-'}")
    typer.echo(f"  behaviours: {', '.join(cfg.behaviour_names()) or '-'}")


@app.command()
def repl(
    model: str = typer.Option(..., help="a model directory, {model}.json reference or hub id"),
    device: str | None = device_option(),
    backend: str | None = backend_option(),
    top_k: int = typer.Option(200, min=1, help="neurons a `discover` keeps (top-k |attribution|)"),
    max_new_tokens: int = typer.Option(20, min=0, help="tokens generated per command"),
    blacklist_file: Path = typer.Option(
        None,
        "--blacklist",
        callback=BLACKLIST_IN,
        help="data/blacklists/{model}.json: neurons `discover` ignores",
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the `lrp` section for `discover`)"),
) -> None:
    """Interactive circuit exploration: prompt, discover, ablate, amplify, sweep, top, save/load."""
    from circuitlab.blacklist.artifact import Blacklist
    from circuitlab.io import require
    from circuitlab.lrp.settings import LrpConfig
    from circuitlab.models.loading import load_model
    from circuitlab.models.spec import looks_like_path
    from circuitlab.repl import Repl

    raw = parse_json_option(params, "--params")
    lrp = parse_params(LrpConfig, json.dumps({"metric": "top_other", **raw}))
    source = model_input(Path(model)) if looks_like_path(model) else model
    lm = load_model(model_spec(source, device, backend))
    pairs: frozenset[tuple[int, int]] = frozenset()
    if blacklist_file is not None:
        bl = Blacklist.load(require(blacklist_file, "blacklist"))
        bl.check_shape(lm.dims)
        pairs = frozenset(bl.pairs())
    Repl(
        lm, name=Path(model).name or model, top_k=top_k, max_new_tokens=max_new_tokens,
        lrp=lrp, blacklist=pairs,
    ).run()  # fmt: skip


@app.command()
def results(
    data: Path = typer.Option(Path("data"), help="the run's artifacts (data/)"),
    out: Path = typer.Option(Path("RESULTS.md"), callback=output_path, help="where to write"),
    models: list[str] = typer.Option(
        None, "--model", help="only this model (repeat; default: every model of the run)"
    ),
) -> None:
    """The results tables of a run (RESULTS.md), read from its artifacts and stamped with the
    model's weights and the commit they came from."""
    from circuitlab.io import write_text_atomic
    from circuitlab.report.results import render_results

    write_text_atomic(out, render_results(data, models or ()))
    typer.echo(f"wrote {out}")
