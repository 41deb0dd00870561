"""The command-line shell shared by `edgeship` and `edgeship-agent` (stdlib only).

Each program keeps a table ``{"name": "module:add_parser"}``; ``add_parser(subparsers)`` adds
its subcommand and sets ``func(args) -> int``. Subcommand modules import nothing heavy at
module level, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Mapping


def build_parser(*, prog: str, description: str, version: str,
                 commands: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--version", action="version", version=f"{prog} {version}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for target in commands.values():
        module, fn = target.split(":")
        getattr(importlib.import_module(module), fn)(sub)
    return p


def run(parser: argparse.ArgumentParser, argv: list[str] | None,
        user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse and dispatch. ``user_errors`` escaping a command are printed as one line
    (``prog: error: ...``, exit 1) instead of a traceback: they already say what to do."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except user_errors as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
