"""Dispatch ``run.py``'s subcommands. With no subcommand it serves."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]


def _lazy(module: str, help_text: str) -> Command:
    """A subcommand whose module is imported only when it runs: serving never imports the client tools, and
    a client tool (or ``--help``) never imports the server and its detector."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        importlib.import_module(f"server.cli.{module}").add_arguments(parser)

    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(f"server.cli.{module}").main(args))

    return add_arguments, run, help_text


def commands() -> dict[str, Command]:
    """Subcommand name → (add its arguments, run it, one-line help)."""
    return {
        "serve": _lazy("serve", "serve HTTP, WebSocket and WebRTC (the default)"),
        "analyze": _lazy("analyze", "analyse audio files here, without a server; print or write the onsets"),
        "listen": _lazy("listen", "follow a live stream's events; print them or send its onsets and beats "
                        "as OSC"),
        "stream": _lazy("stream", "publish a file or raw PCM from stdin as a live stream; print its onsets"),
        "worker": _lazy("worker", "run a file-analysis worker on a shared Redis (--redis URL); no HTTP"),
    }


def program_name() -> str:
    """``run.py`` or the installed command's name (``transient``), for usage lines and messages."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("-c", "__main__.py") else "run.py"


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand (``serve``, ``analyze``, ...; none: serve); the exit code. The entry point of
    ``run.py`` and of the installed ``transient`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    subcommands = commands()
    prog = program_name()
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Transient: real-time audio onset analysis server. With no subcommand, serve.",
        epilog="subcommands: " + (", ".join(f"{name} ({c[2]})" for name, c in subcommands.items()) or "none")
        + f". Run '{prog} SUBCOMMAND --help' for each. Every option can also come from TRANSIENT_<OPTION>.",
    )
    parser.set_defaults(parser=parser)
    if args and args[0] in subcommands:
        add_arguments, run, help_text = subcommands[args[0]]
        sub = argparse.ArgumentParser(prog=f"{prog} {args[0]}", description=help_text)
        sub.set_defaults(parser=sub)
        add_arguments(sub)
        return run(sub.parse_args(args[1:]))
    add_arguments, run, _ = subcommands["serve"]
    add_arguments(parser)
    return run(parser.parse_args(args))
