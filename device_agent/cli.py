"""`edgeship-agent` command line. Subcommands are registered in COMMANDS and imported lazily."""

from __future__ import annotations

import sys

from runtime import cliutil
from runtime.errors import EdgeshipRuntimeError

from .errors import DeviceAgentError

#: subcommand -> "module:add_parser"; add_parser(subparsers) registers it and sets func(args)->int
COMMANDS: dict[str, str] = {
    "install": "device_agent.install:add_parser",
    "run": "device_agent.commands:add_run",
    "status": "device_agent.commands:add_status",
    "rollback": "device_agent.commands:add_rollback",
    "update": "device_agent.ota.cli:add_parser",
}


def build_parser():
    from . import __version__

    return cliutil.build_parser(prog="edgeship-agent", description="The edgeship device agent: serves "
                                "the active model, takes signed updates, reports over MQTT.",
                                version=__version__, commands=COMMANDS)


def main(argv: list[str] | None = None) -> int:
    # every error of the agent, the runtime and the OS is reported in one line with its exit code
    return cliutil.run(build_parser(), argv, errors=(DeviceAgentError, EdgeshipRuntimeError, OSError))


if __name__ == "__main__":
    sys.exit(main())
