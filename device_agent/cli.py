"""`edgeship-agent` command line. Subcommands are registered in COMMANDS and imported lazily."""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> "module:add_parser"; add_parser(subparsers) registers it and sets func(args)->int
COMMANDS: dict[str, str] = {
    "install": "device_agent.install:add_parser",
    "run": "device_agent.commands:add_run",
    "status": "device_agent.commands:add_status",
    "rollback": "device_agent.commands:add_rollback",
    "update": "device_agent.update.cli:add_parser",
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="edgeship-agent", description="The edgeship device agent.")
    p.add_argument("--version", action="version", version=f"edgeship-agent {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, target in COMMANDS.items():
        module, fn = target.split(":")
        getattr(importlib.import_module(module), fn)(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
