"""The command-line shell shared by `edgeship` and `edgeship-agent` (stdlib only).

Each program keeps a table ``{"name": "module:add_parser"}``; ``add_parser(subparsers)`` adds
its subcommand and sets ``func(args) -> int``. Subcommand modules import nothing heavy at
module level, so ``--help`` stays fast.

One error path: a command returns its exit code when it ran to the end (0 ok, 1 failed,
3 partial) and *raises* otherwise; :func:`run` is the only place that turns an error into
a message and an exit code. Every edgeship error carries its code (``exit_code``, a
:class:`runtime.errors.ExitCode`): 2 when what the user gave is wrong, 1 when the work
failed. The message is one line, ``<prog> <command>: error: <what went wrong>``, followed
by `` [<reason_code>]`` for an error that carries a stable machine-readable code (an OTA
update's ``security.bad_signature``, say); errors are written to name the file, flag, key or
device they are about.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Mapping

from .errors import ExitCode


def build_parser(*, prog: str, description: str, version: str,
                 commands: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--version", action="version", version=f"{prog} {version}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for target in commands.values():
        module, fn = target.split(":")
        getattr(importlib.import_module(module), fn)(sub)
    return p


def exit_code_of(e: BaseException) -> int:
    """The exit code an error ends a command with (1 for an error that does not say)."""
    return int(getattr(e, "exit_code", ExitCode.FAILED))


def run(parser: argparse.ArgumentParser, argv: list[str] | None,
        errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse and dispatch; the one handler of the errors a command raises.

    ``errors``: the program's error roots (and OSError, whose message names the file). One
    escaping a command is printed as one line, ``<prog> <command>: error: ...``, and the
    command exits with its ``exit_code``. Anything else is a bug and keeps its traceback.
    A usage error of the parser itself exits 2 (argparse).
    """
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.BAD_INPUT
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except errors as e:
        where = f"{parser.prog} {args.command}" if getattr(args, "command", None) else parser.prog
        code = getattr(e, "reason_code", None)
        print(f"{where}: error: {e}" + (f" [{code}]" if isinstance(code, str) else ""), file=sys.stderr)
        return exit_code_of(e)


def human_bytes(n: int | None) -> str:
    """``812 B``, ``1.5 KiB``, ``3.0 MiB``, ``1.2 GiB`` (``-`` for None): byte counts in CLI output."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
