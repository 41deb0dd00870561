"""`edgeship-agent install`: directories, a documented strict config, the first model, a systemd unit.

Layout (``--prefix P`` puts everything under P, so tests and systems without systemd or
root work; without it the paths are the system ones)::

    P/etc/edgeship/agent.toml                      # the config, every key documented
    P/var/lib/edgeship/                            # state dir: models/, pointers.json, tmp/, update/
    P/etc/systemd/system/edgeship-agent.service    # Restart=on-failure
    P/var/lib/edgeship/trust/root.json             # with --trust-root: the TUF root of trust (+ operator keys)
    P/etc/edgeship/mqtt/{ca.crt,device.crt,device.key,password}   # with --mqtt: copies (secrets 0600)

Nothing half-written: the bundle is installed into the store first (checked), the config
and unit are written atomically, and an existing config is left alone unless ``--force``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path

from runtime.contracts.statedir import InstallLayout, StateDir
from runtime.errors import ExitCode
from runtime.fsutil import atomic_write_bytes

from .config import AgentConfig, AgentSection, ServingSection, dumps
from .errors import DeviceAgentError


class InstallError(DeviceAgentError):
    """Install refused (an existing config without --force, a bad root.json, a running agent)."""

    exit_code = ExitCode.BAD_INPUT


class InstallWriteError(InstallError):
    """A directory or file of the install cannot be written (without --prefix: not root?)."""

    exit_code = ExitCode.FAILED


#: the unit's watchdog: systemd restarts an agent whose serving loop stops pinging this long
WATCHDOG_S = 30
#: open files for the agent (connections are capped below it, see serving/connections.py)
LIMIT_NOFILE = 65536


def systemd_unit(*, config_path: Path, state_dir: Path, user: str | None = None,
                 python: str = sys.executable) -> str:
    """The unit text. Pure.

    ``Type=notify``: systemd waits for the agent's ``READY=1`` (model loaded, socket
    listening) and restarts it when the ``WATCHDOG=1`` pings from its serving loop stop for
    ``WatchdogSec`` (a hung agent). ``LimitNOFILE`` leaves room for many connections: the
    agent caps open connections below it (``[serving] max_connections``).
    """
    exec_start = f"{shlex.quote(python)} -m device_agent.cli run --config {shlex.quote(str(config_path))}"
    lines = [
        "[Unit]",
        "Description=edgeship device agent (model serving, OTA updates, telemetry)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        f"WatchdogSec={WATCHDOG_S}",
        "TimeoutStartSec=120",
        f"LimitNOFILE={LIMIT_NOFILE}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=2",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=40",
        "NoNewPrivileges=yes",
        "ProtectSystem=full",
        "PrivateTmp=yes",
        f"ReadWritePaths={state_dir}",
    ]
    if user:
        lines.append(f"User={user}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _trust_root(path: str | os.PathLike) -> bytes:
    """The bytes of a TUF root.json, after a shape check. Raises InstallError."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InstallError(f"--trust-root {path}: cannot read it: {e.strerror or e}") from e
    try:
        doc = json.loads(data)
        ok = doc["signed"]["_type"] == "root" and isinstance(doc["signatures"], list)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise InstallError(f"{path}: not a TUF root.json (make one with `edgeship keys init`)")
    return data


def _check_bundle(bundle: str | os.PathLike) -> None:
    from runtime.contracts.bundle import BundleError, read_bundle_info

    try:
        read_bundle_info(bundle)
    except (BundleError, OSError) as e:
        msg = "no such file" if isinstance(e, FileNotFoundError) else str(e)
        raise InstallError(f"{bundle}: not an edgeship bundle ({msg}); make one with "
                           f"`edgeship package`") from e


def _extensions(*, repository: str | None, mqtt_section) -> dict:
    ext = {}
    if repository:
        ext["update"] = dataclasses.replace(AgentConfig().section("update"), repository_url=repository)
    if mqtt_section is not None:
        ext["mqtt"] = mqtt_section
    return ext


def _operator_keys(root_bytes: bytes | None) -> list[str]:
    """The operator key ids a root.json lists (they sign desired state and commands)."""
    from runtime.contracts.errors import PayloadRejected
    from runtime.contracts.mqtt.signing import OperatorKeys

    if root_bytes is None:
        return []
    try:
        return sorted(OperatorKeys.from_root(json.loads(root_bytes)).keys)
    except PayloadRejected as e:
        raise InstallError(f"--trust-root: {e.detail}") from e


def install(*, bundle: str | os.PathLike, prefix: str | os.PathLike | None = None, port: int = 8080,
            host: str = "127.0.0.1", user: str | None = None, force: bool = False,
            trust_root: str | os.PathLike | None = None, repository: str | None = None,
            mqtt=None) -> dict:
    """Install the agent; return what was written.

    ``trust_root`` (a TUF root.json, with the operator keys that sign the control plane) is
    placed at ``<state_dir>/trust/root.json``; ``repository`` turns on signed updates from
    that URL or directory (``[update]``); ``mqtt`` (a ``device_agent.mqtt.install.MqttInstall``)
    turns on MQTT (``[mqtt]``; its TLS and password files are checked and copied).

    Raises:
        TelemetryConfigError: a bad --mqtt option or file (a secret readable by others).
        InstallError: a config exists and ``force`` is False; a bad root.json; a repository
            without a trusted root; an agent is running on the state dir.
        BundleRejectedError: the bundle failed the store's checks (nothing else was written).
        OSError: a directory cannot be created or written (e.g. no root without --prefix).
    """
    from .agent.errors import AlreadyRunningError
    from .agent.process import instance_lock
    from .store import Store

    paths = InstallLayout.under(prefix)
    if paths.config.exists() and not force:
        raise InstallError(f"{paths.config} exists; pass --force to overwrite it (the store is kept)")
    _check_bundle(bundle)  # before any directory is created
    root_bytes = _trust_root(trust_root) if trust_root else None
    trust_path = StateDir(paths.state_dir).trust_root
    if repository and root_bytes is None and not trust_path.exists():
        raise InstallError("signed updates need the repository's trusted root.json: pass --trust-root "
                           "keys/root.json (from `edgeship keys init`)")
    operator_keys = _operator_keys(root_bytes)
    mqtt_section = None
    if mqtt is not None:
        from .mqtt.install import check

        mqtt_section = check(mqtt)  # every file checked before anything is written
    try:  # a running agent keeps serving its model: switching the store under it would lie
        with instance_lock(paths.state_dir):
            store = Store(paths.state_dir)
            ref = store.install_bundle(bundle)
            store.activate(ref.sha256)
    except AlreadyRunningError:
        raise InstallError(f"{paths.state_dir}: an edgeship-agent is running on this state dir; stop it "
                           f"first (`systemctl stop edgeship-agent`, or SIGTERM the `edgeship-agent run` "
                           f"process), then install again") from None
    if root_bytes is not None:
        atomic_write_bytes(trust_path, root_bytes)
    if mqtt_section is not None:
        from .mqtt.install import install_files

        mqtt_section = install_files(mqtt_section, paths.config.parent)
    ext = _extensions(repository=repository, mqtt_section=mqtt_section)
    cfg = AgentConfig(agent=AgentSection(state_dir=str(paths.state_dir)),
                      serving=dataclasses.replace(ServingSection(), port=port, host=host), extensions=ext)
    header = ("edgeship agent configuration (strict: unknown keys are refused).\n"
              "Written by `edgeship-agent install`; each setting is documented above it.")
    atomic_write_bytes(paths.config, dumps(cfg, header=header, commented_defaults=True).encode())
    atomic_write_bytes(paths.unit, systemd_unit(config_path=paths.config, state_dir=paths.state_dir,
                                                user=user).encode())
    return {"config": str(paths.config), "state_dir": str(paths.state_dir), "unit": str(paths.unit),
            "trust_root": str(trust_path) if trust_path.exists() else None, "active": ref.to_json(),
            "operator_keys": operator_keys or _operator_keys(trust_path.read_bytes() if trust_path.exists() else None),
            "mqtt": None if mqtt_section is None else {"host": mqtt_section.host, "port": mqtt_section.port,
                                                         "fleet": mqtt_section.fleet, "device_id": mqtt_section.device_id,
                                                         "tls": mqtt_section.tls}}


def add_parser(sub) -> None:
    p = sub.add_parser("install", help="create directories, config, systemd unit and install the first model")
    p.add_argument("--bundle", required=True, metavar="FILE", help="model bundle (.tar) from `edgeship package`")
    p.add_argument("--prefix", default=None, metavar="DIR",
                   help="install under DIR instead of / (no root or systemd needed)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: local only)")
    p.add_argument("--user", default=None, help="run the service as this user (User= in the unit)")
    p.add_argument("--trust-root", default=None, metavar="FILE",
                   help="TUF root.json of the model repository (from `edgeship keys init`)")
    p.add_argument("--repository", default=None, metavar="URL_OR_DIR",
                   help="turn on signed updates from this TUF repository ([update] repository_url)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")
    p.add_argument("--json", action="store_true", help="print JSON")
    from .mqtt.install import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from .mqtt.install import from_args

    try:
        res = install(bundle=args.bundle, prefix=args.prefix, port=args.port, host=args.host,
                      user=args.user, force=args.force, trust_root=args.trust_root,
                      repository=args.repository, mqtt=from_args(args))
    except OSError as e:
        raise InstallWriteError(f"{e} (without --prefix this needs root)") from e
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    a = res["active"]
    print(f"config     {res['config']}\nstate dir  {res['state_dir']}\nunit       {res['unit']}\n"
          f"active     {a['name']} {a['version']} (release {a['release']})  sha256 {a['sha256']}")
    if res["mqtt"]:
        m = res["mqtt"]
        print(f"mqtt       {m['fleet']}/{m['device_id']} -> {m['host']}:{m['port']}{' (TLS)' if m['tls'] else ''}")
    print("operator   " + (", ".join(k[:12] for k in res["operator_keys"]) + " (sign desired state and commands)"
                           if res["operator_keys"] else "no operator key: desired state and commands will be "
                           "refused (pass --trust-root keys/root.json from `edgeship keys init`)") + "\n")
    if args.prefix:
        print(f"start it:  edgeship-agent run --config {res['config']}")
    else:
        print("start it:  systemctl daemon-reload && systemctl enable --now edgeship-agent")
    return 0
