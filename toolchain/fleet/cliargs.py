"""Flags and their readers shared by the fleet commands (push, fleet *, rollout *, simulate)."""

from __future__ import annotations

import argparse
import os

from runtime.contracts.mqtt.topics import DEFAULT_PREFIX, DeviceTopics, device_topics

from ..errors import BadInputError


def broker_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("broker")
    g.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker HOST:PORT (default %(default)s)")
    g.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix (default %(default)s)")
    g.add_argument("--tls", action="store_true", help="connect with TLS")
    g.add_argument("--ca-file", help="CA certificate (PEM) of the broker")
    g.add_argument("--cert-file", help="operator client certificate (PEM)")
    g.add_argument("--key-file", help="key of --cert-file")
    g.add_argument("--username", help="MQTT username")
    g.add_argument("--password-file", help="file holding the MQTT password")


def keys_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys", default=os.environ.get("EDGESHIP_KEYS"), metavar="DIR",
                   help="key directory of `edgeship keys init`: its operator key signs what is sent "
                        "(default $EDGESHIP_KEYS)")


def signer_of(args):
    """The operator signer of ``--keys``. Raises BadInputError without it, KeyStoreError on a bad dir."""
    from .signer import OperatorSigner

    if not args.keys:
        raise BadInputError("desired state and commands are signed with the operator key: pass --keys DIR "
                            "(the key directory of `edgeship keys init`) or set EDGESHIP_KEYS")
    return OperatorSigner.from_keys_dir(args.keys)


def topics(args, device: str) -> DeviceTopics:
    """The topics of ``device`` of ``--fleet``. Raises BadInputError on a name that is no topic level."""
    try:
        return device_topics(fleet=args.fleet, device=device, prefix=args.prefix)
    except ValueError as e:
        raise BadInputError(str(e)) from e


def check_fleet(args) -> None:
    """Refuse a --fleet that is no single topic level (BadInputError) before connecting."""
    topics(args, "any-device")


def check_rollout_id(args) -> None:
    """Refuse a rollout id that is no single topic level (BadInputError) before connecting."""
    from runtime.contracts.mqtt.topics import check_level

    try:
        check_level("rollout id", args.id)
    except ValueError as e:
        raise BadInputError(str(e)) from e


def settings(args):
    from .client import BrokerSettings

    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        raise BadInputError(f"--broker {args.broker!r}: expected HOST:PORT")
    password = None
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as f:
            password = f.read().strip()
    return BrokerSettings(host=host, port=int(port), prefix=args.prefix, tls=args.tls, ca_file=args.ca_file,
                          cert_file=args.cert_file, key_file=args.key_file, username=args.username,
                          password=password)
