"""The package and its command line: layout contract, version, help, and startup errors."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import wva
from wva.cli import main


def test_importing_wva_does_not_shadow_the_stdlib_operator_module() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import wva, operator; print(operator.__file__)"],
        capture_output=True, text=True, check=True,
    )
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(out.stdout.strip()).resolve().parent == stdlib


def test_version_command(capsys: object) -> None:
    assert main(["version"]) == 0
    assert wva.__version__ in capsys.readouterr().out  # type: ignore[attr-defined]


def test_run_help_documents_every_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "wva.cli", "run", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--all-namespaces", "--namespace", "--metrics-port", "--probe-port", "--log-level", "--shards",
                 "--shard-index"):
        assert flag in out.stdout
    assert "PROMETHEUS_BASE_URL" in out.stdout


def test_run_refuses_bad_environment_naming_the_variable() -> None:
    env = {**os.environ, "PROMETHEUS_BASE_URL": "https://prom:9090", "COLLECTOR_V2": "banana"}
    out = subprocess.run([sys.executable, "-m", "wva.cli", "run"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert "COLLECTOR_V2='banana'" in out.stderr


def test_run_requires_a_prometheus_url() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_BASE_URL"}
    out = subprocess.run([sys.executable, "-m", "wva.cli", "run"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert "PROMETHEUS_BASE_URL is required" in out.stderr
