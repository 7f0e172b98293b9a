"""The demo's longer scenarios, each a real run (own module, so a test worker runs them beside the others)."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

import demo_doc
from test_demo import _finish, _start_demo
from wva.sim.report import LiveView


@pytest.mark.prometheus
@pytest.mark.slow
def test_default_demo_never_grows_a_variant_in_its_quiet_tail(tmp_path: Path) -> None:
    """The default scenario at its own speed with the real Prometheus: once the engine has started to
    scale down after the spike, no variant grows again (the flap the falling-load guard removes)."""
    code, out, err = _finish(_start_demo("--no-ui", "--output", str(tmp_path)), timeout=240.0)
    assert code == 0, err[-3000:]
    lines = [json.loads(line) for line in out.splitlines()]
    cycles = [c for c in lines if c["event"] == "cycle"]
    _check_against_the_walkthrough(lines[0], cycles, lines[-1])
    first_down = next(i for i, c in enumerate(cycles) if any(v["decision"] == "down" for v in c["variants"].values()))
    grown = [(c["t"], name, v["code"]) for c in cycles[first_down:] for name, v in c["variants"].items()
             if v["decision"] == "up"]
    assert grown == [], grown
    assert cycles[-1]["t"] >= 2300  # the whole tail ran
    held = {v["code"] for c in cycles[first_down:] for v in c["variants"].values()}
    assert "ScaleDownRedistributable" in held


def _check_against_the_walkthrough(start: dict[str, Any], cycles: list[dict[str, Any]], end: dict[str, Any]) -> None:
    """docs/demo.md's walkthrough of the default scenario and its JSON lines, held to this run."""
    doc = demo_doc.default_walkthrough()
    cheap, premium = "llama-8b-l4", "llama-8b-h100"
    changes = [(c["t"], name, v["current"], v["desired"]) for c in cycles for name, v in c["variants"].items()
               if v["decision"] in ("up", "down")]
    ups = [ch for ch in changes if ch[3] > ch[2]]
    downs = [ch for ch in changes if ch[3] < ch[2]]
    assert all(desired == current + 1 for _t, _n, current, desired in ups), ups
    assert all(desired == current - 1 for _t, _n, current, desired in downs), downs  # one per cycle
    # the cheap variant takes the scale-ups until it is full, then the next step goes to the premium one
    cheap_pods = [c["variants"][cheap]["pods"] for c in cycles]
    premium_pods = [c["variants"][premium]["pods"] for c in cycles]
    assert (cheap_pods[0], max(cheap_pods)) == (doc.cheap_start, doc.cheap_peak)
    # the premium step comes from stale peaks in Prometheus' real-minute window: most runs, not all
    assert premium_pods[0] == doc.premium_start and max(premium_pods) in (doc.premium_start, doc.premium_peak)
    assert abs(ups[0][0] - doc.first_up_t) <= 30, ups[0]
    cheap_full_at = next(c["t"] for c in cycles if c["variants"][cheap]["pods"] == doc.cheap_peak)
    assert all(t > cheap_full_at for t, name, _c, _d in ups if name == premium), ups
    # Prometheus' window holds them up; then down, the premium variant first
    assert abs(downs[0][0] - doc.first_down_t) <= 150, downs[0]
    premium_downs = [t for t, name, _c, _d in downs if name == premium]
    cheap_downs = [t for t, name, _c, _d in downs if name == cheap]
    assert cheap_downs and (not premium_downs or max(premium_downs) < min(cheap_downs)), downs
    if max(premium_pods) > doc.premium_start:
        assert premium_downs and (max(premium_pods), premium_pods[-1]) == doc.premium_down
    assert (max(cheap_pods), cheap_pods[-1]) == doc.cheap_down
    # the JSON lines carry what the doc says they carry
    assert set(start) == demo_doc.start_line_keys()
    assert set(end) == demo_doc.end_line_keys()
    example = demo_doc.cycle_example()
    assert set(cycles[0]) == set(example)
    example_variants = example["variants"]
    assert isinstance(example_variants, dict)
    for c in cycles:
        for name, v in c["variants"].items():
            assert set(v) == set(example_variants[name]), (c["t"], name)
    # and the live view prints decision lines like its example
    view = LiveView(start, io.StringIO(), keep=1000)
    for c in cycles:
        view.update(c)
    pattern = demo_doc.live_view_pattern()
    assert any(pattern.fullmatch(line) for line in view.recent), (pattern.pattern, view.recent[:3])


@pytest.mark.prometheus
@pytest.mark.slow
def test_scale_to_zero_scenario_goes_to_zero_and_the_gateway_queue_brings_it_back(tmp_path: Path) -> None:
    """Quiet for the retention window → every variant at 0 (ScaleToZeroIdle, then HoldAtZero); traffic
    returns while at zero → the cheap variant is back before the next cycle, by the EPP poller."""
    code, out, err = _finish(_start_demo("--scenario", "scale-to-zero", "--no-ui", "--output", str(tmp_path)),
                             timeout=240.0)
    assert code == 0, err[-3000:]
    assert "emulated gateway EPP" in err
    cycles = [c for c in map(json.loads, out.splitlines()) if c["event"] == "cycle"]
    zero = next(c for c in cycles if all(v["pods"] == 0 for v in c["variants"].values()))
    assert {v["code"] for v in zero["variants"].values()} == {"ScaleToZeroIdle"}
    assert 150 + 600 - 30 <= zero["t"] <= 150 + 600 + 90  # quiet from t=150, a 600 s retention
    assert all(sum(v["pods"] for v in c["variants"].values()) >= 1 for c in cycles if c["t"] < 150 + 600 - 30)
    held = [c for c in cycles if zero["t"] < c["t"] < 1500]
    assert held and all(v["code"] == "HoldAtZero" and v["pods"] == 0 for c in held for v in c["variants"].values())
    back = next(c for c in cycles if c["t"] > 1510)
    assert back["variants"]["llama-8b-l4"]["pods"] >= 1  # woken between two cycles, from the gateway's queue
    log = (tmp_path / "demo.log").read_text()
    assert "Scale from zero: scaled namespace=wva-demo model=demo/llama-3-8b deployment=llama-8b-l4" in log


@pytest.mark.prometheus
@pytest.mark.slow
def test_cold_start_scenario_waits_for_replicas_on_the_way_and_learns_their_start_time(tmp_path: Path) -> None:
    """New pods take 120 simulated seconds to load: after each +1 the model waits (HoldPendingReplicas)
    until the pod is Ready instead of adding one per cycle, and the records carry the learnt cold start."""
    code, out, err = _finish(_start_demo("--scenario", "cold-start", "--duration", "700", "--no-ui",
                                         "--output", str(tmp_path)), timeout=240.0)
    assert code == 0, err[-3000:]
    cycles = [c for c in map(json.loads, out.splitlines()) if c["event"] == "cycle"]
    cheap = [(c["t"], c["variants"]["llama-8b-l4"]) for c in cycles]
    ups = [t for t, v in cheap if v["code"].startswith("ScaleUp")]
    assert len(ups) >= 2
    for a, b in itertools.pairwise(ups):
        assert b - a >= 120, (a, b)  # never a second +1 while the first replica is still loading
        waited = [v["code"] for t, v in cheap if a < t < b]
        assert "HoldPendingReplicas" in waited, (a, b, waited)
    saved = json.loads((tmp_path / "decisions.json").read_text())["variantAutoscalings"]
    learnt = [v["coldStartSeconds"] for r in saved["wva-demo/llama-8b-l4"] for v in r["inputs"]["variants"]
              if v["name"] == "llama-8b-l4" and v["coldStartSeconds"] is not None]
    assert learnt and 5.0 <= learnt[-1] <= 9.0, learnt  # 120 s simulated = 6 real seconds, seen per cycle
