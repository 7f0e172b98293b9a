"""Decision records at scale: memory of the rings and CPU of deciding and recording.

``python -m bench.decisions [--n 10000] [--ring 8]`` builds N VAs in N/2 model groups (two
variants, four pods each), decides every group ``ring`` times with fresh per-pod inputs (as the
collector makes them each cycle), keeps the records in a :class:`~wva.decisions.DecisionStore`,
and reports the memory the full rings retain (tracemalloc, after every other reference is gone),
the CPU per group decision, and the cost of serialising one record for ``/debug/decisions``.
Writes ``bench/results/<date>-decisions.json``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import time
import tracemalloc
from pathlib import Path

from wva.collector.types import ReplicaMetrics, ReplicaMetricsMetadata
from wva.decisions import DecisionStore, VariantInput, decide_group
from wva.saturation.config import SaturationScalingConfig

RESULTS = Path(__file__).resolve().parent / "results"
PODS = 4


def _group_inputs(g: int, cycle: int) -> tuple[list[VariantInput], list[ReplicaMetrics]]:
    meta = ReplicaMetricsMetadata(collected_at=1_000.0 + cycle, source="prometheus")
    variants, rows = [], []
    for v, cost in (("l4", 5.0), ("h100", 20.0)):
        name = f"m{g}-{v}"
        pods = tuple(f"{name}-7c9d-{p}" for p in range(PODS))
        variants.append(VariantInput(name, v.upper(), cost, PODS, PODS, 1, 8, pods))
        for p, pod in enumerate(pods):
            kv = 0.3 + 0.1 * ((g + p + cycle) % 5)
            rows.append(ReplicaMetrics(pod, kv, (g + p) % 3, name, "bench", f"model-{g}", v.upper(), cost, meta,
                                       sample_time=999.0 + cycle))
    return variants, rows


def measure(n: int, ring: int) -> dict[str, float | int]:
    groups = n // 2
    config = SaturationScalingConfig()
    # CPU first, untraced: deciding and recording every group once per cycle
    inputs = [[_group_inputs(g, c) for g in range(groups)] for c in range(ring)]
    store = DecisionStore(ring)
    cpu0 = time.process_time()
    for c in range(ring):
        for g in range(groups):
            variants, rows = inputs[c][g]
            store.add(decide_group(f"model-{g}", "bench", variants, rows, config, now=1_000.0 + c).record,
                      (("bench", v.name) for v in variants))
    cpu = time.process_time() - cpu0
    del inputs, store
    gc.collect()
    # memory: the per-pod inputs are built while traced too, since the rings keep them alive
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = DecisionStore(ring)
    for c in range(ring):
        for g in range(groups):
            variants, rows = _group_inputs(g, c)
            store.add(decide_group(f"model-{g}", "bench", variants, rows, config, now=1_000.0 + c).record,
                      (("bench", v.name) for v in variants))
    del variants, rows
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    latest = store.latest("bench", "m0-l4")
    assert latest is not None
    t0 = time.perf_counter()
    for _ in range(200):
        json.dumps(latest.to_dict())
    serialise = (time.perf_counter() - t0) / 200
    return {
        "n": n,
        "groups": groups,
        "ring_size": ring,
        "records_retained": groups * ring,
        "retained_mb": round(retained / 1e6, 1),
        "bytes_per_record": round(retained / (groups * ring)),
        "bytes_per_va": round(retained / n),
        "decide_and_record_us_per_group": round(cpu / (groups * ring) * 1e6, 1),
        "serialise_record_us": round(serialise * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decisions", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="VAs (two per model group)")
    parser.add_argument("--ring", type=int, default=4, help="records kept per VA (WVA_DECISION_RING_SIZE)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = measure(args.n, args.ring)
    result["date"] = datetime.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{result['date']}-decisions.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
