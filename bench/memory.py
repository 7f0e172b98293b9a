"""Operator memory for N VAs, measured in a fresh process: ``python -m bench.memory --url URL --n N``.

One process runs every mode and N of the scale benchmark, and the allocator keeps what earlier modes
freed, so its RSS says little about what N VAs cost. This process holds exactly one operator state:
the batched collector, the inventory, the engine and the status writer for N VAs after a warm-up and
``--cycles`` cycles against the given Prometheus. It prints one JSON line: RSS after the imports
(``base_mb``), RSS while holding the state (``rss_mb``) and the peak.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys

from bench.run import measure_mode
from wva.gctuning import tune_gc


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Prometheus base URL")
    parser.add_argument("--n", type=int, required=True, help="number of VAs (the emulator must serve them)")
    parser.add_argument("--cycles", type=int, default=3)
    args = parser.parse_args(argv)
    tune_gc()  # as `wva run` does
    base = rss_mb()
    _result, state = asyncio.run(measure_mode("v2-batched", args.n, args.url, args.cycles))
    gc.collect()
    held = rss_mb()
    del state
    print(json.dumps({"n": args.n, "base_mb": base, "rss_mb": held, "peak_rss_mb": peak_rss_mb()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
