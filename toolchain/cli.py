"""`edgeship` command line. Subcommands are registered in COMMANDS and imported lazily."""

from __future__ import annotations

import sys

from runtime import cliutil
from runtime.errors import EdgeshipRuntimeError

from .errors import ToolchainError

#: subcommand -> "module:add_parser"; add_parser(subparsers) registers it and sets func(args)->int
COMMANDS: dict[str, str] = {
    "compile": "toolchain.compile.cli:add_parser",
    "bench": "toolchain.bench.cli:add_parser",
    "keys": "toolchain.ota.cli:add_keys_parser",
    "package": "toolchain.package:add_parser",
    "bundle": "toolchain.bundle_cli:add_parser",
    "publish": "toolchain.ota.cli:add_publish_parser",
    "repo": "toolchain.ota.cli:add_repo_parser",
    "push": "toolchain.fleet.cli:add_push_parser",
    "fleet": "toolchain.fleet.cli:add_fleet_parser",
    "rollout": "toolchain.fleet.rollout.cli:add_parser",
    "data": "toolchain.data.cli:add_parser",
}


def build_parser():
    from . import __version__

    return cliutil.build_parser(prog="edgeship", description="Put PyTorch models on edge hardware: "
                                "compile, verify, benchmark, package, sign and push them.",
                                version=__version__, commands=COMMANDS)


def main(argv: list[str] | None = None) -> int:
    # every error of the toolchain, the runtime and the OS is reported in one line with its exit code
    return cliutil.run(build_parser(), argv, errors=(ToolchainError, EdgeshipRuntimeError, OSError))


if __name__ == "__main__":
    sys.exit(main())
