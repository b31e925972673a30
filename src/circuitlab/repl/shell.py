"""The REPL's terminal side, independent of what its commands do: a line loop over an input
and an output stream (`Shell`: dispatch to ``do_<command>`` methods, errors printed and the
loop going on, Ctrl-C cancelling the running command or the line being typed, EOF quitting),
and readline's line editing with a history kept between sessions (`LineHistory`)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TextIO

from circuitlab.errors import CircuitlabError

#: overrides where the REPL keeps its line history (default: the user's cache directory)
ENV_HISTORY = "CIRCUITLAB_REPL_HISTORY"


def history_path() -> Path:
    """``$CIRCUITLAB_REPL_HISTORY``, else ``$XDG_CACHE_HOME/circuitlab/repl_history``
    (``~/.cache/…`` when XDG_CACHE_HOME is unset)."""
    if env := os.environ.get(ENV_HISTORY):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "circuitlab" / "repl_history"


class LineHistory:
    """Line editing (arrows, Ctrl-R) and a history kept between sessions, through readline;
    a no-op where readline is missing."""

    def __init__(self, path: Path, length: int = 1000) -> None:
        self.path, self.length = path, length
        self.readline: Any = None

    def __enter__(self) -> LineHistory:
        try:
            import readline
        except ImportError:  # e.g. Windows without pyreadline3
            return self
        self.readline = readline
        readline.set_history_length(self.length)
        with contextlib.suppress(OSError):
            readline.read_history_file(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.readline is None:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.readline.write_history_file(self.path)


class Shell:
    """The command loop. `run()` reads `stdin` until `quit` or EOF; `execute(line)` runs one
    line and returns False when the loop should stop. Subclasses fill `commands` (name →
    method taking the rest of the line; its docstring's first line is its help) and say who
    they are in `banner`."""

    prompt_text = "> "

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.stdin = stdin if stdin is not None else sys.stdin
        self.stdout = stdout if stdout is not None else sys.stdout
        self.commands: dict[str, Callable[[str], bool | None]] = {}

    def banner(self) -> Iterable[str]:
        return ()

    def say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def read_line(self) -> str | None:
        """One line of input (None at EOF); a terminal gets line editing through input()."""
        if self.stdin is sys.stdin and sys.stdin.isatty():
            try:
                return input(self.prompt_text)
            except EOFError:
                return None
        self.stdout.write(self.prompt_text)
        self.stdout.flush()
        line = self.stdin.readline()
        return None if line == "" else line

    def run(self) -> None:
        for line in self.banner():
            self.say(line)
        tty = self.stdin is sys.stdin and sys.stdin.isatty()
        with LineHistory(history_path()) if tty else nullcontext():
            self.loop()

    def loop(self) -> None:
        while True:
            try:
                line = self.read_line()
            except KeyboardInterrupt:
                self.say("\n(Ctrl-C: line cancelled; type 'quit' to exit)")
                continue
            if line is None:
                self.say("")
                self.do_quit("")
                return
            if not self.execute(line):
                return

    def execute(self, line: str) -> bool:
        """Run one command line; False when the REPL should stop. Never raises for bad input."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        word, _, arg = line.partition(" ")
        cmd = self.commands.get(word.lower())
        if cmd is None:
            self.say(f"unknown command {word!r}; type 'help' for the list")
            return True
        try:
            return cmd(arg.strip()) is not True
        except KeyboardInterrupt:
            self.say("(Ctrl-C: command cancelled)")
        except CircuitlabError as exc:
            self.say(f"error: {exc}")
        except Exception as exc:  # a bug or a library failure: show it, keep the session
            self.say(f"error: {type(exc).__name__}: {exc}")
        return True

    def do_help(self, arg: str) -> None:
        """help [command] — list the commands or describe one."""
        if arg:
            cmd = self.commands.get(arg.lower())
            self.say((cmd.__doc__ or "").strip() if cmd else f"unknown command {arg!r}")
            return
        seen = set()
        for cmd in self.commands.values():
            if cmd in seen:
                continue
            seen.add(cmd)
            self.say("  " + (cmd.__doc__ or "").strip().splitlines()[0])

    def do_quit(self, _arg: str) -> bool:
        """quit | exit — leave the REPL (Ctrl-D too)."""
        self.say("bye")
        return True
