"""The signed control plane: every message the operator sends a device is signed.

Every catalogue row whose sender is the operator (:func:`.messages.operator_specs`:
``desired``, ``cmd/{name}``, and whatever row is added later) travels in one envelope::

    {"signed": {"schema": "edgeship.desired/1",     # the kind's schema
                "leaf": "desired",                  # the topic under the device: binds kind + name
                "to": {"fleet": "f1", "device": "d1"},   # or {"fleet": "f1", "group": "canary"}
                "version": 1767225600123456,        # strictly increasing per signing key and kind
                "issued_at_ms": 1767225600123, "expires_at_ms": 1769817600123,
                "body": {...}},                     # the kind's document (Desired.to_json(), a command body)
     "keyid": "<sha256 of the raw Ed25519 public key, hex>",
     "sig": "<Ed25519 signature over canonical(signed), hex>"}

``canonical`` is compact, key-sorted JSON (no NaN); the device re-encodes the parsed
``signed`` object to check the signature, so whitespace or key order on the wire do not
matter. The operator keys a device trusts live in its TUF root.json, under
:data:`OPERATOR_FIELD` (``edgeship keys init`` puts one there, ``keys rotate --role operator``
replaces it), so they are installed with the trust root and rotate with it.

Pure: :func:`sign` and :func:`verify` take values and return values; the caller keeps the
:class:`ReplayState` on disk. Checks, in this order (an unauthenticated field is never
trusted): envelope shape (:class:`UnsignedMessageError`), key known
(:class:`UnknownOperatorKeyError`), signature (:class:`BadControlSignatureError`), topic and
addressee (:class:`MisaddressedMessageError`), expiry against ``max(now, newest issued_at
accepted)`` (:class:`ExpiredMessageError`, so a clock set back does not revive old
messages), version (:class:`ReplayedMessageError`: per key and *kind*, so once a newer
command is accepted an older one of any name is void; the same message again is a
duplicate, not an attack: a retained document is re-delivered on every connect).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..errors import PayloadRejected

#: where a TUF root.json (``signed``) lists the operator's public keys
OPERATOR_FIELD = "x-edgeship-operator"
KEYTYPE = "ed25519"


class ControlRefused(PayloadRejected):
    """A control message failed authentication or freshness; ``reason_code`` names the attack."""

    code = "control.refused"

    def __init__(self, detail: str) -> None:
        super().__init__(self.code, detail)


class UnsignedMessageError(ControlRefused):
    """No signature envelope (an anonymous client, or an old operator tool)."""

    code = "control.unsigned"


class UnknownOperatorKeyError(ControlRefused):
    """Signed by a key the device's trust root does not list (forged, or rotated out)."""

    code = "control.unknown_key"

    def __init__(self, detail: str, *, keyid: str = "") -> None:
        super().__init__(detail)
        self.keyid = keyid


class BadControlSignatureError(ControlRefused):
    """The signature does not verify: the message was forged or changed after signing."""

    code = "control.bad_signature"


class MisaddressedMessageError(ControlRefused):
    """Signed for another fleet, device, group or topic (a valid message moved elsewhere)."""

    code = "control.misaddressed"


class ExpiredMessageError(ControlRefused):
    """Past its expiry: a stale order captured and played back later."""

    code = "control.expired"


class ReplayedMessageError(ControlRefused):
    """A version at or below the newest accepted from this key for this kind (a replay)."""

    code = "control.replayed"


# ---------------------------------------------------------------- bytes and keys
def canonical(obj: Any) -> bytes:
    """The bytes that are signed: compact, key-sorted JSON, UTF-8, no NaN/Infinity.

    Raises:
        ValueError: ``obj`` holds a NaN/Infinity or something JSON cannot encode.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def keyid_of(public_raw: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key: its sha256, hex."""
    return hashlib.sha256(public_raw).hexdigest()


def public_raw(private_key: Any) -> bytes:
    """The raw public bytes of a ``cryptography`` Ed25519 private key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class OperatorKeys:
    """The operator public keys a device trusts: key id -> raw Ed25519 public key."""

    keys: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_root(cls, root_doc: Mapping[str, Any]) -> "OperatorKeys":
        """The keys under ``signed[OPERATOR_FIELD]`` of a TUF root.json document (none if absent).

        Raises:
            PayloadRejected: the field is malformed (``trust.malformed``).
        """
        signed = root_doc.get("signed") if isinstance(root_doc, Mapping) else None
        section = signed.get(OPERATOR_FIELD) if isinstance(signed, Mapping) else None
        if section is None:
            return cls()
        try:
            out = {}
            for kid, k in section["keys"].items():
                raw = bytes.fromhex(k["public"])
                if k.get("keytype") != KEYTYPE or len(raw) != 32 or keyid_of(raw) != kid:
                    raise ValueError(f"key {kid[:12]}: not an ed25519 key with a matching key id")
                out[kid] = raw
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise PayloadRejected("trust.malformed", f"root.json {OPERATOR_FIELD}: {e}") from e
        return cls(out)

    @staticmethod
    def root_field(public_keys: list[bytes]) -> dict[str, Any]:
        """The value of ``signed[OPERATOR_FIELD]`` listing ``public_keys`` (raw bytes)."""
        return {"keys": {keyid_of(p): {"keytype": KEYTYPE, "public": p.hex()} for p in public_keys}}


# ---------------------------------------------------------------- the signed part
@dataclass(frozen=True)
class Addressee:
    """Who a message is for: one device, every member of a group, or one rollout's
    controller (``edgeship rollout pause|resume|abort``), of one fleet."""

    fleet: str
    device: str | None = None
    group: str | None = None
    rollout: str | None = None

    def to_json(self) -> dict[str, str]:
        return {"fleet": self.fleet, **{k: v for k, v in (("device", self.device), ("group", self.group),
                                                           ("rollout", self.rollout)) if v}}


@dataclass(frozen=True)
class Recipient:
    """Who checks a message: a device (its fleet, id and groups) or a rollout controller."""

    fleet: str
    device: str | None = None
    groups: tuple[str, ...] = ()
    rollout: str | None = None

    def is_for_me(self, to: Mapping[str, Any]) -> bool:
        if to.get("fleet") != self.fleet or len(to) != 2:
            return False
        if "device" in to:
            return self.device is not None and to["device"] == self.device
        if "rollout" in to:
            return self.rollout is not None and to["rollout"] == self.rollout
        return "group" in to and self.device is not None and to["group"] in self.groups


@dataclass(frozen=True)
class Signed:
    """The signed part of an operator message."""

    schema: str
    leaf: str
    to: Addressee
    version: int
    issued_at_ms: int
    expires_at_ms: int
    body: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "leaf": self.leaf, "to": self.to.to_json(), "version": self.version,
                "issued_at_ms": self.issued_at_ms, "expires_at_ms": self.expires_at_ms, "body": dict(self.body)}


def sign(signed: Signed, *, private_key: Any) -> bytes:
    """The wire payload of ``signed``, signed with a ``cryptography`` Ed25519 private key."""
    doc = signed.to_json()
    sig = private_key.sign(canonical(doc))
    return json.dumps({"signed": doc, "keyid": keyid_of(public_raw(private_key)), "sig": sig.hex()},
                      separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------- replay state
@dataclass(frozen=True)
class ReplayState:
    """Per ``(keyid, kind)``: the newest version accepted and the digest of that message;
    and the newest ``issued_at_ms`` accepted (the device's trusted time for expiry)."""

    highest: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    latest_issued_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": 1, "latest_issued_ms": self.latest_issued_ms,
                "highest": {k: [v, d] for k, (v, d) in sorted(self.highest.items())}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "ReplayState":
        """Raises ValueError/TypeError/KeyError on a document this version cannot read."""
        if doc.get("schema_version") != 1:
            raise ValueError(f"replay state schema {doc.get('schema_version')!r} is not 1")
        return cls(highest={str(k): (int(v[0]), str(v[1])) for k, v in doc["highest"].items()},
                   latest_issued_ms=int(doc["latest_issued_ms"]))

    def accept(self, verified: "Verified") -> "ReplayState":
        """This state after accepting ``verified`` (a duplicate changes nothing)."""
        if not verified.fresh:
            return self
        highest = dict(self.highest)
        highest[verified.slot] = (verified.signed.version, verified.digest)
        return replace(self, highest=highest,
                       latest_issued_ms=max(self.latest_issued_ms, verified.signed.issued_at_ms))


@dataclass(frozen=True)
class Verified:
    """A message that passed every check. ``fresh`` is False for the same message again
    (same version and digest as the newest accepted): a duplicate, not an attack."""

    signed: Signed
    keyid: str
    digest: str
    fresh: bool

    @property
    def slot(self) -> str:
        return _slot(self.keyid, self.signed.schema)

    @property
    def body(self) -> Mapping[str, Any]:
        return self.signed.body


def _slot(keyid: str, schema: str) -> str:
    return f"{keyid}:{schema}"


def _int(doc: Mapping[str, Any], key: str) -> int:
    v = doc.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise UnsignedMessageError(f"signed.{key} must be a non-negative integer, got {v!r}")
    return v


def _open(doc: Mapping[str, Any]) -> tuple[dict, str, bytes]:
    signed, keyid, sig = doc.get("signed"), doc.get("keyid"), doc.get("sig")
    if not isinstance(signed, dict) or not isinstance(keyid, str) or not isinstance(sig, str):
        raise UnsignedMessageError("no signature envelope {signed, keyid, sig}: unsigned messages are refused")
    try:
        return signed, keyid, bytes.fromhex(sig)
    except ValueError as e:
        raise BadControlSignatureError(f"sig is not hex: {e}") from e


def _parse_signed(signed: dict) -> Signed:
    to, body = signed.get("to"), signed.get("body")
    schema, leaf = signed.get("schema"), signed.get("leaf")
    if not isinstance(to, dict) or not isinstance(body, dict) or not isinstance(schema, str) \
            or not isinstance(leaf, str) or not all(isinstance(v, str) for v in to.values()):
        raise UnsignedMessageError("signed needs schema, leaf (strings), to (object of strings), body (object)")
    return Signed(schema=schema, leaf=leaf, to=Addressee(to.get("fleet", ""), to.get("device"), to.get("group"),
                                                         to.get("rollout")),
                  version=_int(signed, "version"), issued_at_ms=_int(signed, "issued_at_ms"),
                  expires_at_ms=_int(signed, "expires_at_ms"), body=body)


def verify(doc: Mapping[str, Any], *, keys: OperatorKeys, leaf: str, schema: str, me: Recipient,
           now_ms: int, replay: ReplayState) -> Verified:
    """Check one operator message (already parsed from JSON) that arrived on ``leaf``.

    Raises:
        UnsignedMessageError, UnknownOperatorKeyError, BadControlSignatureError,
        MisaddressedMessageError, ExpiredMessageError, ReplayedMessageError.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw_signed, keyid, sig = _open(doc)
    if keyid not in keys.keys:
        raise UnknownOperatorKeyError(
            f"signed by key {keyid[:12]}, which this device's trust root does not list "
            f"(trusted: {sorted(k[:12] for k in keys.keys) or 'none'})", keyid=keyid)
    try:
        data = canonical(raw_signed)
        Ed25519PublicKey.from_public_bytes(keys.keys[keyid]).verify(sig, data)
    except (InvalidSignature, ValueError) as e:
        raise BadControlSignatureError(f"signature by key {keyid[:12]} does not verify") from e
    signed = _parse_signed(raw_signed)
    if signed.leaf != leaf or signed.schema != schema:
        raise MisaddressedMessageError(f"signed for topic {signed.leaf!r} ({signed.schema}), "
                                       f"arrived on {leaf!r} ({schema})")
    if not me.is_for_me(raw_signed["to"]):
        raise MisaddressedMessageError(f"signed for {signed.to.to_json()}, this is {me.fleet}/{me.device} "
                                       f"(groups {list(me.groups)})")
    ref = max(now_ms, replay.latest_issued_ms)
    if signed.expires_at_ms <= ref:
        raise ExpiredMessageError(f"expired {(ref - signed.expires_at_ms) / 1000:.0f} s ago "
                                  f"(version {signed.version})")
    digest = hashlib.sha256(data).hexdigest()
    top, top_digest = replay.highest.get(_slot(keyid, schema), (-1, ""))
    if signed.version == top and digest == top_digest:
        return Verified(signed, keyid, digest, fresh=False)
    if signed.version <= top:
        raise ReplayedMessageError(f"version {signed.version} is not above {top}, the newest {schema} "
                                   f"accepted from key {keyid[:12]}")
    return Verified(signed, keyid, digest, fresh=True)
