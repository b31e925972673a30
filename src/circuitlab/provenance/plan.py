"""``circuitlab plan`` (``make plan``): what the next run would redo, and why, in words.

It asks Snakemake itself — a dry run (``snakemake -n``) with the default profile — and turns
each job's reason into a sentence: which config keys changed (the JSON slices a rule passes
are compared key by key), which package modules changed (the rule's ``code`` param, see
`circuitlab.provenance.code`), which inputs are new, missing or rebuilt upstream. Nothing is
run and nothing is written.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuitlab.provenance.code import parse_param

_LITERAL = re.compile(
    r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)|None|True|False"""
)


@dataclass
class Job:
    rule: str
    reason: str
    wildcards: str = ""
    why: list[str] = field(default_factory=list)


def parse_dry_run(text: str) -> list[Job]:
    """The jobs a ``snakemake -n`` output lists (rule, reason, wildcards); ``all`` excluded."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head or head[1] == "all":
            continue
        fields = {
            key: (m[1] if (m := re.search(rf"^\s+{key}: (.*)$", block, re.M)) else "")
            for key in ("reason", "wildcards")
        }
        jobs.append(Job(head[1], fields["reason"], fields["wildcards"]))
    return jobs


def missing_metadata(text: str) -> list[str]:
    """The rules whose finished jobs Snakemake has no record of (``Rules with missing
    metadata: …`` in a dry run): a change of their code or config cannot trigger a rerun."""
    found = re.search(r"^Rules with missing metadata: (.+)$", text, re.M)
    return sorted(set(found[1].split())) if found else []


def _literals(text: str) -> list[Any]:
    """Python literals written one after another with commas (Snakemake's params reprs)."""
    out = []
    for m in _LITERAL.finditer(text):
        try:
            out.append(ast.literal_eval(m[0]))
        except (ValueError, SyntaxError):
            out.append(m[0])
    return out


def _as_json(value: Any) -> Any:
    """A param value as data: a shell-quoted JSON slice is parsed, anything else kept."""
    if isinstance(value, str):
        try:
            words = shlex.split(value)
            if len(words) == 1:
                return json.loads(words[0])
        except ValueError:
            pass
    return value


def _is_code(value: Any) -> bool:
    return isinstance(value, str) and bool(
        re.match(r"^\S+=[0-9a-f]{12}( \S+=[0-9a-f]{12})*$", value)
    )


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys (an empty mapping is a value: a task with
    no parameters of its own is still a key)."""
    if isinstance(value, dict) and (value or not prefix):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _code_change(before: str, now: str) -> list[str]:
    old, new = parse_param(before), parse_param(now)
    out = []
    changed = sorted(m for m in old.keys() & new.keys() if old[m] != new[m])
    if changed:
        out.append("code changed: " + ", ".join(changed))
    if new.keys() - old.keys():
        out.append("code now imports: " + ", ".join(sorted(new.keys() - old.keys())))
    if old.keys() - new.keys():
        out.append("code no longer imports: " + ", ".join(sorted(old.keys() - new.keys())))
    return out


@dataclass(frozen=True)
class ConfigKeys:
    """The run's resolved config (every key, defaults included) flattened to dotted keys, to
    name the config key behind a param: Snakemake's reason gives a param's values, not its
    name, and a rule's JSON slice holds a section's keys without the section."""

    flat: dict[str, Any] = field(default_factory=dict)

    def name(self, key: str | None, value: Any = ...) -> str:
        """The dotted config key(s) now holding `value` (any value when not given: a key the
        change removed) whose name ends with `key` (any name when `key` is None); `key` itself
        (or "a param") when no key or too many match."""
        ends = (lambda k: True) if key is None else (lambda k: k == key or k.endswith("." + key))
        found = sorted(k for k, v in self.flat.items() if ends(k) and (value is ... or v == value))
        if len(found) == 1:
            return found[0]
        if 1 < len(found) <= 3:
            return " or ".join(found)
        return key if key is not None else "a param"


def _is_manifest(value: Any) -> bool:
    """The report rule's manifest param: the list of files the report reads."""
    return isinstance(value, dict) and {"models", "benchmarks"} <= value.keys()


def _manifest_change(before: dict, now: dict) -> list[str]:
    def files(m: dict) -> set[str]:
        return {str(v) for k, v in flatten(m).items() if isinstance(v, str) and "/" in v} | {
            b.get("path") for b in m.get("benchmarks", []) if isinstance(b, dict)
        }

    old, new = files(before), files(now)
    added, removed = len(new - old), len(old - new)
    if not added and not removed:
        return ["the report's list of files is reordered or relabelled"]
    return [f"the report reads {added} file(s) more and {removed} fewer (the job graph changed)"]


def _config_change(before: Any, now: Any, keys: ConfigKeys) -> list[str]:
    if _is_manifest(before) and _is_manifest(now):
        return _manifest_change(before, now)
    if isinstance(before, dict) and isinstance(now, dict):
        old, new = flatten(before), flatten(now)
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "∅") != new.get(k, "∅"))
        return [
            f"config {keys.name(k, new[k]) if k in new else keys.name(k)}: "
            f"{_short(old[k]) if k in old else '(unset)'} → "
            f"{_short(new[k]) if k in new else '(unset)'}"
            for k in changed
        ]
    return [f"config {keys.name(None, now)}: {_short(before)} → {_short(now)}"]


def explain_params(reason: str, keys: ConfigKeys | None = None) -> list[str]:
    """Sentences for Snakemake's 'Params have changed …: before: … now: …' reason."""
    keys = keys or ConfigKeys()
    m = re.search(r"before: (.*?) now: (.*)$", reason)
    if not m:
        return ["params changed"]
    before, now = _literals(m[1]), _literals(m[2])
    out = []
    old_code = [v for v in before if _is_code(v)]
    new_code = [v for v in now if _is_code(v)]
    if old_code and new_code:
        out += _code_change(old_code[0], new_code[0])
    elif new_code:
        out.append("code fingerprint recorded for the first time")
    old_rest = [_as_json(v) for v in before if not _is_code(v)]
    new_rest = [_as_json(v) for v in now if not _is_code(v)]
    # pair JSON slices by their keys, scalars in order
    for value in new_rest:
        match = None
        if isinstance(value, dict):
            match = max(
                (o for o in old_rest if isinstance(o, dict)),
                key=lambda o: len(o.keys() & value.keys()),
                default=None,
            )
        elif old_rest and not isinstance(old_rest[0], dict):
            match = old_rest[0]
        if match is not None:
            old_rest.remove(match)
            out += _config_change(match, value, keys)
        elif _is_manifest(value):
            out.append("the report's list of files is new")
        else:
            out.append(f"new param {_short(value)}")
    out += [f"param removed: {_short(v)}" for v in old_rest]
    return out or ["params changed"]


def _paths(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def explain(reason: str, keys: ConfigKeys | None = None) -> list[str]:
    """One job's Snakemake reason as sentences (several reasons are joined by '; ')."""
    out: list[str] = []
    for part in re.split(r";\s*(?=[A-Z])", reason):
        part = part.strip()
        if part.startswith("Missing output files"):
            out.append("output missing (never built, or deleted)")
        elif part.startswith("Input files updated by another job"):
            out.append("an input is rebuilt upstream in this run")
        elif part.startswith("Updated input files"):
            names = _paths(part.split(":", 1)[1]) if ":" in part else []
            out += [f"input changed: {p}" for p in names] or ["an input changed"]
        elif part.startswith("Params have changed"):
            out += explain_params(part, keys)
        elif part.startswith("Code has changed"):
            out.append("the rule's shell command changed")
        elif part.startswith("Set of input files has changed"):
            out.append("the set of inputs changed (e.g. a method added or removed)")
        elif part.startswith("Forced execution"):
            out.append("forced: an output edited or deleted by hand (above), or --forcerun")
        elif part:
            out.append(part[0].lower() + part[1:])
    return out


def plan(
    jobs: Sequence[Job], keys: ConfigKeys | None = None
) -> dict[str, tuple[int, Counter[str]]]:
    """Rule -> (number of jobs, how many of them have each reason)."""
    counts = Counter(j.rule for j in jobs)
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for job in jobs:
        job.why = explain(job.reason, keys)
        reasons[job.rule].update(set(job.why))
    return {rule: (n, reasons[rule]) for rule, n in counts.items()}


def dry_run(workdir: Path, snakemake: str, args: Sequence[str]) -> str:
    """The text of ``snakemake -n`` with the default profile (and ``args``) in ``workdir``."""
    cmd = [snakemake, "-n", "--workflow-profile", "workflow/profiles/default", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{snakemake_error(text)}")
    return text


def snakemake_error(text: str, most: int = 8) -> str:
    """What a failed Snakemake run says, without its traceback: the lines from its last error
    on (Python's frames and the code they quote left out), at most `most` of them."""
    lines = [line for line in text.splitlines() if line.strip()]
    starts = [
        i for i, line in enumerate(lines)
        if re.match(r"^(\w*(Error|Exception)\b|error:|circuitlab:)", line)
    ]  # fmt: skip
    tail = lines[starts[-1] :] if starts else lines[-most:]
    kept = [
        line for line in tail
        if not line.startswith(("Traceback", "  File ")) and not re.match(r"^\s+[\^~]+\s*$", line)
    ]  # fmt: skip
    return "\n".join(kept[:most])
