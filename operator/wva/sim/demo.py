"""The local demo (being built)."""

from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> int:
    print("wva demo: not available in this build yet")
    return 1
