"""`circuitlab <stage> …` — the only way a stage runs (Snakemake rules call these commands).

Each command: parse and validate its inputs, call the stage's pure function, write the
artifacts atomically, and report every number once through `circuitlab.tracking`.
Errors the user can fix (`CircuitlabError`) print one clear message and exit with code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from circuitlab.errors import CircuitlabError, ConfigError, DatasetError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from circuitlab.models import LoadedModel

M = TypeVar("M", bound="BaseModel")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="circuitlab: circuit discovery and steering for transformer LMs, one stage at a time.",
)
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from circuitlab import __version__

        typer.echo(f"circuitlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version"
    ),
) -> None:
    """circuitlab: circuit discovery and steering for transformer LMs, one stage at a time."""


PARAMS_HELP = "the stage's config slice as a JSON object (Snakemake passes it from config.yaml)"


def parse_json_option(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} is not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a JSON object, got {type(value).__name__}")
    return value


#: the outputs of the running command (recorded after it succeeds: provenance.manifest)
_OUTPUTS: list[Path] = []


def _output(directory: bool) -> Callable[[Path | None], Path | None]:
    """Callback of an output option (a file, or a ``directory`` replaced whole): checked
    writable before the stage starts, and recorded once it succeeds."""

    def check(path: Path | None) -> Path | None:
        from circuitlab.io import check_writable

        if path is None:
            return None
        _OUTPUTS.append(path)
        return check_writable(path, directory=directory)

    return check


output_path = _output(directory=False)
output_dir = _output(directory=True)


def input_of(rule: str) -> Callable[[Path | None], Path | None]:
    """Callback of an input option: the file must exist before the stage starts; the error
    names ``rule``, the pipeline rule that makes it."""

    def check(path: Path | None) -> Path | None:
        from circuitlab.io import require

        return None if path is None else require(path, rule)

    return check


def circuit_input(path: Path | None) -> Path | None:
    """A circuit input: named by the rule that makes that kind of circuit."""
    from circuitlab.io import require

    if path is None:
        return None
    rule = {"lrp": "lrp_circuit", "contrastive": "contrastive_circuit"}.get(
        path.stem, "acdc_circuit"
    )
    return require(path, rule)


# the input options' checks, by the rule that makes the file
ROWS_IN = input_of("datasets")
CHECKED_ROWS_IN = input_of("check_dataset")
CAA_IN = input_of("caa")
ATTRIBUTION_IN = input_of("lrp_attribution")
BLACKLIST_IN = input_of("blacklist")
CIRCUIT_IN = circuit_input


def model_input(path: Path) -> Path:
    """A model artifact given to a stage: must exist, else name the rule that makes it."""
    from circuitlab.io import require

    return require(path, "model_ref" if path.suffix == ".json" else "train_toy_model")


def adapter_model_input(stage: str) -> Callable[[Path], Path]:
    """The model input of a stage that needs circuitlab's adapter: a model reference with
    ``backend: transformer_lens`` fails here, before anything heavy is imported."""

    def check(path: Path) -> Path:
        path = model_input(path)
        if path.suffix == ".json":
            from circuitlab.models.bridge import needs_adapter_message
            from circuitlab.models.spec import ModelSpec

            spec = ModelSpec.from_reference(path)
            if spec.backend == "transformer_lens":
                raise typer.BadParameter(needs_adapter_message(stage, spec.id))
        return path

    return check


#: the model inputs of the stages that need circuitlab's adapter, by rule
ADAPTER_MODEL_IN = {
    rule: adapter_model_input(stage)
    for rule, stage in {
        "blacklist": "the neuron blacklist",
        "lrp_attribution": "LRP attribution",
        "lrp_faithfulness": "LRP faithfulness",
        "contrastive_circuit": "the contrastive neuron circuit",
        "steering": "neuron steering",
        "compare": "CAA vs circuit",
    }.items()
}


def load_stage_model(path: Path) -> LoadedModel:
    """A stage's model with its tokenizer (stages run text prompts): must exist and load."""
    from circuitlab.models import load_model

    return load_model(model_input(path), tokenizer=True)


def parse_params(model: type[M], text: str, option: str = "--params") -> M:
    """A stage's JSON option validated as its pydantic model (errors name the bad keys)."""
    from circuitlab.validation import parse_model

    return parse_model(model, parse_json_option(text, option), option)


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
    from circuitlab.provenance.plan import dry_run, parse_dry_run
    from circuitlab.provenance.plan import plan as summarise

    exe = Path(sys.executable).parent / "snakemake"
    snakemake = str(exe) if exe.exists() else shutil.which("snakemake")
    if snakemake is None:
        raise CircuitlabError("snakemake is not installed here: run `make setup` first")
    if not (workdir / "Snakefile").exists():
        raise CircuitlabError(f"{workdir.resolve()} has no Snakefile: run in the project folder")
    args = ["--configfile", str(configfile)] if configfile is not None else []
    for c in find_altered(workdir):
        err_console.print(
            f"{c.why} by hand since its job wrote it: {c.path} — the next run sets it aside "
            "and rebuilds it with what depends on it"
        )
    try:
        text = dry_run(workdir, snakemake, args)
    except RuntimeError as exc:
        raise CircuitlabError(str(exc)) from None
    found = parse_dry_run(text)
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
    for rule, (n, reasons) in summarise(found).items():
        why = "\n".join(f"{r} ({c})" if c != n else r for r, c in reasons.most_common())
        table.add_row(rule, str(n), why)
    console.print(table)
    if jobs:
        for job in found:
            console.print(f"{job.rule} [{job.wildcards}]: " + "; ".join(job.why), highlight=False)


@app.command()
def altered(
    accept: bool = typer.Option(
        False, "--accept", help="record the files on disk now as current (after dvc checkout)"
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


@app.command()
def screenshot(
    report: Path = typer.Option(Path("data/report/index.html"), help="the report page"),
    out: Path = typer.Option(
        Path("data/report/screenshot.png"), callback=output_path, help="the PNG to write"
    ),
    width: int = typer.Option(1280, min=320, help="window width (CSS pixels)"),
    height: int = typer.Option(60000, min=320, help="window height: the page is long"),
) -> None:
    """A headless-Chromium screenshot of the report, to look at every figure as a browser
    draws it (`make screenshots`)."""
    from circuitlab.report.screenshot import screenshot as shoot

    typer.echo(f"wrote {shoot(report, out, width=width, height=height)}")


@app.command()
def export(
    circuit: Path = typer.Option(
        ...,
        callback=CIRCUIT_IN,
        help="an edge circuit (data/circuits/…/{acdc,eap,…}.json) or a "
        "neuron circuit (…/lrp.json, …/contrastive.json)",
    ),
    out: Path = typer.Option(..., callback=output_path, help="the export (JSON)"),
    tau: float = typer.Option(None, help="edge circuits: the τ of the sweep nearest this"),
    label: str = typer.Option(None, help="edge circuits: the circuit with this label (top=40…)"),
) -> None:
    """Write a circuit in TransformerLens 4 hook names (circuitlab.interop.tl), for a TL user."""
    from circuitlab.acdc.artifact import FORMAT as EDGE_FORMAT
    from circuitlab.acdc.artifact import load_circuit
    from circuitlab.interop.tl import export_edges, export_neurons, pick_circuit
    from circuitlab.io import read_json, write_json
    from circuitlab.lrp.circuit import FORMAT as NEURON_FORMAT
    from circuitlab.lrp.circuit import NeuronCircuit

    kind = read_json(circuit).get("format")
    if kind == EDGE_FORMAT:
        art = load_circuit(circuit)
        data = export_edges(art, pick_circuit(art, tau, label))
    elif kind == NEURON_FORMAT:
        if tau is not None or label is not None:
            raise ConfigError("--tau and --label choose among an edge artifact's circuits")
        data = export_neurons(NeuronCircuit.load(circuit))
    else:
        raise ConfigError(
            f"{circuit} is neither an edge circuit ({EDGE_FORMAT}) nor a neuron circuit "
            f"({NEURON_FORMAT}); its format is {kind!r}"
        )
    write_json(out, data)
    n = len(data["kept"]) if data["kind"] == "edges" else len(data["neurons"])
    typer.echo(f"wrote {out}: {n} {data['kind']} in TransformerLens hook names")


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
    typer.echo(f"  models:     {', '.join(cfg.active_models())}")
    typer.echo(f"  tasks:      {', '.join(cfg.task_names()) or '-'}")
    typer.echo(f"  behaviours: {', '.join(cfg.behaviour_names()) or '-'}")


@app.command()
def datasets(
    task: str = typer.Option(..., help="a registered task or behaviour family"),
    params: str = typer.Option("{}", help=PARAMS_HELP),
    seed: int = typer.Option(0, help="dataset seed"),
    out: Path = typer.Option(..., callback=output_path, help="data/datasets/{task}.jsonl"),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/datasets/{task}.json"
    ),
) -> None:
    """Build one task family's rows (train and test splits, disjoint by entity)."""
    from circuitlab import tracking
    from circuitlab.io import write_jsonl
    from circuitlab.tasks import build_rows, get_family

    family = get_family(task)
    p = parse_params(family.params, params)
    rows = build_rows(task, p, seed)
    write_jsonl(out, (r.model_dump() for r in rows))
    counts = {s: sum(r.split == s for r in rows) for s in ("train", "test")}
    tracking.log_metrics(
        "datasets",
        {"n_rows": len(rows), "n_train": counts["train"], "n_test": counts["test"]},
        metrics,
        config={"task": task, "seed": seed, **p.model_dump()},
        run_name=f"datasets/{task}",
    )


@app.command("train-toy-model")
def train_toy_model(
    params: str = typer.Option(..., help=PARAMS_HELP + " (the model's entry, source: toy)"),
    tasks: str = typer.Option(..., help="JSON object: family name -> its corpus params"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(
        ..., callback=output_dir, help="data/models/{model} (a save_pretrained directory)"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/train_toy_model/{model}.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="data/plots/train_toy_model/{model}.json (loss curve)"
    ),
    name: str = typer.Option("toy", help="the model's name in the config"),
) -> None:
    """Train the embedded default model on the task corpus and save it with save_pretrained."""
    from circuitlab import tracking
    from circuitlab.io import atomic_path
    from circuitlab.models.toy import build_toy_model
    from circuitlab.models.toy.settings import ToyModelConfig

    cfg = parse_params(ToyModelConfig, params)
    model, tokenizer, result = build_toy_model(cfg, parse_json_option(tasks, "--tasks"), seed)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    tracking.log_metrics(
        "train_toy_model",
        {
            "final_loss": result.losses[-1],
            "train_seconds": round(result.seconds, 3),
            "corpus_sentences": result.n_sequences,
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
        },
        metrics,
        config=cfg.model_dump(mode="json") | {"seed": seed},
        series={"loss": result.losses},
        steps=result.loss_steps,
        plots_out=plot,
        run_name=f"train_toy_model/{name}",
    )


@app.command("model-ref")
def model_ref(
    params: str = typer.Option(..., help=PARAMS_HELP + " (the model's entry, source: hf)"),
    out: Path = typer.Option(..., callback=output_path, help="data/models/{model}.json"),
) -> None:
    """Record a hub model reference (id, revision, dtype, device) for the later stages."""
    from circuitlab.models.settings import HubModelConfig
    from circuitlab.models.spec import ModelSpec

    cfg = parse_params(HubModelConfig, params)
    ModelSpec(**cfg.model_dump(exclude={"source"})).to_reference(out)


@app.command("check-dataset")
def check_dataset(
    model: Path = typer.Option(
        ..., callback=model_input, help="data/models/{model} directory or {model}.json reference"
    ),
    data: Path = typer.Option(..., callback=ROWS_IN, help="data/datasets/{task}.jsonl"),
    on_invalid: str = typer.Option("fail", help="fail | drop"),
    out: Path = typer.Option(
        ...,
        callback=output_path,
        help="data/datasets/{model}/{task}.jsonl (rows valid for the model)",
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/check_dataset/{model}/{task}.json"
    ),
) -> None:
    """Check a dataset against a model's tokenizer: equal clean/corrupt lengths, 1-token targets."""
    from circuitlab import tracking
    from circuitlab.io import write_jsonl
    from circuitlab.models.loading import load_tokenizer
    from circuitlab.tasks import check_for_tokenizer
    from circuitlab.tasks.io import load_rows

    if on_invalid not in ("fail", "drop"):
        raise ConfigError(f"--on-invalid must be 'fail' or 'drop', got {on_invalid!r}")
    rows = load_rows(data, rule="datasets")
    tokenizer = load_tokenizer(model_input(model))
    task = data.stem
    kept, report = check_for_tokenizer(rows, tokenizer, task=task, on_invalid=on_invalid)  # type: ignore[arg-type]
    write_jsonl(out, (r.model_dump() for r in kept))
    tracking.log_metrics(
        "check_dataset",
        report.model_dump(mode="json"),
        metrics,
        config={"task": task, "model": str(model), "on_invalid": on_invalid},
        run_name=f"check_dataset/{model.stem}/{task}",
    )


@app.command("evaluate-model")
def evaluate_model(
    model: Path = typer.Option(
        ..., callback=model_input, help="data/models/{model} directory or {model}.json reference"
    ),
    data: Path = typer.Option(
        ..., callback=CHECKED_ROWS_IN, help="data/datasets/{model}/{task}.jsonl"
    ),
    batch_size: int = typer.Option(64, min=1),
    min_accuracy: float = typer.Option(0.9, min=0.0, max=1.0),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/evaluate_model/{model}/{task}.json"
    ),
) -> None:
    """Top-1 accuracy and logit difference on a task's test split (and train split, for contrast)."""
    from circuitlab import tracking
    from circuitlab.models.evaluate import accuracy_gate, evaluate_task
    from circuitlab.tasks.io import load_rows

    rows = load_rows(data, rule="check_dataset")
    loaded = load_stage_model(model)
    task = data.stem
    scores = evaluate_task(loaded.model, loaded.tokenizer, rows, batch_size)
    tracking.log_metrics(
        "evaluate_model",
        scores,
        out,
        config={"model": str(model), "task": task, "batch_size": batch_size},
        run_name=f"evaluate_model/{model.stem}/{task}",
    )
    accuracy_gate(scores, min_accuracy, model_name=model.stem, task=task)


@app.command()
def blacklist(
    model: Path = typer.Option(
        ...,
        callback=ADAPTER_MODEL_IN["blacklist"],
        help="data/models/{model} directory or {model}.json reference",
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `blacklist` section)"),
    out: Path = typer.Option(..., callback=output_path, help="data/blacklists/{model}.json"),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/blacklist/{model}.json"
    ),
) -> None:
    """Universal neurons: top-k |activation| at the last position of most diverse prompts."""
    from circuitlab import tracking
    from circuitlab.blacklist.detect import detect_universal_neurons
    from circuitlab.blacklist.settings import BlacklistConfig

    cfg = parse_params(BlacklistConfig, params)
    lm = load_stage_model(model)
    found = detect_universal_neurons(
        lm,
        cfg.prompts,
        top_k=cfg.top_k,
        threshold_fraction=cfg.threshold_fraction,
        batch_size=cfg.batch_size,
    )
    found.save(out)
    per_layer: dict[str, int] = {}
    for layer, _ in found.pairs():
        per_layer[str(layer)] = per_layer.get(str(layer), 0) + 1
    tracking.log_metrics(
        "blacklist",
        {
            "n_neurons": len(found.pairs()),
            "n_detected": len(found.neurons),
            "n_known": len(found.known),
            "n_prompts": found.n_prompts,
            "stability": found.stability,
            "per_layer": per_layer,
        },
        metrics,
        config=cfg,
        run_name=f"blacklist/{model.stem}",
    )


@app.command("lrp-attribution")
def lrp_attribution(
    model: Path = typer.Option(
        ...,
        callback=ADAPTER_MODEL_IN["lrp_attribution"],
        help="data/models/{model} directory or {model}.json reference",
    ),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{task}.jsonl (checked rows)",
    ),
    blacklist_file: Path = typer.Option(
        None, "--blacklist", callback=BLACKLIST_IN, help="data/blacklists/{model}.json"
    ),
    params: str = typer.Option(
        "{}", help=PARAMS_HELP + " (the config's `lrp` section; `selection` is not read)"
    ),
    raw: Path = typer.Option(
        ..., callback=output_path, help="data/circuits/{model}/{task}/lrp.raw.safetensors"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/lrp_attribution/{model}/{task}.json"
    ),
) -> None:
    """LRP attributions of a task's train split (batched gradient × activation under the rules):
    the expensive half of an LRP circuit, which `lrp-circuit` selects from."""
    from circuitlab import tracking
    from circuitlab.blacklist.detect import Blacklist
    from circuitlab.io import require
    from circuitlab.lrp.attribution import attribute_lrp
    from circuitlab.lrp.settings import LrpConfig
    from circuitlab.tasks.io import load_rows

    cfg = parse_params(LrpConfig, params)
    rows = load_rows(data, rule="check_dataset", split="train")
    lm = load_stage_model(model)
    pairs: set[tuple[int, int]] = set()
    if blacklist_file is not None:
        bl = Blacklist.load(require(blacklist_file, "blacklist"))
        bl.check_shape(lm.dims)
        pairs = bl.pairs()
    task, name = data.stem, data.parent.name
    attr, result = attribute_lrp(lm, rows, cfg, task=task, blacklist=pairs)
    attr.save(raw)
    config = cfg.model_dump(mode="json", exclude={"selection"})
    tracking.log_metrics(
        "lrp_attribution", result, metrics, config=config, run_name=f"lrp_attribution/{name}/{task}"
    )


@app.command("lrp-circuit")
def lrp_circuit(
    raw: Path = typer.Option(
        ...,
        callback=ATTRIBUTION_IN,
        help="data/circuits/{model}/{task}/lrp.raw.safetensors",
    ),
    attribution: Path = typer.Option(
        ...,
        callback=ATTRIBUTION_IN,
        help="data/metrics/lrp_attribution/{model}/{task}.json (that step's metrics)",
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `lrp` section)"),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/circuits/{model}/{task}/lrp.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/lrp_circuit/{model}/{task}.json"
    ),
    plot: Path = typer.Option(None, callback=output_path, help="PNG: circuit neurons per layer"),
) -> None:
    """LRP neuron circuit: `lrp.selection` applied to saved attributions (no model is loaded, so a
    new selection costs seconds)."""
    from circuitlab import tracking
    from circuitlab.io import require
    from circuitlab.lrp.attribution import Attributions
    from circuitlab.lrp.discover import select_lrp
    from circuitlab.lrp.settings import LrpConfig
    from circuitlab.report.plots import neurons_per_layer

    cfg = parse_params(LrpConfig, params)
    attr = Attributions.load(require(raw, "lrp_attribution"))
    step = tracking.read_metrics(require(attribution, "lrp_attribution"))
    task, name = raw.parent.name, raw.parent.parent.name
    circuit, result = select_lrp(attr, cfg, step, model=name, task=task)
    circuit.save(out)
    if plot is not None:
        neurons_per_layer(circuit.per_layer(), plot, f"{name} / {task}: LRP circuit neurons")
    tracking.log_metrics(
        "lrp_circuit", result, metrics, config=cfg, run_name=f"lrp_circuit/{name}/{task}"
    )


@app.command("lrp-faithfulness")
def lrp_faithfulness(
    model: Path = typer.Option(
        ...,
        callback=ADAPTER_MODEL_IN["lrp_faithfulness"],
        help="data/models/{model} directory or {model}.json reference",
    ),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{task}.jsonl (checked rows)",
    ),
    raw: Path = typer.Option(
        ...,
        callback=ATTRIBUTION_IN,
        help="data/circuits/{model}/{task}/lrp.raw.safetensors",
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `lrp` section)"),
    faithfulness: str = typer.Option("{}", help=PARAMS_HELP + " (`faithfulness` section)"),
    seed: int = typer.Option(0),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/lrp_faithfulness/{model}/{task}.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="PNG: faithfulness curves, circuit vs random"
    ),
) -> None:
    """Faithfulness of LRP circuits of growing size on the test split, against random controls."""
    from circuitlab import tracking
    from circuitlab.io import require
    from circuitlab.lrp.attribution import Attributions, options
    from circuitlab.lrp.faithfulness import evaluate_faithfulness
    from circuitlab.lrp.selection import aggregate
    from circuitlab.lrp.settings import FaithfulnessConfig, LrpConfig
    from circuitlab.report.plots import faithfulness_curves
    from circuitlab.tasks.io import load_rows

    cfg = parse_params(LrpConfig, params)
    fcfg = parse_params(FaithfulnessConfig, faithfulness, "--faithfulness")
    rows = load_rows(data, rule="check_dataset")
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    if not train or not test:
        raise DatasetError(f"{data}: faithfulness needs both train and test rows")
    attr = Attributions.load(require(raw, "lrp_attribution"))
    lm = load_stage_model(model)
    task, name = data.stem, data.parent.name
    report = evaluate_faithfulness(
        lm,
        train,
        test,
        aggregate(attr, "mean"),
        opts=options(cfg),
        sizes=fcfg.sizes,
        ablations=fcfg.ablations,
        random_seeds=fcfg.random_seeds,
        calibration_neurons=fcfg.calibration_neurons,
        target=fcfg.target_faithfulness,
        seed=seed,
    )
    faithfulness_curves(report, plot, f"{name} / {task}")
    tracking.log_metrics(
        "lrp_faithfulness",
        report,
        metrics,
        config={"lrp": cfg.model_dump(mode="json"), "faithfulness": fcfg.model_dump(mode="json")},
        run_name=f"lrp_faithfulness/{name}/{task}",
    )


@app.command("contrastive-circuit")
def contrastive_circuit(
    model: Path = typer.Option(
        ...,
        callback=ADAPTER_MODEL_IN["contrastive_circuit"],
        help="data/models/{model} directory or {model}.json reference",
    ),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{behaviour}.jsonl (checked rows)",
    ),
    top_k: int = typer.Option(200, min=1),
    skip_layers: str = typer.Option("", help="comma-separated layers to exclude"),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/circuits/{model}/{behaviour}/contrastive.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/contrastive_circuit/{model}/{behaviour}.json"
    ),
) -> None:
    """Contrastive neurons of a behaviour: mean activation, positive minus negative prompts."""
    from circuitlab import tracking
    from circuitlab.lrp.discover import discover_contrastive
    from circuitlab.tasks.io import load_rows

    try:
        skip = [int(x) for x in skip_layers.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(
            f"--skip-layers must be comma-separated integers, got {skip_layers!r}"
        ) from exc
    rows = load_rows(data, rule="check_dataset", split="train")
    lm = load_stage_model(model)
    behaviour, name = data.stem, data.parent.name
    circuit = discover_contrastive(
        lm, rows, model=name, behaviour=behaviour, top_k=top_k, skip_layers=skip
    )
    circuit.save(out)
    tracking.log_metrics(
        "contrastive_circuit",
        {
            "n_neurons": len(circuit),
            "n_prompts": circuit.n_prompts,
            "max_abs_difference": max(abs(v) for v in circuit.neurons.values()),
            "neurons_per_layer": {str(k): v for k, v in circuit.per_layer().items()},
        },
        metrics,
        config={"top_k": top_k, "skip_layers": skip},
        run_name=f"contrastive_circuit/{name}/{behaviour}",
    )


@app.command("acdc-circuit")
def acdc_circuit(
    method: str = typer.Option(..., help="acdc | acdc_approx | acdc_window | head_pruning | eap"),
    model: Path = typer.Option(
        ..., callback=model_input, help="data/models/{model} directory or {model}.json reference"
    ),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{task}.jsonl (checked rows)",
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `acdc` section)"),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/circuits/{model}/{task}/{method}.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/acdc_circuit/{model}/{task}/{method}.json"
    ),
) -> None:
    """Edge circuit of a task's train split with one method (ACDC variants, head pruning, EAP)."""
    from circuitlab import tracking
    from circuitlab.acdc.artifact import CircuitArtifact, save_circuit
    from circuitlab.acdc.discover import discover
    from circuitlab.acdc.settings import ACDC_METHODS, AcdcConfig
    from circuitlab.tasks.io import load_rows

    cfg = parse_params(AcdcConfig, params)
    if method not in ACDC_METHODS:
        raise ConfigError(f"--method {method!r} is unknown; choose one of {list(ACDC_METHODS)}")
    rows = load_rows(data, rule="check_dataset", split="train")
    lm = load_stage_model(model)
    task, name = data.stem, data.parent.name
    result, numbers = discover(lm, rows, cfg, method, model=name, task=task)
    art = CircuitArtifact.from_json(result, f"{method} circuit")
    save_circuit(out, art)
    tracking.log_metrics(
        "acdc_circuit",
        numbers,
        metrics,
        config=cfg,
        run_name=f"acdc_circuit/{name}/{task}/{method}",
    )


@app.command("acdc-evaluate")
def acdc_evaluate(
    model: Path = typer.Option(
        ..., callback=model_input, help="data/models/{model} directory or {model}.json reference"
    ),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{task}.jsonl (checked rows)",
    ),
    circuits: list[Path] = typer.Option(
        ..., help="data/circuits/{model}/{task}/{method}.json (repeat the option per method)"
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `acdc` section)"),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/acdc_evaluate/{model}/{task}.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="PNG: faithfulness vs circuit size per method"
    ),
    dots: list[Path] = typer.Option(
        None,
        help="data/circuits/{model}/{task}/{method}.dot, one per --circuits in the same order: "
        "the reference circuit (`reference_tau`) as Graphviz DOT, a PNG beside it when "
        "Graphviz's `dot` is installed",
    ),
) -> None:
    """Faithfulness of every method's edge circuits on the test split, random controls, agreement;
    the reference circuit of each method drawn."""
    from circuitlab import tracking
    from circuitlab.acdc.artifact import load_circuit, render_png, to_dot
    from circuitlab.acdc.evaluate import evaluate_circuits
    from circuitlab.acdc.settings import AcdcConfig
    from circuitlab.io import write_text_atomic
    from circuitlab.report.plots import acdc_faithfulness
    from circuitlab.tasks.io import load_rows

    cfg = parse_params(AcdcConfig, params)
    if dots and len(dots) != len(circuits):
        raise ConfigError(f"--dots: {len(dots)} paths for {len(circuits)} --circuits")
    arts = [load_circuit(p) for p in circuits]
    rows = load_rows(data, rule="check_dataset")
    lm = load_stage_model(model)
    task, name = data.stem, data.parent.name
    report = evaluate_circuits(lm, rows, arts, cfg)
    acdc_faithfulness(report, plot, f"{name} / {task}: edge circuits (test split)")
    for art, dot in zip(arts, dots or [], strict=False):
        text = to_dot(art, art.reference_circuit(cfg.reference_tau))
        write_text_atomic(dot, text)
        report["methods"][art.method]["rendered"] = render_png(text, dot.with_suffix(".png"))
    tracking.log_metrics(
        "acdc_evaluate", report, metrics, config=cfg, run_name=f"acdc_evaluate/{name}/{task}"
    )


THREADS_HELP = "torch CPU threads (Snakemake passes the rule's `threads`; default: torch's)"


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _test_sets(paths: list[Path] | None, exclude: str) -> dict[str, Any]:
    """Other tasks' test rows (the leakage matrix), keyed by file stem."""
    from circuitlab.tasks.io import load_rows

    return {
        p.stem: load_rows(p, rule="check_dataset", split="test")
        for p in (paths or [])
        if p.stem != exclude
    }


def _write_steering(
    report: dict[str, Any], out: Path, metrics: Path, plot: Path, stage: str, run: str, cfg: Any
) -> None:
    from circuitlab import tracking
    from circuitlab.io import write_json
    from circuitlab.report.plots import steering_dose_response
    from circuitlab.steering.stages import metrics_view

    try:
        steering_dose_response(report, plot, run)
        write_json(out, {"format": "circuitlab.steering/1", **report})
        tracking.log_metrics(stage, metrics_view(report), metrics, config=cfg, run_name=run)
    except BaseException:  # no artifact is left after a failure
        for path in (plot, out, metrics):
            path.unlink(missing_ok=True)
        raise


@app.command()
def steering(
    model: Path = typer.Option(
        ...,
        callback=ADAPTER_MODEL_IN["steering"],
        help="data/models/{model} directory or {model}.json reference",
    ),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{name}.jsonl (checked rows)",
    ),
    circuit: Path = typer.Option(
        ..., callback=CIRCUIT_IN, help="data/circuits/{model}/{name}/{method}.json"
    ),
    others: list[Path] = typer.Option(
        None, help="data/datasets/{model}/{task}.jsonl of the other tasks (repeat; leakage)"
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `steering` section)"),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/steering/{model}/{name}/{method}.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/steering/{model}/{name}/{method}.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="data/plots/steering/{model}/{name}/{method}.png"
    ),
    threads: int = typer.Option(None, min=1, help=THREADS_HELP),
) -> None:
    """Steer a circuit's neurons on the test split: dose-response, side effects, random controls."""
    from circuitlab.io import require
    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.steering.settings import SteeringConfig
    from circuitlab.steering.stages import neuron_steering
    from circuitlab.tasks import get_family
    from circuitlab.tasks.io import load_rows

    _set_threads(threads)
    cfg = parse_params(SteeringConfig, params)
    name, model_name = data.stem, data.parent.name
    circ = NeuronCircuit.load(require(circuit, f"{circuit.stem}_circuit"))
    test = load_rows(data, rule="check_dataset", split="test")
    other = _test_sets(others, name)
    lm = load_stage_model(model)
    is_behaviour = get_family(name).kind == "behaviour"
    report = neuron_steering(lm, circ, test, other, cfg, name=name, is_behaviour=is_behaviour)
    report["model"] = model_name
    run = f"{model_name}/{name}/{circ.method}"
    _write_steering(report, out, metrics, plot, "steering", run, cfg)


@app.command()
def caa(
    model: Path = typer.Option(
        ..., callback=model_input, help="data/models/{model} directory or {model}.json reference"
    ),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{behaviour}.jsonl (checked rows)",
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `caa` section)"),
    steering_params: str = typer.Option(
        "{}", "--steering", help=PARAMS_HELP + " (the `steering` section: neutral prompts)"
    ),
    seed: int = typer.Option(0, help="validation split seed"),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/caa/{model}/{behaviour}.safetensors"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/caa/{model}/{behaviour}.json"
    ),
    threads: int = typer.Option(None, min=1, help=THREADS_HELP),
) -> None:
    """CAA vectors of a behaviour's train split; layer and multiplier chosen on a validation part."""
    from circuitlab import tracking
    from circuitlab.steering.caa import save_vectors
    from circuitlab.steering.settings import CaaConfig, SteeringConfig
    from circuitlab.steering.stages import build_caa
    from circuitlab.tasks.io import load_rows

    _set_threads(threads)
    cfg = parse_params(CaaConfig, params)
    scfg = parse_params(SteeringConfig, steering_params, "--steering")
    name, model_name = data.stem, data.parent.name
    train = load_rows(data, rule="check_dataset", split="train")
    lm = load_stage_model(model)
    vectors, meta, selection = build_caa(lm, train, cfg, scfg, name=name, seed=seed)
    save_vectors(out, vectors, {**meta, "model": model_name})
    try:
        tracking.log_metrics(
            "caa",
            selection,
            metrics,
            config={"caa": cfg.model_dump(mode="json"), "seed": seed},
            run_name=f"caa/{model_name}/{name}",
        )
    except BaseException:  # no artifact is left after a failure
        out.unlink(missing_ok=True)
        raise


@app.command("caa-steering")
def caa_steering(
    model: Path = typer.Option(
        ..., callback=model_input, help="data/models/{model} directory or {model}.json reference"
    ),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{behaviour}.jsonl (checked rows)",
    ),
    vectors: Path = typer.Option(
        ..., callback=CAA_IN, help="data/caa/{model}/{behaviour}.safetensors"
    ),
    others: list[Path] = typer.Option(
        None, help="data/datasets/{model}/{task}.jsonl of the tasks (repeat; leakage)"
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `caa` section)"),
    steering_params: str = typer.Option(
        "{}", "--steering", help=PARAMS_HELP + " (the `steering` section)"
    ),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/steering/{model}/{behaviour}/caa.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/steering/{model}/{behaviour}/caa.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="data/plots/steering/{model}/{behaviour}/caa.png"
    ),
    threads: int = typer.Option(None, min=1, help=THREADS_HELP),
) -> None:
    """The chosen CAA vector on the test split: dose-response, side effects, random vectors."""
    from circuitlab.steering.caa import load_vectors
    from circuitlab.steering.settings import CaaConfig, SteeringConfig
    from circuitlab.steering.stages import caa_steering as run_caa
    from circuitlab.tasks.io import load_rows

    _set_threads(threads)
    cfg = parse_params(CaaConfig, params)
    scfg = parse_params(SteeringConfig, steering_params, "--steering")
    name, model_name = data.stem, data.parent.name
    tensors, meta = load_vectors(vectors)
    test = load_rows(data, rule="check_dataset", split="test")
    other = _test_sets(others, name)
    lm = load_stage_model(model)
    report = run_caa(lm, tensors, meta, test, other, cfg, scfg, name=name)
    report["model"] = model_name
    run = f"{model_name}/{name}/caa"
    config = {"caa": cfg.model_dump(mode="json"), "steering": scfg.model_dump(mode="json")}
    _write_steering(report, out, metrics, plot, "caa_steering", run, config)


@app.command("steering-summary")
def steering_summary(
    reports: list[Path] = typer.Option(
        ..., help="data/steering/{model}/{name}/{method}.json (repeat per report)"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/steering/{model}/summary.json"
    ),
    plot: Path = typer.Option(
        ..., callback=output_path, help="data/plots/steering/{model}/leakage.png"
    ),
) -> None:
    """One model's task × task leakage matrix and steering-vs-control verdicts."""
    from circuitlab import tracking
    from circuitlab.io import read_json, require
    from circuitlab.report.plots import steering_leakage
    from circuitlab.steering.stages import leakage_matrix

    loaded = [read_json(require(p, "steering")) for p in reports]
    summary = leakage_matrix(loaded)
    model_name = reports[0].parent.parent.name
    steering_leakage(summary, plot, f"{model_name}: steering leakage (test split)")
    try:
        tracking.log_metrics(
            "steering_summary", summary, metrics, run_name=f"steering_summary/{model_name}"
        )
    except BaseException:
        plot.unlink(missing_ok=True)
        raise


@app.command()
def compare(
    model: Path = typer.Option(
        ...,
        callback=ADAPTER_MODEL_IN["compare"],
        help="data/models/{model} directory or {model}.json reference",
    ),
    data: Path = typer.Option(
        ...,
        callback=CHECKED_ROWS_IN,
        help="data/datasets/{model}/{behaviour}.jsonl (checked rows)",
    ),
    circuits: list[Path] = typer.Option(
        ..., help="data/circuits/{model}/{behaviour}/{method}.json (repeat per circuit)"
    ),
    vectors: Path = typer.Option(
        ..., callback=CAA_IN, help="data/caa/{model}/{behaviour}.safetensors"
    ),
    params: str = typer.Option("{}", help=PARAMS_HELP + " (the config's `compare` section)"),
    out: Path = typer.Option(
        ..., callback=output_path, help="data/compare/{model}/{behaviour}.json"
    ),
    metrics: Path = typer.Option(
        ..., callback=output_path, help="data/metrics/compare/{model}/{behaviour}.json"
    ),
    pareto_plot: Path = typer.Option(
        ..., callback=output_path, help="PNG: effect vs side effect per method"
    ),
    overlap_plot: Path = typer.Option(
        ..., callback=output_path, help="PNG: overlap heatmap per layer"
    ),
) -> None:
    """CAA vectors vs neuron circuits of a behaviour: overlaps with permutation nulls, sparse
    decomposition, and circuit steering vs CAA vs the circuit-rebuilt vector per unit KL."""
    from circuitlab import tracking
    from circuitlab.compare.settings import CompareConfig
    from circuitlab.compare.stage import compare_behaviour, metrics_view
    from circuitlab.io import require, write_json
    from circuitlab.lrp.circuit import NeuronCircuit
    from circuitlab.report.plots import compare_overlap, compare_pareto
    from circuitlab.steering.caa import load_vectors
    from circuitlab.tasks.io import load_rows

    cfg = parse_params(CompareConfig, params)
    names = [c.stem for c in circuits]
    if len(set(names)) != len(names):
        raise ConfigError(f"--circuits names (file stems) must be distinct, got {names}")
    loaded = {
        name: NeuronCircuit.load(
            require(path, "lrp_circuit" if name == "lrp" else f"{name}_circuit")
        )
        for name, path in zip(names, circuits, strict=True)
    }
    tensors, _meta = load_vectors(vectors)
    rows = load_rows(data, rule="check_dataset")
    lm = load_stage_model(model)
    behaviour, name = data.stem, data.parent.name
    report = compare_behaviour(lm, rows, loaded, tensors, cfg)
    title = f"{name} / {behaviour}: CAA vs circuit"
    compare_pareto(report, pareto_plot, title)
    compare_overlap(report, overlap_plot, title)
    write_json(
        out,
        {
            "format": "circuitlab.compare/1",
            "model": name,
            "behaviour": behaviour,
            "circuits": {n: str(p) for n, p in zip(names, circuits, strict=True)},
            "vectors": str(vectors),
            "params": cfg.model_dump(mode="json"),
            **report,
        },
    )
    tracking.log_metrics(
        "compare", metrics_view(report), metrics, config=cfg, run_name=f"compare/{name}/{behaviour}"
    )


@app.command()
def repl(
    model: str = typer.Option(..., help="a model directory, {model}.json reference or hub id"),
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
    from circuitlab.blacklist.detect import Blacklist
    from circuitlab.io import require
    from circuitlab.lrp.settings import LrpConfig
    from circuitlab.models.loading import load_model
    from circuitlab.models.spec import looks_like_path
    from circuitlab.repl import Repl

    raw = parse_json_option(params, "--params")
    lrp = parse_params(LrpConfig, json.dumps({"metric": "top_other", **raw}))
    lm = load_model(model_input(Path(model)) if looks_like_path(model) else model)
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
def report(
    manifest: str = typer.Option(
        ..., help="JSON object: the artifacts to show per model and section (report_manifest())"
    ),
    out: Path = typer.Option(..., callback=output_path, help="data/report/index.html"),
) -> None:
    """The self-contained HTML report of a run (figures inlined, nothing fetched)."""
    from circuitlab.report.html import parse_manifest, write_report

    write_report(parse_manifest(parse_json_option(manifest, "--manifest")), out)
    typer.echo(f"wrote {out}")


def _log_to_stderr() -> None:
    """The package's log lines (``logging.getLogger("circuitlab…")``, INFO and up: e.g. a cap
    on the prompts a stage uses) go to stderr, i.e. into the job's log."""
    import logging

    logger = logging.getLogger("circuitlab")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("circuitlab: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _start(argv: list[str]) -> None:
    """Before any command runs (and before torch is imported): the numerics pins, the command
    this process runs (for its provenance record), and, when ``CIRCUITLAB_TRACE_MODULES``
    names a folder, a record of the package modules it loaded (the code-fingerprint test)."""
    import os

    from circuitlab.provenance import ENV_COMMAND, ENV_PLUGINS, numerics
    from circuitlab.provenance.code import plugins_for

    numerics.apply()
    _log_to_stderr()
    words = [a for a in argv if not a.startswith("-")]
    if words:
        method = argv[argv.index("--method") + 1] if "--method" in argv[:-1] else None
        os.environ[ENV_COMMAND] = words[0]
        os.environ[ENV_PLUGINS] = ",".join(plugins_for(words[0], method))
    trace = os.environ.get("CIRCUITLAB_TRACE_MODULES")
    if trace:
        import atexit

        def write_trace() -> None:
            mods = sorted(
                m for m in sys.modules if m == "circuitlab" or m.startswith("circuitlab.")
            )
            record = {"argv": argv, "modules": mods}
            path = Path(trace) / f"{os.getpid()}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))

        atexit.register(write_trace)


def main() -> None:
    """Entry point: user-fixable errors print a message and exit 2, bugs keep their traceback."""
    _start(sys.argv[1:])
    _OUTPUTS.clear()
    try:
        rc = app(standalone_mode=False)  # an abort (Ctrl-C) returns its exit code here
        if isinstance(rc, int) and rc != 0:
            sys.exit(rc)
        if _OUTPUTS:
            from circuitlab.provenance.manifest import record_outputs

            record_outputs(_OUTPUTS)
    except CircuitlabError as exc:
        err_console.print(
            Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True
        )
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        # typer ≥ 0.29 raises its own vendored click's errors (e.g. `--batch-size 0`), which
        # are TyperExceptions, not click.ClickExceptions
        usage = isinstance(exc, click.ClickException) or (
            isinstance(exc, typer.TyperException) and hasattr(exc, "show")
        )
        if usage:
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
