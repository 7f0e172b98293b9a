"""``wva demo`` arguments and entry point (the demo itself lives in :mod:`wva.sim.demo`)."""

from __future__ import annotations

import argparse
import sys


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", default="default",
        help="built-in scenario (see --list-scenarios) or a YAML file (docs/demo.md#scenario-files)",
    )
    parser.add_argument("--list-scenarios", action="store_true", help="list the built-in scenarios and exit")
    parser.add_argument(
        "--duration", type=float, default=None, help="scenario length in simulated seconds (default: the scenario's)"
    )
    parser.add_argument(
        "--speed", type=float, default=None,
        help="simulated seconds per real second (default: the scenario's, 20 for 'default')",
    )
    parser.add_argument(
        "--collector", choices=("v1", "v2"), default="v1",
        help="metrics collector with Prometheus (default v1, the operator's own default; pod scraping is always v2)",
    )
    parser.add_argument(
        "--metrics-source", choices=("prometheus", "pods"), default=None,
        help="where the operator reads pod metrics (default: real Prometheus if its binary is found, else pods)",
    )
    parser.add_argument("--no-ui", action="store_true", help="print one JSON object per line instead of the live view")
    parser.add_argument("--output", default="demo-output", help="folder for the summary, chart and records")


def run_demo(args: argparse.Namespace) -> int:
    if args.list_scenarios:
        return list_scenarios()
    from wva.sim.demo import main as demo_main

    return demo_main(args)


def list_scenarios() -> int:
    """One line per built-in scenario: name, length and speed, and what it shows."""
    from wva.sim.loadmodel import ScenarioError, describe_builtin_scenarios

    try:
        rows = describe_builtin_scenarios()
    except ScenarioError as exc:
        print(f"wva demo: {exc}", file=sys.stderr)
        return 2
    width = max(len(name) for name, _ in rows)
    for name, line in rows:
        print(f"{name:<{width}}  {line}")
    return 0
