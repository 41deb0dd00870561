"""A real Prometheus server (Debian's ``prometheus`` 2.42) on a free loopback port, for tests.

It scrapes the given targets every second with a temp config and a temp TSDB, and answers
PromQL through its HTTP API. ``promtool check metrics`` is run on raw exposition text.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, str], *, interval_s: int = 1) -> None:
        """``targets``: job name -> ``host:port`` (scraped at ``/metrics``)."""
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        jobs = "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['{t}']\n"
                       for job, t in targets.items())
        (self.dir / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {interval_s}s\n  scrape_timeout: {interval_s}s\n"
            f"  evaluation_interval: {interval_s}s\nscrape_configs:\n{jobs}")
        self.log = open(self.dir / "prometheus.log", "w")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> "Prometheus":
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: "
                                   f"{(self.dir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as e:  # a PromQL error comes back as 400 with a JSON body
            doc = json.loads(e.read())
        return doc

    def query(self, promql: str) -> list[dict]:
        """The instant vector of ``promql``. Raises AssertionError with Prometheus' error."""
        doc = self.api("query", query=promql)
        if doc.get("status") != "success":
            raise AssertionError(f"{promql!r}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]["result"]

    def wait_for(self, promql: str, timeout_s: float = 30.0, *, pred=lambda r: bool(r)) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        result: list = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if pred(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{promql!r} did not return what was awaited within {timeout_s}s: {result}")

    def targets_up(self) -> dict[str, str]:
        doc = self.api("targets")
        return {t["labels"]["job"]: t["health"] for t in doc["data"]["activeTargets"]}


def promtool_check(exposition: bytes) -> tuple[int, str]:
    """``promtool check metrics`` on exposition text: (exit code, its output)."""
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode()
