"""`edgeship-agent install --mqtt ... --mqtt-tls --ca --cert --key` writes an [mqtt] section a
real broker accepts: docs/mosquitto/mosquitto.conf (mutual TLS, identity from the certificate
CN, no anonymous access) with docs/mosquitto/acl, run here with only its paths and port
changed, a CA and certificates made in the test with `cryptography`. Secrets readable by
others are refused."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mqtt_helpers import wait_for
from toolchain.fleet.localbroker import MOSQUITTO, free_port

pytestmark = pytest.mark.mqtt
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "mosquitto"


def _pki(d: Path) -> dict[str, Path]:
    """A CA, a broker certificate for 127.0.0.1, client certificates for f1/d1, f1/d2 and the operator."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    d.mkdir(parents=True, exist_ok=True)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem, key, cert):
        (d / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k = d / f"{stem}.key"
        k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        k.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("edgeship test CA")).issuer_name(name("edgeship test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write("ca", ca_key, ca)
    for stem, cn, server in (("broker", "localhost", True), ("d1", "f1/d1", False), ("d2", "f1/d2", False),
                             ("operator", "edgeship-operator", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
             .not_valid_after(now + dt.timedelta(days=7))
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        write(stem, key, b.sign(ca_key, hashes.SHA256()))
    return {p.stem + p.suffix: p for p in d.iterdir()}


@pytest.fixture
def tls_broker(tmp_path):
    """docs/mosquitto/mosquitto.conf with paths and port rewritten, docs/mosquitto/acl verbatim."""
    passwd_bin = shutil.which("mosquitto_passwd")
    if MOSQUITTO is None or passwd_bin is None:
        pytest.skip("mosquitto / mosquitto_passwd not installed (Debian package 'mosquitto')")
    certs = tmp_path / "certs"
    _pki(certs)
    work = tmp_path / "broker"
    work.mkdir()
    subprocess.run([passwd_bin, "-c", "-b", str(work / "passwd"), "edgeship-operator", "pw"], check=True)
    port = free_port()
    conf = (DOCS / "mosquitto.conf").read_text()
    for old, new in (("listener 8883", f"listener {port} 127.0.0.1"), ("/etc/mosquitto/certs/", f"{certs}/"),
                     ("/etc/mosquitto/passwd", str(work / "passwd")), ("/etc/mosquitto/edgeship.acl", str(DOCS / "acl")),
                     ("/var/lib/mosquitto/", f"{work}/"), ("log_dest syslog", f"log_dest file {work}/log")):
        assert old in conf, old
        conf = conf.replace(old, new)
    if os.geteuid() == 0:
        conf = "user root\n" + conf  # mosquitto would drop to user 'mosquitto', who cannot read tmp
    (work / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    import socket

    wait_for(lambda: proc.poll() is None and _listening(socket, port), timeout_s=10)
    yield {"port": port, "certs": certs}
    proc.terminate()
    proc.wait(10)


def _listening(socket, port) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _agent(*args, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "device_agent.cli", *args], env=env, capture_output=True,
                          text=True, check=check)


def test_install_writes_an_mqtt_section_a_tls_broker_with_acls_accepts(tls_broker, tmp_path, tiny_bundles,
                                                                      operator_keys):
    from toolchain.fleet.client import BrokerSettings, FleetClient

    certs, port = tls_broker["certs"], tls_broker["port"]
    prefix = tmp_path / "prefix"
    base = ["install", "--bundle", str(tiny_bundles[1].path), "--prefix", str(prefix), "--port", "0",
            "--trust-root", str(operator_keys.root), "--mqtt", f"127.0.0.1:{port}", "--fleet", "f1",
            "--device-id", "d1", "--groups", "lab,cam", "--mqtt-tls", "--ca", str(certs / "ca.crt"),
            "--cert", str(certs / "d1.crt"), "--key", str(certs / "d1.key")]
    (certs / "d1.key").chmod(0o644)
    r = _agent(*base, check=False)
    assert r.returncode == 2 and "has mode 0644" in r.stderr and "chmod 600" in r.stderr, r.stderr
    assert not (prefix / "etc").exists()                              # refused before writing anything
    (certs / "d1.key").chmod(0o600)
    r = _agent(*base, "--json")
    res = json.loads(r.stdout)
    assert res["mqtt"] == {"host": "127.0.0.1", "port": port, "fleet": "f1", "device_id": "d1", "tls": True}
    assert res["operator_keys"] == [operator_keys.signer.keyid]
    etc = prefix / "etc" / "edgeship" / "mqtt"
    assert (etc / "device.key").stat().st_mode & 0o777 == 0o600
    from device_agent.config import load_config

    mq = load_config(res["config"]).section("mqtt")
    assert (mq.host, mq.port, mq.tls, mq.groups) == ("127.0.0.1", port, True, ("lab", "cam"))
    assert mq.ca_file == str(etc / "ca.crt") and mq.key_file == str(etc / "device.key")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "device_agent.cli", "run", "--config", res["config"]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    op_tls = BrokerSettings(port=port, tls=True, ca_file=str(certs / "ca.crt"), cert_file=str(certs / "operator.crt"),
                            key_file=str(certs / "operator.key"))
    try:
        with FleetClient(op_tls, signer=operator_keys.signer) as op:
            view = wait_for(lambda: (v := op.snapshot("f1", settle_s=0.3).get("d1")) and v.status
                            and v.status.get("online") and v, timeout_s=30)
            assert view.status["groups"] == ["lab", "cam"]
            assert op.command("f1", "d1", "rebirth", timeout_s=15)["ok"] is True   # signed, through TLS + ACL
            # another device's certificate may not write d1's topics (identity = certificate CN)
            rogue = _tls_client(port, certs, "d2")
            info = rogue.publish("edgeship/v1/f1/d1/status", b'{"online": false}', qos=1, retain=True)
            info.wait_for_publish(5)
            assert rogue._acks[info.mid] == 0x87                       # not authorized
            rogue.disconnect()
            assert op.snapshot("f1", settle_s=0.3)["d1"].status["online"] is True
        with pytest.raises(Exception):                                 # no client certificate: refused
            FleetClient(BrokerSettings(port=port, tls=True, ca_file=str(certs / "ca.crt")), connect_timeout_s=3)
    finally:
        proc.terminate()
        proc.wait(20)


def _tls_client(port, certs, stem):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"raw-{stem}", protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(certs / "ca.crt"), certfile=str(certs / f"{stem}.crt"), keyfile=str(certs / f"{stem}.key"))
    c._acks = {}
    ready = threading.Event()
    c.on_connect = lambda *a: ready.set()
    c.on_publish = lambda cl, u, mid, rc, p: c._acks.__setitem__(mid, rc.value)
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ready.wait(5)
    return c


def test_install_refuses_a_password_file_others_can_read(tmp_path, tiny_bundles):
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    pw.chmod(0o640)
    prefix = tmp_path / "p"
    base = ["install", "--bundle", str(tiny_bundles[1].path), "--prefix", str(prefix), "--mqtt", "broker:1883",
            "--mqtt-username", "f1/d1", "--mqtt-password-file", str(pw)]
    r = _agent(*base, check=False)
    assert r.returncode == 2 and "mode 0640" in r.stderr and not prefix.exists(), r.stderr
    pw.chmod(0o600)
    res = json.loads(_agent(*base, "--json").stdout)
    from device_agent.config import load_config

    mq = load_config(res["config"]).section("mqtt")
    assert mq.username == "f1/d1" and Path(mq.password_file).read_text() == "secret\n"
    assert Path(mq.password_file).stat().st_mode & 0o777 == 0o600
    for bad, needle in ((["--mqtt", "nohostport"], "expected HOST:PORT"), (["--ca", "x.pem"], "needs --mqtt"),
                        (["--mqtt", "h:1", "--mqtt-tls", "--cert", "c.pem"], "go together"),
                        (["--mqtt", "h:1", "--cert", "c.pem"], "need --mqtt-tls")):
        r = _agent("install", "--bundle", str(tiny_bundles[1].path), "--prefix", str(tmp_path / "q"), *bad, check=False)
        assert r.returncode == 2 and needle in r.stderr, (bad, r.stderr)
