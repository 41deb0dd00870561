"""`edgeship` command line. Subcommands are registered in COMMANDS and imported lazily."""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> "module:add_parser"; add_parser(subparsers) registers it and sets func(args)->int
COMMANDS: dict[str, str] = {
    "compile": "toolchain.compile.cli:add_parser",
    "bench": "toolchain.bench.cli:add_parser",
    "keys": "toolchain.ota.cli:add_keys_parser",
    "package": "toolchain.package:add_parser",
    "publish": "toolchain.ota.cli:add_publish_parser",
    "repo": "toolchain.ota.cli:add_repo_parser",
    "push": "toolchain.fleet.cli:add_push_parser",
    "fleet": "toolchain.fleet.cli:add_fleet_parser",
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="edgeship", description="Put PyTorch models on edge hardware.")
    p.add_argument("--version", action="version", version=f"edgeship {__version__}")
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
