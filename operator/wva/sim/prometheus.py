"""Run a real Prometheus server (the distribution's binary) on loopback for tests, demo and benchmarks.

The server scrapes a list of ``host:port`` targets every second with ``honor_labels`` so the
emulator's ``namespace``/``pod`` labels survive, just as target labels do in a cluster. Rules files
(``rule_files``) are loaded at start and can be swapped on a running server (:meth:`LocalPrometheus.load_rules`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ResultPredicate = Callable[[list[dict[str, Any]]], bool]

BINARY_CANDIDATES = ("prometheus", "/usr/bin/prometheus", "/usr/local/bin/prometheus")
INSTALL_HINT = "install it with: sudo apt-get install -y prometheus  (Debian/Ubuntu package)"


def find_prometheus_binary() -> str | None:
    """Return the path of a Prometheus server binary, or None when none is installed."""
    override = os.environ.get("WVA_PROMETHEUS_BINARY")
    if override:
        return override if Path(override).exists() else None
    for candidate in BINARY_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPrometheus:
    """A Prometheus subprocess with its own temporary config and storage directory.

    ``stop()`` and ``start()`` can be called repeatedly: the port and data are kept, so a test can
    take Prometheus away and bring it back as an outage would.
    """

    def __init__(
        self,
        targets: Sequence[str],
        scrape_interval: float = 1.0,
        binary: str | None = None,
        port: int | None = None,
        metrics_path: str = "/metrics",
        scrape_configs: str | None = None,
        retention: str = "1h",
        rule_files: Sequence[str | Path] = (),
    ) -> None:
        self.binary = binary or find_prometheus_binary()
        if self.binary is None:
            raise FileNotFoundError(f"no Prometheus server binary found; {INSTALL_HINT}")
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.metrics_path = metrics_path
        self.scrape_configs = scrape_configs  # YAML list items replacing the static job (service discovery)
        self.port = port or free_port()
        self.retention = retention  # --storage.tsdb.retention.time: longer to query backfilled history
        self.rule_files = [str(Path(f).resolve()) for f in rule_files]
        self._dir = Path(tempfile.mkdtemp(prefix="wva-prometheus-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        """The TSDB folder (``--storage.tsdb.path``): backfilled blocks put here before ``start()`` are served."""
        return self._dir / "data"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> Path:
        interval = f"{max(int(self.scrape_interval * 1000), 100)}ms"
        targets = ", ".join(f'"{t}"' for t in self.targets)
        config = (
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  evaluation_interval: {interval}\n"
        )
        if self.rule_files:
            config += "rule_files:\n" + "".join(f"  - {json.dumps(f)}\n" for f in self.rule_files)
        config += "scrape_configs:\n"
        if self.scrape_configs is not None:
            config += self.scrape_configs
        else:
            config += (
                "  - job_name: vllm\n"
                "    honor_labels: true\n"
                f"    metrics_path: {self.metrics_path}\n"
                f"    scrape_timeout: {interval}\n"
                f"    static_configs:\n      - targets: [{targets}]\n"
            )
        path = self._dir / "prometheus.yml"
        path.write_text(config)
        return path

    def start(self, wait_ready: float = 20.0) -> None:
        if self.running:
            return
        config = self._write_config()
        self.data_dir.mkdir(exist_ok=True)
        assert self.binary is not None
        self._proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.retention.time={self.retention}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + wait_ready
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}: {err[-2000:]}")
            if self._get("/-/ready") == 200:
                log.info("Prometheus ready at %s", self.url)
                return
            time.sleep(0.05)
        raise TimeoutError(f"prometheus at {self.url} not ready within {wait_ready}s")

    def rule_groups(self) -> list[str]:
        """The names of the rule groups the running server has loaded (``/api/v1/rules``)."""
        with urllib.request.urlopen(self.url + "/api/v1/rules", timeout=5.0) as resp:
            body = json.loads(resp.read())
        return [str(group["name"]) for group in body["data"]["groups"]]

    def load_rules(self, rule_files: Sequence[str | Path], groups: Sequence[str], timeout: float = 20.0) -> None:
        """Replace the rules files of the running server (config rewritten, SIGHUP) and wait until it
        has loaded exactly the rule groups ``groups``."""
        self.rule_files = [str(Path(f).resolve()) for f in rule_files]
        self._write_config()
        if not self.running or self._proc is None:
            raise RuntimeError("prometheus is not running")
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        loaded: list[str] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, urllib.error.URLError, KeyError, ValueError):
                loaded = self.rule_groups()
                if sorted(loaded) == sorted(groups):
                    return
            time.sleep(0.1)
        raise TimeoutError(f"prometheus loaded rule groups {loaded}, not {list(groups)}, within {timeout}s")

    def stop(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=1.0) as resp:
                return int(resp.status)
        except (urllib.error.URLError, OSError):
            return 0

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query and return the result list (raises on HTTP or API errors)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5.0) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {body}")
        result = body["data"]["result"]
        return result if isinstance(result, list) else [result]

    def wait_for_blocking(
        self, promql: str, predicate: ResultPredicate | None = None, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns a non-empty result accepted by ``predicate``."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, RuntimeError, urllib.error.URLError):
                last = self.query(promql)
                if last and (predicate is None or predicate(last)):
                    return last
            time.sleep(0.2)
        raise TimeoutError(f"{promql!r} did not satisfy the condition within {timeout}s; last={last!r}")

    async def wait_for(
        self, promql: str, predicate: ResultPredicate | None = None, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Async form of :meth:`wait_for_blocking` (polls in a worker thread; real wall-clock deadline)."""
        return await asyncio.to_thread(self.wait_for_blocking, promql, predicate, timeout)
