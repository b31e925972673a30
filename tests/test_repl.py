"""The REPL driven by scripted input on a tiny model: every command answers, results equal the
library's, errors keep the loop alive, Ctrl-C cancels a command, EOF quits."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from circuitlab import cli
from circuitlab import repl as repl_mod
from circuitlab.lrp.attribution import attribute_rows
from circuitlab.lrp.circuit import NeuronCircuit
from circuitlab.lrp.discover import circuit_from_attributions, options
from circuitlab.lrp.settings import LrpConfig, SelectionConfig
from circuitlab.repl import Repl
from circuitlab.steering.neurons import (
    NeuronSet,
    generate,
    prompt_logits,
    steer_neurons,
    token_ids,
    top_predictions,
)
from circuitlab.types import TaskRow
from tiny_models import build_tiny

PROMPT = "w1 w2 w3 w4"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("repl")
    return root / "tiny", build_tiny("LlamaForCausalLM", root / "tiny")


def session(lm, script: str, **kw) -> tuple[Repl, str]:
    out = io.StringIO()
    r = Repl(lm, io.StringIO(script), out, name="tiny", top_k=12, max_new_tokens=4, **kw)
    r.run()
    return r, out.getvalue()


def test_scripted_session_uses_the_library(tiny, tmp_path: Path) -> None:
    _, lm = tiny
    saved = tmp_path / "c.json"
    r, text = session(
        lm,
        f"prompt {PROMPT}\ntop 3\ndiscover\nablate all\namplify top3 5\nsweep 0 2\n"
        f"save {saved}\ninfo\nquit\nprompt never reached\n",
    )
    plain = generate(lm, [PROMPT], 4)[0]
    assert f"output: {plain}" in text
    # discover = one prompt's LRP attribution + top-k selection, target the top prediction
    top = top_predictions(lm, PROMPT, 2)
    target = " " + top[0][0]
    assert f"target: {target!r}" in text
    cfg = LrpConfig(metric="top_other", selection=SelectionConfig(method="topk", top_k=12))
    row = TaskRow(id="x", split="train", prompt=PROMPT, target=target,
                  counterfactual=" " + top[1][0], corrupt_prompt=PROMPT)  # fmt: skip
    attr = attribute_rows(lm, [row], options(cfg), progress=False)
    ref = circuit_from_attributions(attr, cfg, model="tiny", task="repl", n_layers=2, d_mlp=64)
    assert r.circuit is not None and r.circuit.neurons == ref.neurons
    # ablate / amplify print what steering + generation give, and the target's change
    ns = NeuronSet.from_circuit(ref)
    with steer_neurons(lm, ns, 0.0):
        ablated = generate(lm, [PROMPT], 4)[0]
        p_ablated = float(
            prompt_logits(lm, [PROMPT])[0].softmax(-1)[token_ids(lm.tokenizer, [target])[0]]
        )
    p_plain = float(
        prompt_logits(lm, [PROMPT])[0].softmax(-1)[token_ids(lm.tokenizer, [target])[0]]
    )
    assert "ablated 12 neurons — " in text and f"output after:  {ablated}" in text
    assert f"p({target!r}): {p_plain:.4f} → {p_ablated:.4f}" in text
    assert p_plain != p_ablated  # the intervention did something
    assert (
        f"output before: {plain}" in text and "top 5 before: " in text and "top 5 after:  " in text
    )
    top3 = [(ly, n) for (ly, _, n), _ in ref.top(3)]
    with steer_neurons(lm, NeuronSet.from_pairs(top3), 5.0):
        amplified = generate(lm, [PROMPT], 4)[0]
    assert "amplified 3 neurons — " in text and f"output after:  {amplified}" in text
    assert "  ×0: " in text and "  ×2: " in text
    # save writes our circuit format; info reports state; nothing runs after quit
    assert NeuronCircuit.load(saved).neurons == ref.neurons
    assert NeuronCircuit.load(saved).params["prompt"] == PROMPT
    assert "circuit: 12 neurons (lrp, repl)" in text and "multiplier: 1" in text
    assert text.rstrip().endswith("bye")
    assert "never reached" not in text


def test_top_under_the_multiplier_changes_the_distribution(tiny, tmp_path: Path) -> None:
    _, lm = tiny
    r, text = session(lm, f"prompt {PROMPT}\ndiscover\ntop 5\nmultiplier 25\ntop 5\n")
    before, after = text.split("multiplier: 25")
    assert "top 5:" in before and "top 5 (circuit ×25):" in after
    with steer_neurons(lm, NeuronSet.from_circuit(r.circuit), 25.0):
        steered = top_predictions(lm, PROMPT, 5)
    for tok, p in steered:
        assert f"{p:.4f}" in after and repr(tok) in after
    assert steered != top_predictions(lm, PROMPT, 5)  # the intervention did something


def test_errors_are_shown_and_the_loop_goes_on(tiny, tmp_path: Path) -> None:
    _, lm = tiny
    missing = tmp_path / "nope.json"
    far = tmp_path / "far.json"
    NeuronCircuit({(5, -1, 1): 1.0}, "m", "t", "lrp", n_layers=6, d_mlp=64).save(far)
    r, text = session(
        lm,
        "ablate\ntop\nfrobnicate\n"
        f"prompt {PROMPT}\nablate all\ndiscover w9 w8\ndiscover zebra\n"
        "ablate L0/N64\nablate L7/N0\nablate bogus\namplify L0/N1 x y\n"
        "multiplier abc\nmultiplier inf\nsweep 1 two\ntop many\n"
        f"load {missing}\nload {far}\nsave\nL0/N1\ninfo\n",
    )
    for message in (
        "error: set a prompt first",
        "unknown command 'frobnicate'",
        "error: no circuit yet",
        "is not one token after the prompt",
        "has words this model's vocabulary does not know",
        "(layer, neuron) are outside 0..63",
        "neuron layers [7] are outside the model's 0..1",
        "unknown neuron spec 'bogus'",
        "usage: amplify",
        "multiplier 'abc' is not a number",
        "a multiplier must be finite",
        "multiplier 'two' is not a number",
        "usage: top [k]",
        "does not exist",
        "outside the model's 0..1",
        "usage: save <file>",
        "unknown command 'L0/N1'",
    ):
        assert message in text, message
    assert r.circuit is None and r.multiplier == 1.0  # failed commands changed nothing
    assert f"prompt: {PROMPT!r}" in text  # the last command still ran


def test_ctrl_c_cancels_a_command_not_the_repl(tiny, monkeypatch) -> None:
    _, lm = tiny
    calls = {"n": 0}
    real = repl_mod.generate

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(repl_mod, "generate", flaky)

    class Interrupting(io.StringIO):
        hit = False

        def readline(self, *args):  # Ctrl-C while typing the third line
            if (
                self.tell() > 0
                and not Interrupting.hit
                and "top" in self.getvalue()[self.tell() :][:4]
            ):
                Interrupting.hit = True
                raise KeyboardInterrupt
            return super().readline(*args)

    out = io.StringIO()
    Repl(
        lm, Interrupting(f"prompt {PROMPT}\nprompt {PROMPT}\ntop 2\n"), out, max_new_tokens=2
    ).run()
    text = out.getvalue()
    assert "(Ctrl-C: command cancelled)" in text
    assert "(Ctrl-C: line cancelled" in text
    assert text.count("output: ") == 1 and "top 2:" in text  # the loop went on after both
    assert text.rstrip().endswith("bye")  # EOF quits


def test_cli_repl_reads_stdin(tiny, monkeypatch, capsys) -> None:
    path, _ = tiny
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"prompt {PROMPT}\ninfo\n"))
    monkeypatch.setattr(
        sys, "argv", ["circuitlab", "repl", "--model", str(path), "--max-new-tokens", "2"]
    )
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr().out
    assert code == 0
    assert "model: tiny (2 layers × 64 neurons)" in out and out.rstrip().endswith("bye")
    monkeypatch.setattr(sys, "argv", ["circuitlab", "repl", "--model", str(path / "missing")])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2


def test_counts_agree_when_a_neuron_sits_at_two_positions(tiny, tmp_path: Path) -> None:
    _, lm = tiny
    two = tmp_path / "two.json"
    circuit = {(0, -1, 3): 0.5, (0, -2, 3): 0.25, (1, -1, 7): 0.1}
    NeuronCircuit(circuit, "m", "t", "lrp", n_layers=2, d_mlp=64, params={"prompt": PROMPT}).save(
        two
    )
    _, text = session(lm, f"load {two}\nablate all\n")
    assert "circuit: 3 entries = 2 distinct neurons" in text
    assert "ablated 2 distinct neurons (the circuit's 3 entries" in text


def test_a_terminal_session_has_line_editing_and_history(tiny, tmp_path: Path) -> None:
    """Drive `circuitlab repl` through a pseudo-terminal as a person would: type, press Up to
    recall the last line, Enter; the history file keeps the lines for the next session."""
    import os
    import pty
    import select
    import subprocess
    import time

    pytest.importorskip("readline")
    path, _ = tiny
    history = tmp_path / "history"
    env = {**os.environ, "CIRCUITLAB_REPL_HISTORY": str(history), "TERM": "xterm",
           "WANDB_MODE": "disabled", "CIRCUITLAB_PROGRESS": "0"}  # fmt: skip

    def screen_after(keys: list[bytes], until: bytes) -> str:
        main, child = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "circuitlab.cli", "repl", "--model", str(path),
             "--max-new-tokens", "2"],
            stdin=child, stdout=child, stderr=child, env=env, close_fds=True,
        )  # fmt: skip
        os.close(child)
        seen, deadline = b"", time.monotonic() + 120

        def read_until(marker: bytes, count: int = 1) -> None:
            nonlocal seen
            while seen.count(marker) < count and time.monotonic() < deadline:
                ready, _, _ = select.select([main], [], [], 0.5)
                if ready:
                    try:
                        seen += os.read(main, 4096)
                    except OSError:
                        return

        try:
            prompts = 1
            read_until(b"circuit> ")
            for key in keys:
                os.write(main, key)
                if key.endswith(b"\r"):
                    prompts += 1
                    read_until(b"circuit> ", prompts)
            read_until(until)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(main)
        return seen.decode("utf-8", errors="replace")

    first = screen_after(
        [f"prompt {PROMPT}\r".encode(), b"top 3\r", b"\x1b[A\r", b"quit\r"], b"bye"
    )
    assert first.count("top 3:") == 2, first  # Up recalled `top 3`
    assert "^[[A" not in first
    assert "top 3" in history.read_text()
    # a new session starts with the old history: Up ×3 (this prompt, the old quit) is `top 3`
    up = b"\x1b[A"
    second = screen_after([f"prompt {PROMPT}\r".encode(), up * 3 + b"\r", b"quit\r"], b"bye")
    assert second.count("top 3:") == 1, second


def test_a_bridge_model_says_what_it_cannot_do(tiny) -> None:
    """With backend: transformer_lens the REPL names the neuron commands it cannot run, runs
    the rest, and a neuron command stops before claiming to have done anything."""
    from circuitlab.models import load_model
    from circuitlab.models.spec import ModelSpec

    path, _ = tiny
    lm = load_model(ModelSpec(id=str(path), backend="transformer_lens"), tokenizer=True)
    _, text = session(lm, f"prompt {PROMPT}\ntop 3\nablate L0/N1\ndiscover\n")
    assert "backend: transformer_lens: prompt, top and info work" in text
    assert "top 3:" in text
    assert text.count("needs circuitlab's architecture adapter") == 2  # ablate and discover
    assert "ablated" not in text


def test_save_to_an_unwritable_path_says_so_in_one_line(tiny, tmp_path: Path) -> None:
    _, lm = tiny
    mine = tmp_path / "mine.json"
    NeuronCircuit({(0, -1, 1): 1.0}, "m", "t", "lrp", n_layers=2, d_mlp=64).save(mine)
    r, text = session(lm, f"load {mine}\nsave /proc/circuitlab/c.json\ninfo\n")
    assert "cannot write output /proc/circuitlab/c.json" in text
    assert "Traceback" not in text and ".tmp" not in text
    assert r.circuit is not None  # the loop went on


def test_discover_and_steering_say_which_signs_they_touch(tiny) -> None:
    """discover lists supporters and opposers (the gradient's sign on the prompt, beside the
    LRP attribution's); ablate/amplify say how many of the steered neurons support or oppose
    the target; `supporters`, `opposers`, `top<k>+` and `top<k>-` select by that sign."""
    from circuitlab.steering.signs import support_scores

    _, lm = tiny
    r, text = session(
        lm, f"prompt {PROMPT}\ndiscover\namplify supporters 2\nablate opposers\namplify top2+ 3\n"
        "ablate top4\n",
    )  # fmt: skip
    assert r.circuit is not None
    row = TaskRow(id="repl", split="train", prompt=PROMPT, target=r.circuit.params["target"],
                  counterfactual=" w5", corrupt_prompt=PROMPT)  # fmt: skip
    expected = support_scores(lm, r.circuit, [row], "gradient", positions="all")
    assert r.support == pytest.approx(expected)
    pairs = {(ly, n): v for (ly, _, n), v in expected.items()}
    sup = sorted(k for k, v in pairs.items() if v > 0)
    opp = sorted(k for k, v in pairs.items() if v < 0)
    assert sup and opp, "the tiny circuit has both signs"
    assert f"{sum(v > 0 for v in expected.values())} supporters" in text
    assert "top supporters (" in text and "top opposers (" in text and "gradient×act=" in text
    src = "(gradient × activation on this prompt, all positions)"
    assert (
        f"amplified {len(sup)} neuron{'s' * (len(sup) != 1)} — {len(sup)} supporting, 0 opposing the target {src}, ×2"
        in text
    )
    assert (
        f"ablated {len(opp)} neuron{'s' * (len(opp) != 1)} — 0 supporting, {len(opp)} opposing the target {src}, ×0"
        in text
    )
    assert f"— {min(2, len(sup))} supporting, 0 opposing the target {src}, ×3" in text
    top4 = r.ranked(0)[:4]  # |attribution| order mixes the signs: the line says how
    n_sup = sum(pairs[p] > 0 for p in top4)
    assert f"ablated 4 neurons — {n_sup} supporting, {4 - n_sup} opposing the target" in text
