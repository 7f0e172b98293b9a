"""``wva demo`` arguments and entry point (the demo itself lives in :mod:`wva.sim.demo`)."""

from __future__ import annotations

import argparse


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="default", help="built-in scenario name or a YAML file")
    parser.add_argument("--duration", type=float, default=None, help="scenario length in simulated seconds")
    parser.add_argument("--speed", type=float, default=10.0, help="time compression factor (default 10x)")
    parser.add_argument("--collector", choices=("v1", "v2"), default="v2")
    parser.add_argument("--no-ui", action="store_true", help="print JSON lines instead of the live view")
    parser.add_argument("--output", default="demo-output", help="folder for the summary chart and table")


def run_demo(args: argparse.Namespace) -> int:
    from wva.sim.demo import main as demo_main

    return demo_main(args)
