"""The CLI's shared parts: the typer `app` every command module registers on, the option
checks every stage shares (inputs named by the rule that makes them, outputs checked writable
and recorded, the model options), and the entry point `main`.

Nothing here imports torch or a stage: option callbacks run before any stage code, so a
mistyped path fails in a fraction of a second.
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

from circuitlab.errors import CircuitlabError, ConfigError
from circuitlab.io import Outputs

if TYPE_CHECKING:
    from pydantic import BaseModel

    from circuitlab.models import LoadedModel
    from circuitlab.models.spec import ModelSpec

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


#: the outputs of the running command: recorded once it succeeds (provenance.manifest), all
#: removed if it fails after writing some (`io.Outputs`)
_OUTPUTS = Outputs()


def _output(directory: bool) -> Callable[[Path | None], Path | None]:
    """Callback of an output option (a file, or a ``directory`` replaced whole): checked
    writable before the stage starts, and recorded once it succeeds."""

    def check(path: Path | None) -> Path | None:
        from circuitlab.io import check_writable
        from circuitlab.tracking.headline import summary_path

        if path is None:
            return None
        _OUTPUTS.add(path)
        summary = summary_path(path)
        if summary is not None:  # a metrics file brings its summary (circuitlab.tracking.headline)
            _OUTPUTS.add(summary)
        return check_writable(path, directory=directory)

    return check


output_path = _output(directory=False)
output_dir = _output(directory=True)


def output_paths(paths: list[Path] | None) -> list[Path] | None:
    """Callback of a repeated output option: each path as `output_path`."""
    return None if paths is None else [output_path(p) for p in paths]  # type: ignore[misc]


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


MODEL_HELP = "data/models/{model} directory or {model}.json reference"


def model_option(rule: str | None = None) -> Any:
    """The `--model` option every stage shares: the artifact must exist (the error names the
    rule that makes it) and, for a ``rule`` that needs circuitlab's adapter
    (`circuitlab.stages.STAGES`), must not be a model on the TransformerLens backend — both
    checked before any stage code loads."""
    from circuitlab.stages import STAGES

    stage = STAGES[rule] if rule else None
    check = adapter_model_input(stage.label) if stage and stage.needs_adapter else model_input
    return typer.Option(..., callback=check, help=MODEL_HELP)


def _device(value: str | None) -> str | None:
    import re

    from circuitlab.models.spec import DEVICE_PATTERN

    if value is not None and not re.fullmatch(DEVICE_PATTERN, value):
        raise typer.BadParameter(f"{value!r} is not a device: use cpu, cuda, cuda:N or auto")
    return value


def device_option() -> Any:
    """`--device`: where the stage runs its model, overriding the model's own setting (a
    reference's ``device``; 'cpu' for a model directory). The pipeline passes the model
    entry's ``device``."""
    return typer.Option(
        None,
        callback=_device,
        help="cpu, cuda, cuda:N or auto (default: the model reference's device; cpu for a "
        "model directory)",
    )


def backend_option(rule: str | None = None) -> Any:
    """`--backend` for a model directory (a reference JSON names its own): ``native`` or
    ``transformer_lens``; refused before any stage code loads for a ``rule`` that needs
    circuitlab's adapter."""
    from circuitlab.stages import STAGES

    stage = STAGES[rule] if rule else None

    def check(value: str | None) -> str | None:
        if value not in (None, "native", "transformer_lens"):
            raise typer.BadParameter(f"{value!r}: use native or transformer_lens")
        if value == "transformer_lens" and stage is not None and stage.needs_adapter:
            from circuitlab.models.bridge import needs_adapter_message

            raise typer.BadParameter(needs_adapter_message(stage.label, "the model"))
        return value

    return typer.Option(
        None,
        callback=check,
        help="for a model directory: native (circuitlab's adapter) or transformer_lens "
        "(TransformerLens 4's bridge, hook-only stages); default native",
    )


def model_name_option() -> Any:
    """`--model-name`: the model's name in the pipeline (the rule's ``{model}``), recorded in
    what the stage writes. The pipeline always passes it; by hand it defaults to the name
    `job_names` reads off the input path."""
    return typer.Option(
        None, help="the model's name in the pipeline (default: read off the input's path)"
    )


def task_option() -> Any:
    """`--task`: the task or behaviour the stage runs on (the rule's ``{task}`` or
    ``{behaviour}``); defaults as `model_name_option`."""
    return typer.Option(
        None, help="the task or behaviour (default: the input file's name, <task>.jsonl)"
    )


def job_names(path: Path, model_name: str | None, task: str | None) -> tuple[str, str]:
    """(model name, task) of a stage run: as given on the command line (the pipeline gives
    both), else read off the path of its checked rows, ``data/datasets/<model>/<task>.jsonl``,
    or of a file laid out the same way (``…/<model>/<task>/<file>`` for a circuit's raw
    scores: pass the folder)."""
    return model_name or path.parent.name, task or path.stem


def model_spec(
    model: Path | str, device: str | None = None, backend: str | None = None
) -> ModelSpec:
    """The spec of a model directory, reference JSON or hub id, with the command line's
    ``device`` (`device_option`) and ``backend`` (`backend_option`, for a directory or hub id:
    a reference names its own, and the command line does not contradict it)."""
    from circuitlab.models.loading import resolve_spec
    from circuitlab.models.spec import ModelSpec

    spec = resolve_spec(model)
    update: dict[str, Any] = {}
    if device is not None:
        update["device"] = device
    if backend is not None:
        if str(model).endswith(".json") and backend != spec.backend:
            raise ConfigError(
                f"--backend {backend}: {model} is a model reference with backend "
                f"{spec.backend}; set `backend` in the model's config entry instead"
            )
        update["backend"] = backend
    return ModelSpec.model_validate({**spec.model_dump(), **update}) if update else spec


def load_stage_model(
    path: Path, device: str | None = None, backend: str | None = None
) -> LoadedModel:
    """A stage's model with its tokenizer (stages run text prompts): must exist and load, on
    the command line's ``device`` and ``backend`` (`model_spec`). On CUDA the determinism
    settings are made before the model is loaded (`numerics.set_determinism`), and the device
    and dtype the model ended up on are recorded in every result the stage writes
    (`circuitlab.provenance.job_record`)."""
    from circuitlab.models import load_model
    from circuitlab.provenance import note_device
    from circuitlab.provenance.numerics import device_record, set_determinism

    spec = model_spec(model_input(path), device, backend)
    set_determinism(spec.resolved_device())
    lm = load_model(spec, tokenizer=True)
    note_device(device_record(lm.device, lm.model.dtype))
    return lm


def parse_params(model: type[M], text: str, option: str = "--params") -> M:
    """A stage's JSON option validated as its pydantic model (errors name the bad keys)."""
    from circuitlab.validation import parse_model

    return parse_model(model, parse_json_option(text, option), option)


THREADS_HELP = "torch CPU threads (Snakemake passes the rule's `threads`; default: torch's)"


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


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
    """Before any command runs (and before torch is imported): the numerics pins, and, when
    ``CIRCUITLAB_TRACE_MODULES`` names a folder, a record of the package modules it loaded (the
    code-fingerprint test)."""
    import os

    from circuitlab import warm
    from circuitlab.provenance import numerics

    numerics.apply()
    _log_to_stderr()
    trace = os.environ.get("CIRCUITLAB_TRACE_MODULES")
    if trace:
        import atexit

        def write_trace() -> None:
            mods = sorted(
                m for m in sys.modules if m == "circuitlab" or m.startswith("circuitlab.")
            )
            record = {"argv": argv, "modules": mods, "warm": warm.in_warm_process()}
            path = Path(trace) / f"{os.getpid()}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))

        atexit.register(write_trace)


def main() -> None:
    """Entry point: user-fixable errors print a message and exit 2, bugs keep their traceback;
    either way a command that fails leaves none of its outputs."""
    from circuitlab import warm

    argv = sys.argv[1:]
    delegated = warm.delegate("circuitlab.cli:main", argv)  # in the run's warm process, if any
    if delegated is not None:
        sys.exit(delegated)

    from circuitlab.provenance import running
    from circuitlab.provenance.code import plugins_for

    _start(argv)
    _OUTPUTS.clear()
    words = [a for a in argv if not a.startswith("-")]
    method = argv[argv.index("--method") + 1] if "--method" in argv[:-1] else None
    command = words[0] if words else ""
    try:  # the command is named in every result's provenance while it runs, never after
        with running(command, plugins_for(command, method) if command else ()):
            code = _run()
    except BaseException:  # a bug (or an interpreter exit): its traceback stays
        _OUTPUTS.discard_written()
        raise
    if code:
        _OUTPUTS.discard_written()
        sys.exit(code)
    if _OUTPUTS:
        from circuitlab.provenance.manifest import record_outputs

        record_outputs(_OUTPUTS.paths())


def _run() -> int:
    """Run the command line's command: its exit code (0 on success)."""
    try:
        rc = app(standalone_mode=False)  # an abort (Ctrl-C) returns its exit code here
        return rc if isinstance(rc, int) else 0
    except CircuitlabError as exc:
        err_console.print(
            Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True
        )
        return 2
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        # typer ≥ 0.29 raises its own vendored click's errors (e.g. `--batch-size 0`), which
        # are TyperExceptions, not click.ClickExceptions
        usage = isinstance(exc, click.ClickException) or (
            isinstance(exc, typer.TyperException) and hasattr(exc, "show")
        )
        if usage:
            exc.show()  # type: ignore[attr-defined]
            return exc.exit_code  # type: ignore[attr-defined]
        raise
