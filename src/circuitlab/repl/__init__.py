"""`circuitlab repl`: explore a model's neuron circuits interactively (the seed's `interactive`).

The REPL only parses; every command is a call into the library — generation, top-k and
steering from `circuitlab.steering`, circuits from `circuitlab.lrp` (one prompt's LRP
attribution, then the top-k selection), circuit files in the `NeuronCircuit` format
(`data/circuits/...` files load directly). It reads lines from an input stream and writes to
an output stream, so tests drive it with scripted input. An error is printed and the loop goes
on; Ctrl-C cancels the running command (or the line being typed), not the REPL; EOF quits
(the loop itself, and the line history, are `circuitlab.repl.shell`).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from circuitlab.errors import CircuitlabError
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.lrp.settings import LrpConfig, SelectionConfig
from circuitlab.models.loading import LoadedModel
from circuitlab.repl.shell import Shell
from circuitlab.steering.neurons import (
    NeuronSet,
    SteeringError,
    check_multiplier,
    generate,
    parse_multipliers,
    steer_neurons,
    top_predictions,
)
from circuitlab.types import NeuronKey

SPEC = re.compile(r"^L(\d+)/N(\d+)$", re.IGNORECASE)
TOP = re.compile(r"^top(\d+)([+-]?)$", re.IGNORECASE)
SIGNED = {"supporters": 1, "opposers": -1}
DEFAULT_SWEEP = (0.0, 0.5, 1.0, 1.5, 2.0)


class ReplError(CircuitlabError):
    """A command the REPL cannot run as typed (missing prompt or circuit, bad argument)."""


@dataclasses.dataclass(frozen=True)
class NextToken:
    """The prompt's next token as the REPL reports it: the target's probability, its logit
    minus the best other logit, and the top-k (token, probability)."""

    p_target: float
    logit_diff: float
    top: list[tuple[str, float]]


class Repl(Shell):
    """The circuit commands over `Shell`'s loop: `run()` reads `stdin` until `quit` or EOF;
    `execute(line)` runs one line and returns False when the REPL should stop."""

    prompt_text = "circuit> "

    def __init__(
        self,
        lm: LoadedModel,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        *,
        name: str = "",
        top_k: int = 200,
        max_new_tokens: int = 20,
        lrp: LrpConfig | None = None,
        blacklist: frozenset[tuple[int, int]] = frozenset(),
    ) -> None:
        self.lm = lm
        super().__init__(stdin, stdout)
        self.name = name or lm.spec.id
        self.top_k = top_k
        self.max_new_tokens = max_new_tokens
        self.lrp = lrp or LrpConfig(metric="top_other")
        self.blacklist = blacklist
        self.prompt: str | None = None
        self.circuit: NeuronCircuit | None = None
        #: each circuit entry's support for the target (> 0 supports) and where it came from
        self.support: dict[NeuronKey, float] = {}
        self.support_source = ""
        self.multiplier = 1.0
        self.commands = {
            "prompt": self.do_prompt,
            "discover": self.do_discover,
            "ablate": self.do_ablate,
            "amplify": self.do_amplify,
            "sweep": self.do_sweep,
            "top": self.do_top,
            "save": self.do_save,
            "load": self.do_load,
            "multiplier": self.do_multiplier,
            "info": self.do_info,
            "help": self.do_help,
            "quit": self.do_quit,
            "exit": self.do_quit,
        }

    def banner(self) -> list[str]:
        d = self.lm.dims
        lines = [
            f"circuitlab REPL — model {self.name} ({d.n_layers} layers × {d.d_mlp} neurons)",
            "Type 'help' for commands, 'quit' (or Ctrl-D) to exit.",
        ]
        if self.lm.backend == "transformer_lens":
            lines.append(
                "This model runs with backend: transformer_lens: prompt, top and info work; "
                "discover, ablate, amplify and sweep need circuitlab's architecture adapter."
            )
        return lines

    # ----------------------------------------------------------------------- helpers
    def need_prompt(self) -> str:
        if self.prompt is None:
            raise ReplError("set a prompt first: prompt <text>")
        return self.prompt

    def need_circuit(self) -> NeuronCircuit:
        if self.circuit is None:
            raise ReplError("no circuit yet: run 'discover' or 'load <file>'")
        return self.circuit

    def select(self, spec: str) -> NeuronSet:
        """`L<l>/N<n>` (any neuron of the model); the circuit: `all`/nothing, `supporters`,
        `opposers`, `top<k>` (largest |attribution|, either sign), `top<k>+` / `top<k>-` (the k
        largest supporters / opposers). Signs are `self.support`'s (see `signs`)."""
        spec = spec.lower()
        if spec in ("", "all"):
            return NeuronSet.from_circuit(self.need_circuit()).validate(self.lm.dims)
        if spec in SIGNED:
            pairs = self.ranked(SIGNED[spec])
            if not pairs:
                raise ReplError(f"the circuit has no {spec} ({self.support_source})")
            return NeuronSet.from_pairs(pairs).validate(self.lm.dims)
        if m := TOP.match(spec):
            k = int(m.group(1))
            if k < 1:
                raise ReplError("top<k> needs k >= 1")
            sign = {"+": 1, "-": -1}.get(m.group(2), 0)
            pairs = self.ranked(sign)[:k]
            if not pairs:
                raise ReplError(f"the circuit has no {'supporters' if sign > 0 else 'opposers'}")
            return NeuronSet.from_pairs(pairs).validate(self.lm.dims)
        if m := SPEC.match(spec):
            layer, neuron = int(m.group(1)), int(m.group(2))
            return NeuronSet.from_pairs([(layer, neuron)]).validate(self.lm.dims)
        raise ReplError(
            f"unknown neuron spec {spec!r}; use L<layer>/N<neuron>, all, supporters, opposers, "
            "top<k>, top<k>+ or top<k>-"
        )

    def pair_support(self) -> dict[tuple[int, int], float]:
        """Each circuit neuron's support, `(layer, neuron)` → score (steering acts on a neuron at
        every position; `self.support` is measured that way, `signs.support_scores`)."""
        return {(ly, n): v for (ly, _, n), v in self.support.items()}

    def ranked(self, sign: int) -> list[tuple[int, int]]:
        """The circuit's distinct neurons, largest |attribution| first; with `sign` only the
        supporters (+1) or opposers (−1), largest support first."""
        circuit = self.need_circuit()
        if sign == 0:
            picked = [(ly, n) for (ly, _, n), _ in circuit.top(len(circuit))]
            return list(dict.fromkeys(picked))
        support = self.pair_support()
        chosen = [k for k, v in support.items() if v * sign > 0]
        return sorted(chosen, key=lambda k: -abs(support[k]))

    def signs(self, neurons: NeuronSet) -> str:
        """How many of `neurons` support or oppose the target, by `support_source`."""
        if self.circuit is None or not self.support:
            return ""
        support = self.pair_support()
        pairs = neurons.pairs()
        sup = sum(support.get(p, 0.0) > 0 for p in pairs)
        opp = sum(support.get(p, 0.0) < 0 for p in pairs)
        outside = sum(p not in support for p in pairs)
        parts = [f"{sup} supporting", f"{opp} opposing"] + (
            [f"{outside} outside the circuit"] if outside else []
        )
        return f" — {', '.join(parts)} the target ({self.support_source})"

    def continue_text(self, neurons: NeuronSet | None = None, multiplier: float = 1.0) -> str:
        prompt = self.need_prompt()
        if neurons is None:
            return generate(self.lm, [prompt], self.max_new_tokens)[0]
        with steer_neurons(self.lm, neurons, multiplier):
            return generate(self.lm, [prompt], self.max_new_tokens)[0]

    # ---------------------------------------------------------------------- commands
    def do_prompt(self, arg: str) -> None:
        """prompt <text> — set the prompt and show the model's continuation."""
        if not arg:
            self.say(f"prompt: {self.prompt!r}" if self.prompt else "usage: prompt <text>")
            return
        self.prompt = arg
        self.say(f"output: {self.continue_text()}")
        if self.circuit is not None:
            self.say(f"(circuit of {len(self.circuit)} neurons kept; 'discover' replaces it)")

    def do_discover(self, arg: str) -> None:
        """discover [target] — LRP circuit of the prompt (default target: top prediction).

        Metric: target − best other logit; keeps the top-k |attribution| neurons.
        """
        from circuitlab.lrp.attribution import attribute_rows
        from circuitlab.lrp.discover import circuit_from_attributions, options
        from circuitlab.types import TaskRow

        prompt = self.need_prompt()
        self.known_words(prompt, "prompt")
        preds = top_predictions(self.lm, prompt, 10)
        target = self.as_continuation(prompt, arg or preds[0][0])
        if not arg:
            self.say(f"target: {target!r} (p={preds[0][1]:.4f}, the top prediction)")
        # the metric is target − best other logit; a row still names a valid other answer
        others = (self.as_continuation(prompt, tok, quiet=True) for tok, _ in preds)
        other = next((c for c in others if c and c != target), None)
        if other is None:
            raise ReplError("no second single-token answer among the top predictions")
        row = TaskRow(
            id="repl", split="train", prompt=prompt, target=target, counterfactual=other,
            corrupt_prompt=prompt,
        )  # fmt: skip
        cfg = self.lrp.model_copy(
            update={"selection": SelectionConfig(method="topk", top_k=self.top_k)}
        )
        attr = attribute_rows(self.lm, [row], options(cfg, self.blacklist), progress=False)
        d = self.lm.dims
        circuit = circuit_from_attributions(
            attr, cfg, model=self.name, task="repl", n_layers=d.n_layers, d_mlp=d.d_mlp
        )
        self.circuit = dataclasses.replace(
            circuit, params={**circuit.params, "prompt": prompt, "target": target}
        )
        from circuitlab.steering.signs import sign_agreement, stored_scores, support_scores

        self.support = support_scores(self.lm, self.circuit, [row], "gradient", positions="all")
        self.support_source = "gradient × activation on this prompt, all positions"
        self.say(self.summary())
        stored = stored_scores(self.circuit, "all")
        agree = sign_agreement(stored, self.support)
        if agree is not None:
            self.say(
                f"  the LRP attribution's sign agrees with the gradient's for {agree:.0%} of them "
                "(LRP holds the norms constant; steering uses the gradient's sign)"
            )
        for label, sign in (("supporters", 1), ("opposers", -1)):
            keys = sorted((k for k, v in self.support.items() if v * sign > 0),
                          key=lambda k: -abs(self.support[k]))  # fmt: skip
            self.say(f"top {label} ({len(keys)} in all):")
            for key in keys[:5]:
                ly, _, n = key
                self.say(f"  L{ly}/N{n}  gradient×act={self.support[key]:+.5f}  "
                         f"attr={stored[key]:+.5f}")  # fmt: skip

    def as_continuation(self, prompt: str, text: str, quiet: bool = False) -> str | None:
        """`text` (or it with a leading space) as a one-token continuation of `prompt`."""
        from circuitlab.tasks.tokencheck import continuation

        tok = self.lm.tokenizer
        base = tok(prompt)["input_ids"]
        unk = getattr(tok, "unk_token_id", None)
        tries = [text] if text.startswith(" ") else [" " + text.strip(), text]
        for cand in tries:
            tid = (
                continuation(list(base), list(tok(prompt + cand)["input_ids"]))[0] if cand else None
            )
            if tid is not None and tid != unk:
                return cand
        if quiet:
            return None
        self.known_words(text, "target")
        raise ReplError(
            f"target {text!r} is not one token after the prompt for this tokenizer; give a "
            "single-token target"
        )

    def known_words(self, text: str, what: str) -> None:
        """A REPL error when ``text`` holds words the tokenizer maps to its unknown token."""
        tok = self.lm.tokenizer
        unk = getattr(tok, "unk_token_id", None)
        if unk is not None and unk in tok(text, add_special_tokens=False)["input_ids"]:
            raise ReplError(
                f"the {what} {text!r} has words this model's vocabulary does not know (they "
                f"become {tok.unk_token!r}); use words the model was trained on"
            )

    def do_ablate(self, arg: str) -> None:
        """ablate [L<l>/N<n> | all | supporters | opposers | top<k>[+|-]] — multiply the
        neurons by 0: what changes (and how many of them support or oppose the target)."""
        self.intervene(self.select(arg), 0.0, "ablated")

    def intervene(self, neurons: NeuronSet, m: float, verb: str) -> None:
        """Steer ``neurons`` by ``m``: the count (and what it merged), the target's probability
        and logit difference before → after, the top-k shift and the regenerated text."""
        self.lm.needs_adapter("neuron steering")  # before anything is printed
        self.say(f"{verb} {self.describe(neurons)}{self.signs(neurons)}, ×{m:g}")
        target = self.target()
        before = self.next_token(target)
        with steer_neurons(self.lm, neurons, m):
            after = self.next_token(target)
        self.say(
            f"  p({target!r}): {before.p_target:.4f} → {after.p_target:.4f}   "
            f"logit diff (target − best other): {before.logit_diff:+.3f} → {after.logit_diff:+.3f}"
        )
        k = len(before.top)
        self.say(f"  top {k} before: " + ", ".join(f"{t!r} {p:.3f}" for t, p in before.top))
        self.say(f"  top {k} after:  " + ", ".join(f"{t!r} {p:.3f}" for t, p in after.top))
        self.say(f"  output before: {self.continue_text()}")
        self.say(f"  output after:  {self.continue_text(neurons, m)}")

    def target(self) -> str:
        """The circuit's target (set by `discover`) or else the unsteered top prediction."""
        target = self.circuit.params.get("target") if self.circuit is not None else None
        if isinstance(target, str) and target:
            return target
        return top_predictions(self.lm, self.need_prompt(), 1)[0][0]

    def next_token(self, target: str, k: int = 5) -> NextToken:
        """The prompt's next-token distribution as the REPL reports it."""
        from circuitlab.steering.neurons import prompt_logits, token_ids

        try:
            tid = token_ids(self.lm.tokenizer, [target])[0]
        except CircuitlabError:
            raise ReplError(
                f"target {target!r} is not a single token of this tokenizer; 'discover <target>' "
                "with a one-token target"
            ) from None
        logits = prompt_logits(self.lm, [self.need_prompt()])[0]
        probs = logits.softmax(-1)
        other = logits.clone()
        other[tid] = float("-inf")
        top = probs.topk(min(k, probs.shape[0]))
        return NextToken(
            p_target=float(probs[tid]),
            logit_diff=float(logits[tid] - other.max()),
            top=[
                (self.lm.tokenizer.decode([int(i)]), float(p))
                for p, i in zip(top.values, top.indices, strict=True)
            ],
        )

    def describe(self, neurons: NeuronSet) -> str:
        """``N neurons``, saying how they relate to the circuit's entries when they differ: a
        circuit entry is (layer, position, neuron); steering acts on a neuron at every position,
        so entries of one neuron at several positions count once."""
        n = len(neurons.pairs())
        if self.circuit is None:
            return f"{n} neuron{'s' * (n != 1)}"
        entries = len(self.circuit)
        if neurons.pairs() == NeuronSet.from_circuit(self.circuit).pairs() and entries != n:
            return (
                f"{n} distinct neurons (the circuit's {entries} entries are (layer, position, "
                f"neuron); steering acts on a neuron at every position, so {entries - n} "
                "entries at a second position count once)"
            )
        return f"{n} neuron{'s' * (n != 1)}"

    def do_amplify(self, arg: str) -> None:
        """amplify [L<l>/N<n> | all | supporters | opposers | top<k>[+|-]] [multiplier] —
        default multiplier 2; `supporters` amplifies only the neurons that push the target up."""
        specs, numbers = [], []
        for part in arg.split():
            (numbers if _is_number(part) else specs).append(part)
        if len(specs) > 1 or len(numbers) > 1:
            raise ReplError(
                "usage: amplify [L<l>/N<n> | all | supporters | opposers | top<k>[+|-]] "
                "[multiplier]"
            )
        m = check_multiplier(float(numbers[0])) if numbers else 2.0
        self.intervene(self.select(specs[0] if specs else ""), m, "amplified")

    def do_sweep(self, arg: str) -> None:
        """sweep [m …] — regenerate with the whole circuit at each multiplier."""
        multipliers = parse_multipliers(arg) if arg else list(DEFAULT_SWEEP)
        neurons = self.select("")
        for m in multipliers:
            self.say(f"  ×{m:g}: {self.continue_text(neurons, m)}")

    def do_top(self, arg: str) -> None:
        """top [k] — the k most likely next tokens (circuit × the current multiplier)."""
        try:
            k = int(arg) if arg else 10
        except ValueError:
            raise ReplError(f"usage: top [k] (k a whole number), got {arg!r}") from None
        prompt = self.need_prompt()
        if self.circuit is not None and self.multiplier != 1.0:
            with steer_neurons(self.lm, NeuronSet.from_circuit(self.circuit), self.multiplier):
                preds = top_predictions(self.lm, prompt, k)
            self.say(f"top {k} (circuit ×{self.multiplier:g}):")
        else:
            preds = top_predictions(self.lm, prompt, k)
            self.say(f"top {k}:")
        for tok, p in preds:
            self.say(f"  {p:.4f} {'#' * int(p * 40):<40} {tok!r}")

    def do_save(self, arg: str) -> None:
        """save <file> — write the circuit (NeuronCircuit JSON)."""
        if not arg:
            raise ReplError("usage: save <file>")
        from circuitlab.io import check_writable

        circuit = self.need_circuit()
        path = check_writable(Path(_one_path(arg)))
        try:
            circuit.save(path)
        except OSError as exc:  # e.g. the disk full, or the folder made read-only meanwhile
            raise ReplError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.say(f"saved {len(circuit)} neurons to {path}")

    def do_load(self, arg: str) -> None:
        """load <file> — read a circuit (NeuronCircuit JSON, e.g. data/circuits/…/lrp.json)."""
        if not arg:
            raise ReplError("usage: load <file>")
        from circuitlab.io import require

        circuit = NeuronCircuit.load(require(_one_path(arg)))
        NeuronSet.from_circuit(circuit).validate(self.lm.dims)
        self.circuit = circuit
        from circuitlab.steering.signs import stored_scores

        self.support = stored_scores(circuit, "all")
        self.support_source = "the sign of the file's attribution, summed over positions"
        prompt = circuit.params.get("prompt")
        if isinstance(prompt, str) and prompt:
            self.prompt = prompt
            self.say(f"prompt: {prompt!r}")
        self.say(self.summary())

    def do_multiplier(self, arg: str) -> None:
        """multiplier [m] — show or set the multiplier 'top' applies to the circuit."""
        if arg:
            try:
                self.multiplier = check_multiplier(float(arg))
            except ValueError:
                raise SteeringError(f"multiplier {arg!r} is not a number") from None
        self.say(f"multiplier: {self.multiplier:g}")

    def do_info(self, _arg: str) -> None:
        """info — the model, prompt, circuit and multiplier."""
        d = self.lm.dims
        self.say(f"model: {self.name} ({d.n_layers} layers × {d.d_mlp} neurons)")
        self.say(f"prompt: {self.prompt!r}" if self.prompt else "prompt: (none)")
        self.say(self.summary() if self.circuit else "circuit: (none)")
        self.say(f"multiplier: {self.multiplier:g}")

    def summary(self) -> str:
        c = self.need_circuit()
        sup = sum(v > 0 for v in self.support.values())
        opp = sum(v < 0 for v in self.support.values())
        signs = (
            f"; {sup} supporters, {opp} opposers ({self.support_source})" if self.support else ""
        )
        per_layer = {ly: n for ly, n in c.per_layer().items() if n}
        layers = ", ".join(f"L{ly}: {n}" for ly, n in per_layer.items())
        n = len(NeuronSet.from_circuit(c).pairs())
        count = f"{len(c)} neurons" if n == len(c) else f"{len(c)} entries = {n} distinct neurons"
        excluded = f"; {len(self.blacklist)} blacklisted neurons excluded" if self.blacklist else ""
        return (
            f"circuit: {count} ({c.method}, {c.task}), metric {c.metric_value:.4f}; "
            f"per layer {layers or '-'}{excluded}{signs}"
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _one_path(arg: str) -> str:
    parts: Sequence[str] = shlex.split(arg)
    if len(parts) != 1:
        raise ReplError(f"give one file name, got {arg!r}")
    return parts[0]
