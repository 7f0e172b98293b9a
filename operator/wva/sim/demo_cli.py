"""``wva demo`` arguments and entry point (the demo itself lives in :mod:`wva.sim.demo`)."""

from __future__ import annotations

import argparse


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", default="default",
        help="built-in scenario (default, spike, steady, scale-to-zero, cold-start) or a YAML file",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="scenario length in simulated seconds (default: the scenario's)"
    )
    parser.add_argument(
        "--speed", type=float, default=None,
        help="simulated seconds per real second (default: the scenario's, 20 for 'default')",
    )
    parser.add_argument("--collector", choices=("v1", "v2"), default="v2", help="metrics collector (default v2)")
    parser.add_argument(
        "--metrics-source", choices=("prometheus", "pods"), default=None,
        help="where the operator reads pod metrics (default: real Prometheus if its binary is found, else pods)",
    )
    parser.add_argument("--no-ui", action="store_true", help="print one JSON object per line instead of the live view")
    parser.add_argument("--output", default="demo-output", help="folder for the summary, chart and records")


def run_demo(args: argparse.Namespace) -> int:
    from wva.sim.demo import main as demo_main

    return demo_main(args)
