"""The ``[mqtt]`` part of ``edgeship-agent install``: flags, checks, the files it copies.

``--mqtt HOST:PORT --fleet F --device-id D --groups a,b`` plus, for a broker that wants them
(docs/mosquitto/mosquitto.conf), ``--mqtt-tls --ca CA.pem [--cert DEVICE.pem --key DEVICE.key]``
or ``--mqtt-username U --mqtt-password-file FILE``. Every file is checked before anything is
written: a private key or a password file that anyone but its owner can read (mode wider
than 0600) is refused. They are copied to ``<etc>/edgeship/mqtt/`` (key and password 0600)
and the written ``[mqtt]`` section names the copies, so the install is self-contained.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from .config import MqttConfig, check_secret_file
from .errors import TelemetryConfigError


@dataclass(frozen=True)
class MqttInstall:
    """What the install flags ask for."""

    broker: str                      # HOST:PORT
    fleet: str | None = None
    device_id: str | None = None
    groups: tuple[str, ...] = ()
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    username: str | None = None
    password_file: str | None = None


def add_arguments(p) -> None:
    g = p.add_argument_group("MQTT (telemetry and the signed control plane; docs/mqtt.md)")
    g.add_argument("--mqtt", metavar="HOST:PORT", default=None, help="turn on MQTT with this broker ([mqtt] host, port)")
    g.add_argument("--mqtt-host", default=None, help=argparse.SUPPRESS)  # the flag before --mqtt
    g.add_argument("--fleet", default=None, help="fleet name for MQTT topics ([mqtt] fleet)")
    g.add_argument("--device-id", default=None, help="this device's id ([mqtt] device_id; default the host name)")
    g.add_argument("--groups", default=None, metavar="A,B", help="groups this device belongs to ([mqtt] groups)")
    g.add_argument("--mqtt-tls", action="store_true", help="connect with TLS ([mqtt] tls)")
    g.add_argument("--ca", default=None, metavar="FILE", help="PEM CA of the broker certificate (with --mqtt-tls)")
    g.add_argument("--cert", default=None, metavar="FILE", help="client certificate, CN <fleet>/<device> (mutual TLS)")
    g.add_argument("--key", default=None, metavar="FILE", help="private key of --cert (mode 0600)")
    g.add_argument("--mqtt-username", default=None, help="MQTT username (with --mqtt-password-file)")
    g.add_argument("--mqtt-password-file", default=None, metavar="FILE", help="file holding the password (mode 0600)")


def from_args(args) -> MqttInstall | None:
    """The MQTT request of the install flags, or None without ``--mqtt``."""
    broker = args.mqtt or (f"{args.mqtt_host}:1883" if args.mqtt_host else None)
    extra = [f for f in ("ca", "cert", "key", "mqtt_username", "mqtt_password_file", "device_id", "groups")
             if getattr(args, f)] + (["mqtt_tls"] if args.mqtt_tls else [])
    if broker is None:
        if extra:
            raise TelemetryConfigError(f"--{extra[0].replace('_', '-')} needs --mqtt HOST:PORT")
        return None
    groups = tuple(g.strip() for g in (args.groups or "").split(",") if g.strip())
    return MqttInstall(broker=broker, fleet=args.fleet, device_id=args.device_id, groups=groups, tls=args.mqtt_tls,
                       ca=args.ca, cert=args.cert, key=args.key, username=args.mqtt_username,
                       password_file=args.mqtt_password_file)


def _host_port(broker: str) -> tuple[str, int]:
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TelemetryConfigError(f"--mqtt {broker!r}: expected HOST:PORT, e.g. broker.example.com:8883")
    return host, int(port)


def _readable(path: str, flag: str) -> Path:
    p = Path(path)
    try:
        p.read_bytes()
    except OSError as e:
        raise TelemetryConfigError(f"{flag} {path}: cannot read it: {e.strerror or e}") from e
    return p


def check(m: MqttInstall) -> MqttConfig:
    """The ``[mqtt]`` section ``m`` asks for (file paths still the originals), after every check.

    Raises:
        TelemetryConfigError: a bad HOST:PORT, name or group; TLS files without --mqtt-tls;
            --cert without --key; an unreadable file; a key or password file wider than 0600.
    """
    host, port = _host_port(m.broker)
    if (m.ca or m.cert or m.key) and not m.tls:
        raise TelemetryConfigError("--ca/--cert/--key need --mqtt-tls")
    if bool(m.cert) != bool(m.key):
        raise TelemetryConfigError("--cert and --key go together (mutual TLS)")
    if bool(m.username) != bool(m.password_file):
        raise TelemetryConfigError("--mqtt-username and --mqtt-password-file go together")
    for path, flag in ((m.ca, "--ca"), (m.cert, "--cert"), (m.key, "--key"), (m.password_file, "--mqtt-password-file")):
        if path:
            _readable(path, flag)
    for path, flag in ((m.key, "--key"), (m.password_file, "--mqtt-password-file")):
        if path:
            check_secret_file(path, flag)
    over = {"host": host, "port": port, "tls": m.tls, "groups": m.groups, "ca_file": m.ca or "",
            "cert_file": m.cert or "", "key_file": m.key or "", "username": m.username or "",
            "password_file": m.password_file or "",
            **({"fleet": m.fleet} if m.fleet else {}), **({"device_id": m.device_id} if m.device_id else {})}
    return dataclasses.replace(MqttConfig(), **over)  # __post_init__ checks names and groups


def install_files(cfg: MqttConfig, etc_dir: Path) -> MqttConfig:
    """Copy the TLS and password files next to the config; ``cfg`` pointing at the copies."""
    d = etc_dir / "mqtt"
    d.mkdir(parents=True, exist_ok=True)
    names = {"ca_file": ("ca.crt", 0o644), "cert_file": ("device.crt", 0o644), "key_file": ("device.key", 0o600),
             "password_file": ("password", 0o600)}
    over = {}
    for field, (name, mode) in names.items():
        src = getattr(cfg, field)
        if src:
            dst = d / name
            if Path(src).resolve() != dst.resolve():
                tmp = d / f".{name}.tmp"
                tmp.touch(mode=0o600)
                shutil.copyfile(src, tmp)
                tmp.chmod(mode)
                tmp.replace(dst)
            over[field] = str(dst)
    return dataclasses.replace(cfg, **over)
