"""Attacks against a real TUF repository built by `edgeship publish` and served on loopback.

Each test asserts the typed error (named after the attack) AND that the store (pointers,
stored models) and the model being served are unchanged.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest

from device_agent.ota import State
from device_agent.ota.errors import (
    BadSignatureError, EndlessDataError, ExpiredMetadataError, MetadataRollbackError,
    MixAndMatchError, ReleaseRollbackError, TamperedTargetError, WrongTargetError,
)
from device_agent.ota.trust import utcnow
from toolchain.ota.keys import RolePolicy

from .conftest import build_env


def _attempt(env, err_type, **device_kw):
    """Run an update that must fail with ``err_type``; check nothing changed on the device."""
    before = env.snapshot()
    store, agent, up = env.device(**device_kw)
    serving = agent.current().ref.sha256
    res = up.update("m")
    try:
        assert isinstance(up.last_error, err_type), (res, up.last_error)
        assert res.state is State.FAILED and res.reason is err_type.reason
        assert env.snapshot() == before
        assert agent.current().ref.sha256 == serving == store.active().sha256
        assert not list((env.state / "update" / "downloads").glob("*.tar"))
    finally:
        agent.close()
    return res, up


def _target_file(env, pub):
    return next((env.repo / "targets" / "m").glob(f"{pub.sha256}.*"))


def _resign(env, role_file, fn):
    """As an attacker with write access to the repository: edit a metadata file in place."""
    from tuf.api.metadata import Metadata

    p = env.repo / "metadata" / role_file
    md = Metadata.from_file(str(p))
    fn(md)
    p.write_bytes(md.to_bytes())


def test_tampered_bundle_bytes(env):
    pub = env.publish(env.bundle(release=2, kind="good2"))
    f = _target_file(env, pub)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    _attempt(env, TamperedTargetError)
    assert not list((env.state / "update" / "downloads" / "partial").glob("*.part"))


def test_signature_by_wrong_key(env):
    from securesystemslib.signer import CryptoSigner

    env.publish(env.bundle(release=2, kind="good2"))
    wrong = CryptoSigner.generate_ed25519()
    _resign(env, "timestamp.json", lambda md: md.sign(wrong))
    _attempt(env, BadSignatureError)


def test_missing_signatures(env):
    env.publish(env.bundle(release=2, kind="good2"))
    _resign(env, "timestamp.json", lambda md: md.signatures.clear())
    _attempt(env, BadSignatureError)


def test_too_few_signatures(tmp_path):
    env = build_env(tmp_path, policies={"targets": RolePolicy(keys=2, threshold=2)})
    try:
        pub = env.publish(env.bundle(release=2, kind="good2"))
        fn = f"{pub.targets_version}.targets.json"

        def drop_one(md):
            md.signatures.pop(next(iter(md.signatures)))
        _resign(env, fn, drop_one)
        # the snapshot pins targets by version only, so the edited file is served as is
        _attempt(env, BadSignatureError)
    finally:
        env.server.shutdown()


def test_replayed_old_metadata(env):
    old_ts = (env.repo / "metadata" / "timestamp.json").read_bytes()
    env.publish(env.bundle(release=2, kind="good2"))
    store, agent, up = env.device()
    assert up.update("m").state is State.COMMIT  # the device now trusts the newer timestamp
    agent.close()
    env.publish(env.bundle(release=3, kind="good"))
    (env.repo / "metadata" / "timestamp.json").write_bytes(old_ts)  # attacker replays release-1 metadata
    _attempt(env, MetadataRollbackError)


def test_replayed_old_release(env):
    env.publish(env.bundle(release=2, kind="good2"))
    store, agent, up = env.device()
    assert up.update("m").state is State.COMMIT
    before = env.snapshot()
    res = up.update("m", release=1)  # validly signed, but older than what is installed
    assert isinstance(up.last_error, ReleaseRollbackError)
    assert res.state is State.FAILED and res.reason is ReleaseRollbackError.reason
    assert env.snapshot() == before and agent.current().ref.release == 2
    agent.close()


def test_expired_metadata_and_clock_stepped_back(env):
    env.publish(env.bundle(release=2, kind="good2"))  # timestamp expires in 7 days
    future = utcnow() + timedelta(days=30)
    _attempt(env, ExpiredMetadataError, clock=lambda: future)
    # the clock steps back to "now": the metadata is not expired by the wall clock any more,
    # but the device has seen a later time and keeps refusing
    res, up = _attempt(env, ExpiredMetadataError)
    assert "stepped back" in str(up.last_error)
    # a device that never saw the later time would accept it (so the persisted time is what refused)
    (env.state / "update" / "trusted_time.json").unlink()
    store, agent, up = env.device()
    assert up.update("m").state is State.COMMIT
    agent.close()


def test_target_for_another_device_class_is_refused_before_download(env):
    env.publish(env.bundle(release=2, kind="good2", arch=("armv7l",)))
    env.server.requests.clear()
    _attempt(env, WrongTargetError)
    assert not [p for p, _ in env.server.requests if p.startswith("/targets/")]


def test_newer_engine_required_is_refused(env):
    env.publish(env.bundle(release=2, kind="good2", min_engine_version="99.0"))
    _attempt(env, WrongTargetError)


def _extra_bytes_handler():
    from toolchain.ota.serve import RepoRequestHandler

    class ExtraBytes(RepoRequestHandler):
        def do_GET(self):
            if not self.path.startswith("/targets/"):
                return super().do_GET()
            data = open(self.translate_path(self.path), "rb").read() + b"\0" * 65536
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return ExtraBytes


def test_data_past_signed_length(tmp_path):
    env = build_env(tmp_path, handler=_extra_bytes_handler())
    try:
        env.publish(env.bundle(release=2, kind="good2"))
        _attempt(env, EndlessDataError)
        assert not list((env.state / "update" / "downloads" / "partial").glob("*.part"))
    finally:
        env.server.shutdown()


@pytest.mark.parametrize("roles", [["targets"], ["root", "timestamp", "snapshot"]])
def test_key_rotation_then_update(env, roles):
    from toolchain.ota.publish import rotate_key

    for role in roles:
        old, new = rotate_key(role=role, repo_dir=env.repo, keys_dir=env.keys)
        assert old != new and (env.keys / "retired" / role / f"{old}.pem").exists()
    pub = env.publish(env.bundle(release=2, kind="good2"))
    store, agent, up = env.device()
    res = up.update("m")
    assert res.state is State.COMMIT, (res, up.last_error)
    assert store.active().sha256 == pub.sha256
    agent.close()


def test_offline_update_from_a_local_copy(env):
    pub = env.publish(env.bundle(release=2, kind="good2"))
    usb = env.tmp / "usb"
    shutil.copytree(env.repo, usb)
    env.server.shutdown()  # no network: only the copy
    store, agent, up = env.device(repository_url=str(usb))
    res = up.update("m")
    assert res.state is State.COMMIT, (res, up.last_error)
    assert store.active().sha256 == pub.sha256
    agent.close()


def test_offline_copy_is_verified_too(env):
    pub = env.publish(env.bundle(release=2, kind="good2"))
    usb = env.tmp / "usb"
    shutil.copytree(env.repo, usb)
    f = next((usb / "targets" / "m").glob(f"{pub.sha256}.*"))
    f.write_bytes(f.read_bytes()[:-10])  # truncated copy
    _attempt(env, TamperedTargetError, repository_url=str(usb))


def test_bundle_made_by_edgeship_package_goes_through(env):
    """A bundle written by the real packager (from a build directory) publishes and installs."""
    from tests.agent.conftest import make_bundle as packaged

    b = packaged(env.tmp / "pkg", release=3)
    b = b.path
    pub = env.publish(b)
    store, agent, up = env.device()
    res = up.update(pub.target_path.split("/")[0])
    assert res.state is State.COMMIT, (res, up.last_error)
    assert store.active().sha256 == pub.sha256
    agent.close()


@pytest.mark.parametrize("field,value", [
    ("precision", "fp16"),
    # io and schema_version were signed but not compared before issue 10
    ("io", {"inputs": [{"name": "renamed", "dtype": "float32", "shape": [1, 4]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 4]}]}),
    ("schema_version", 1),
])
def test_signed_facts_must_match_the_bundle(env, field, value):
    """A publisher that signs facts the bundle does not have (mix-and-match) is caught, for
    every signed fact (runtime.contracts.release.FACT_FIELDS)."""
    from runtime.contracts.release import CUSTOM_KEY, FACT_FIELDS
    from toolchain.ota.repository import Repository

    assert field in FACT_FIELDS
    pub = env.publish(env.bundle(release=2, kind="good2"))
    repo = Repository(env.repo, keys_dir=env.keys)
    with repo.lock():
        targets = repo.targets()
        facts = targets.signed.targets[pub.target_path].unrecognized_fields["custom"][CUSTOM_KEY]
        assert facts[field] != value
        facts[field] = value  # signed, but not what the bundle's model.json says
        repo.commit(targets=targets, root=repo.root().signed, expires_days=30, timestamp_expires_days=7)
    res, up = _attempt(env, MixAndMatchError)
    assert f"['{field}']" in str(up.last_error)
