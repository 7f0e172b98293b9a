"""The simulator is not part of the operator's runtime: ``wva run`` imports neither ``wva.sim`` (the
demo's emulators and scenarios) nor the libraries only the demo needs (kmock, matplotlib).

The check runs the real ``wva run`` code path in a fresh interpreter: command-line parsing, settings,
the handlers and the runtime are built as in a pod, and only kopf's operator loop is replaced by a
coroutine that returns at once (so nothing connects anywhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# jsonpatch is not on the list: kopf itself requires and imports it (kopf/_cogs/structs/patches.py)
DEMO_ONLY = ("kmock", "matplotlib")

RUN_PATH = """
import json, sys
import kopf

async def no_operator(**_):
    return None

kopf.operator = no_operator
import wva.cli

code = wva.cli.main(sys.argv[1:])
import wva.handlers, wva.runtime  # what `wva run` runs; already imported by it
demo_only = set(json.loads(%r))
loaded = sorted(m for m in sys.modules if m.split(".")[:2] == ["wva", "sim"] or m.split(".")[0] in demo_only)
print(json.dumps({"code": code, "loaded": loaded, "handlers": "wva.handlers" in sys.modules}))
"""


def run_path(*argv: str) -> dict[str, object]:
    env = {
        **os.environ,
        "WVA_KUBE_API_URL": "http://127.0.0.1:9",  # never contacted: the operator loop does not run
        "PROMETHEUS_BASE_URL": "http://127.0.0.1:9",
        "LEADER_ELECTION": "false",
    }
    out = subprocess.run(
        [sys.executable, "-c", RUN_PATH % json.dumps(DEMO_ONLY), *argv],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_wva_run_imports_no_simulator_module() -> None:
    result = run_path("run", "--metrics-port", "-1", "--probe-port", "0", "--namespace", "ns")
    assert result["code"] == 0 and result["handlers"] is True
    assert result["loaded"] == []


@pytest.mark.parametrize("command", ["demo", "backtest", "explain"])
def test_each_sub_command_defines_its_arguments_only_when_it_runs(command: str) -> None:
    code = (
        "import sys, wva.cli\n"
        f"wva.cli._parser({command!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('wva.sim', 'wva.replay'))))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    if command == "demo":
        assert "wva.sim.demo_cli" in loaded and "wva.replay" not in loaded
    else:
        assert f"wva.replay.{command}_cli" in loaded and "wva.sim" not in loaded


def test_the_full_parser_still_knows_every_sub_command_argument() -> None:
    from wva.cli import _parser

    parser = _parser()
    assert parser.parse_args(["demo", "--list-scenarios"]).list_scenarios is True
    assert parser.parse_args(["explain", "ns/name"]).target == "ns/name"
    assert parser.parse_args(["run", "-n", "a"]).namespace == ["a"]
