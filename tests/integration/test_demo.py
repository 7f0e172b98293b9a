"""``wva demo``: the whole autoscaler on the embedded local environment, judged from its JSON lines.

The end-to-end test runs the real command (a subprocess: embedded API, emulated vLLM pods, the
real Prometheus, kopf, collector, engine, direct actuation) on the ``spike`` scenario and checks what
the demo promises: the cheap variant scales up first, replicas come back down after the spike, no
decision exceeds ``maxReplicas`` and no pod count goes negative. The queueing model, the scenario
files and the report are checked directly, without the operator.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from wva.sim.loadmodel import (
    LoadModel,
    QueueModel,
    ScenarioError,
    VariantSpec,
    builtin_scenarios,
    load_scenario,
    offered_load,
    parse_scenario,
)
from wva.sim.report import LiveView, render_html, summarize, summary_table, write_outputs

CHEAP, PREMIUM = "llama-8b-l4", "llama-8b-h100"


def _start_demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "wva.cli", "demo", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 150.0) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def _check_spike_run(returncode: int, stdout: str, stderr: str, source: str) -> dict[str, Any]:
    """The must-show properties of the spike scenario, from the JSON lines of one run."""
    assert returncode == 0, stderr[-3000:]
    lines = [json.loads(line) for line in stdout.splitlines()]
    start, cycles, end = lines[0], lines[1:-1], lines[-1]
    assert start["event"] == "start" and end["event"] == "end"
    assert all(c["event"] == "cycle" for c in cycles)
    assert start["metrics_source"] == source and f"metrics source: {_SAYS[source]}" in stderr
    bounds = {name: (v["minReplicas"], v["maxReplicas"]) for name, v in start["variants"].items()}
    assert len(cycles) >= 12, f"only {len(cycles)} cycles"
    assert not [c["errors"] for c in cycles if c["errors"]]

    # no decision ever exceeds maxReplicas (nor goes below minReplicas); no count ever goes negative
    for c in cycles:
        for name, v in c["variants"].items():
            low, high = bounds[name]
            assert v["desired"] is not None, (c["t"], name)
            assert low <= v["desired"] <= high, (c["t"], name, v)
            assert v["pods"] >= 0 and v["current"] >= 0 and v["queue"] >= 0 and 0 <= v["kv"] <= 1

    # the cheap variant scales up first during the spike, and reaches its bound
    spike_start, spike_end = 60.0, 270.0
    ups = [(c["t"], name) for c in cycles for name, v in c["variants"].items() if v["decision"] == "up"]
    assert ups, "no scale-up at all"
    first_up_t, first_up_variant = ups[0]
    assert first_up_variant == CHEAP
    assert spike_start - 30 <= first_up_t <= spike_end
    cheap_pods = [c["variants"][CHEAP]["pods"] for c in cycles]
    assert max(cheap_pods) == bounds[CHEAP][1]
    premium_ups = [t for t, name in ups if name == PREMIUM]
    assert not premium_ups or premium_ups[0] > first_up_t

    # after the spike the replicas come back down (scale-down decisions, fewer pods at the end)
    peak = max(sum(v["pods"] for v in c["variants"].values()) for c in cycles)
    final = sum(v["pods"] for v in cycles[-1]["variants"].values())
    downs = [c["t"] for c in cycles for v in c["variants"].values() if v["decision"] == "down"]
    assert downs and min(downs) >= spike_end
    assert final < peak
    # direct actuation: the pods follow the decision of the same cycle
    for c in cycles:
        for v in c["variants"].values():
            assert v["pods"] == v["desired"]

    # the folder it names holds the records, the summary and a self-contained chart
    out = Path(end["output"])
    assert (out / "records.jsonl").read_text().count("\n") == len(cycles)
    chart = (out / "chart.html").read_text()
    assert "<svg" in chart and "http://" not in chart.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert end["summary"]["variants"][CHEAP]["peak"] == max(cheap_pods)
    assert (out / "summary.txt").read_text().startswith("Summary: scenario 'spike'")
    _check_explain_and_backtest(out, end, cycles, source)
    return {"cycles": cycles, "first_down": min(downs)}


def _check_explain_and_backtest(out: Path, end: dict[str, Any], cycles: list[dict[str, Any]], source: str) -> None:
    """The commands the demo prints at its end work on what it saved, and tell the story of its run."""
    import contextlib
    import io
    import shlex

    from wva.cli import main

    saved = json.loads((out / "decisions.json").read_text())["variantAutoscalings"]
    namespace = end["commands"][0].split("explain ", 1)[1].split("/", 1)[0]
    for c in cycles:
        for name, v in c["variants"].items():
            assert v["code"], (c["t"], name)
            assert v["record"] in {r["id"] for r in saved[f"{namespace}/{name}"]}, (c["t"], name)
    first_up = next(c for c in cycles if c["variants"][CHEAP]["decision"] == "up")
    assert first_up["variants"][CHEAP]["code"].startswith("ScaleUp")
    commands = {line.split("  ", 1)[0]: shlex.split(line.split("  ", 1)[1]) for line in end["commands"]}
    assert commands["Why did it scale?"][:2] == ["wva", "explain"]
    explain = [*commands["Why did it scale?"][1:], "--record", first_up["variants"][CHEAP]["record"]]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(explain) == 0
    assert f"Decision: {first_up['variants'][CHEAP]['code']}" in stdout.getvalue()
    if source != "prometheus":
        assert "What if?" not in commands  # nothing recorded to replay
        return
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(commands["What if?"][1:]) == 0
    text = stdout.getvalue()
    assert "Config A:" in text and "Config B:" in text and "Comparison: A = " in text
    assert (out / "backtest" / "backtest.png").read_bytes().startswith(b"\x89PNG")
    replayed = json.loads((out / "backtest" / "backtest.json").read_text())
    assert replayed["meta"]["prometheusQueries"] == 2  # the whole range in one range query per signal


_SAYS = {"prometheus": "real Prometheus", "pods": "pod scraping"}


# --- the whole demo -----------------------------------------------------------------------------
@pytest.mark.prometheus
@pytest.mark.slow
def test_spike_scenario_scales_cheap_first_respects_bounds_and_comes_back_down(tmp_path: Path) -> None:
    """Both metrics sources, run side by side: the real Prometheus (found here, so the default) and pod
    scraping (what a machine without the binary gets)."""
    with_prometheus = _start_demo("--scenario", "spike", "--speed", "30", "--no-ui", "--output", str(tmp_path / "p"))
    with_pods = _start_demo(
        "--scenario", "spike", "--speed", "30", "--duration", "900", "--metrics-source", "pods", "--no-ui",
        "--output", str(tmp_path / "pods"),
    )
    pods = _check_spike_run(*_finish(with_pods), source="pods")
    prom = _check_spike_run(*_finish(with_prometheus), source="prometheus")
    # pod scraping keeps its one-minute window on the simulated clock; Prometheus' window is a real
    # minute (60 s x speed 30 = 1800 simulated seconds), so its scale-down comes that much later
    # (both after the 300 simulated seconds of scale-down stabilisation the demo applies)
    assert pods["first_down"] < 270 + 300 + 180
    assert prom["first_down"] > 270 + 1200


def test_unknown_scenario_is_a_clear_error(tmp_path: Path) -> None:
    code, _out, err = _finish(_start_demo("--scenario", "no-such-scenario", "--no-ui", "--output", str(tmp_path)))
    assert code == 2
    assert "unknown scenario 'no-such-scenario'" in err and "spike" in err


# --- the queueing model and scenarios ----------------------------------------------------------------
def _variants() -> list[VariantSpec]:
    return [VariantSpec(CHEAP, "L4", 5.0, capacity=4.0), VariantSpec(PREMIUM, "H100", 20.0, capacity=10.0)]


def test_load_is_split_by_capacity_so_every_replica_runs_at_the_same_utilisation() -> None:
    model = LoadModel(_variants(), QueueModel(kv_per_rho=0.8, queue_per_overload=20))
    loads = model.pod_loads(21.0, {CHEAP: 1, PREMIUM: 1})  # capacity 14 -> rho 1.5
    assert loads[CHEAP].rho == pytest.approx(1.5) and loads[PREMIUM].rho == pytest.approx(1.5)
    assert loads[CHEAP].requests_per_second == pytest.approx(6.0)
    assert loads[PREMIUM].requests_per_second == pytest.approx(15.0)
    assert loads[CHEAP].kv_cache_usage == pytest.approx(0.99)  # 0.8 * 1.5 capped at kv_max
    assert loads[CHEAP].queue_length == 10  # (1.5 - 1) * 20
    light = model.pod_loads(7.0, {CHEAP: 1, PREMIUM: 1})  # rho 0.5
    assert light[CHEAP].kv_cache_usage == pytest.approx(0.4) and light[CHEAP].queue_length == 0
    # one more cheap replica lowers everyone's utilisation
    assert model.utilisation(21.0, {CHEAP: 2, PREMIUM: 1}) == pytest.approx(21.0 / 18.0)
    assert model.utilisation(5.0, {CHEAP: 0, PREMIUM: 0}) == math.inf
    assert model.pod_loads(5.0, {})[CHEAP].kv_cache_usage == pytest.approx(0.99)


def test_noise_is_bounded_and_reproducible() -> None:
    def run() -> list[float]:
        model = LoadModel(_variants(), QueueModel(noise=0.05, seed=7))
        return [model.pod_loads(7.0, {CHEAP: 1, PREMIUM: 1})[CHEAP].kv_cache_usage for _ in range(50)]

    first = run()
    assert first == run()
    assert all(abs(kv - 0.4) <= 0.05 + 1e-9 for kv in first) and len(set(first)) > 1


def test_offered_load_interpolates_between_points() -> None:
    points = [(0.0, 5.0), (60.0, 5.0), (120.0, 35.0), (120.0, 10.0)]
    assert offered_load(points, -5) == 5.0
    assert offered_load(points, 90.0) == pytest.approx(20.0)
    assert offered_load(points, 119.0) == pytest.approx(34.5)
    assert offered_load(points, 500.0) == 10.0
    assert offered_load([], 3.0) == 0.0


def test_builtin_scenarios_parse_and_fit_the_demo_story() -> None:
    assert {"default", "spike", "steady"} <= set(builtin_scenarios())
    for name in builtin_scenarios():
        s = load_scenario(name)
        cheap = min(s.variants, key=lambda v: v.cost)
        assert s.duration > 0 and s.speed > 0 and s.interval > 0
        assert cheap.name == CHEAP and cheap.initial_replicas <= cheap.max_replicas
    default = load_scenario("default")
    # about two minutes of real time by default
    assert 90 <= default.duration / default.speed <= 150
    # with Prometheus' one-minute window, the quiet tail must outlast a real minute to show scale-down
    last_drop = max(t for (t, load), (_, nxt) in zip(default.points, default.points[1:], strict=False) if nxt < load)
    assert (default.duration - last_drop) / default.speed > 60


def test_scenario_file_and_validation(tmp_path: Path) -> None:
    data = {
        "name": "mine", "duration": 300, "speed": 5, "load": [[0, 1], [100, 9]],
        "variants": [{"name": "a", "accelerator": "L4", "cost": 1, "capacity": 2, "maxReplicas": 3}],
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    s = load_scenario(str(path)).with_overrides(duration=120.0)
    assert (s.name, s.duration, s.speed, s.variant("a").max_replicas) == ("mine", 120.0, 5.0, 3)
    assert s.offered_load(50) == pytest.approx(5.0)
    bad = [
        ({**data, "load": [[10, 1], [5, 1]]}, "time order"),
        ({**data, "load": []}, "non-empty list"),
        ({**data, "variants": [{"name": "a", "accelerator": "L4", "capacity": 0}]}, r"capacity must be a number > 0"),
        ({**data, "variants": [{"name": "a", "accelerator": "L4", "capacity": 1, "replicas": 5, "maxReplicas": 2}]},
         "replicas must be"),
        ({**data, "variants": [{"name": "a", "accelerator": "L4", "capacity": 1}] * 2}, "unique"),
        ([1, 2], "mapping"),
    ]
    for raw, message in bad:
        with pytest.raises(ScenarioError, match=message):
            parse_scenario(raw)
    with pytest.raises(ScenarioError, match="--speed must be positive"):
        s.with_overrides(speed=-1.0)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(str(tmp_path / "missing.yaml"))


# --- the report -----------------------------------------------------------------------------------
def _meta() -> dict[str, Any]:
    return {
        "scenario": "t", "description": "d", "metrics_source": "prometheus", "collector": "v2",
        "speed": 10.0, "interval": 30.0, "duration": 90.0,
        "variants": {
            CHEAP: {"accelerator": "L4", "cost": 5.0, "capacity": 4.0, "minReplicas": 1, "maxReplicas": 4,
                    "replicas": 1},
            PREMIUM: {"accelerator": "H100", "cost": 20.0, "capacity": 10.0, "minReplicas": 1, "maxReplicas": 2,
                      "replicas": 1},
        },
    }


def _record(cycle: int, load: float, cheap: tuple[int, int, str], premium: tuple[int, int, str]) -> dict[str, Any]:
    def v(cur: int, des: int, dec: str) -> dict[str, Any]:
        return {"current": cur, "desired": des, "pods": des, "kv": 0.5, "queue": 0, "decision": dec, "reason": "r"}

    return {"event": "cycle", "cycle": cycle, "t": 30.0 * cycle, "elapsed": 3.0 * cycle, "progress": cycle / 3,
            "load": load, "rho": 0.5, "errors": [], "variants": {CHEAP: v(*cheap), PREMIUM: v(*premium)}}


RECORDS = [
    _record(1, 5.0, (1, 2, "up"), (1, 1, "hold")),
    _record(2, 20.0, (2, 3, "up"), (1, 1, "hold")),
    _record(3, 5.0, (3, 2, "down"), (1, 1, "hold")),
]


def test_summary_counts_decisions_and_peaks() -> None:
    summary = summarize(RECORDS, _meta())
    cheap = summary["variants"][CHEAP]
    assert (cheap["start"], cheap["peak"], cheap["final"], cheap["maxDesired"]) == (1, 3, 2, 3)
    assert (cheap["scaleUps"], cheap["scaleDowns"], cheap["firstScaleUpAt"]) == (2, 1, 30.0)
    assert summary["variants"][PREMIUM]["firstScaleUpAt"] is None
    assert summary["peakLoad"] == 20.0 and summary["cycles"] == 3
    table = summary_table(summary)
    assert CHEAP in table and "1st up at" in table and "30s" in table


def test_outputs_are_written_and_the_html_is_self_contained(tmp_path: Path) -> None:
    files = write_outputs(tmp_path, RECORDS, _meta())
    assert [json.loads(line)["cycle"] for line in (tmp_path / "records.jsonl").read_text().splitlines()] == [1, 2, 3]
    page = (tmp_path / "chart.html").read_text()
    assert page.count("<svg") == 4 and "<script" not in page and "src=" not in page
    assert files["png"] is None or files["png"].read_bytes().startswith(b"\x89PNG")
    assert render_html(RECORDS, _meta(), summarize(RECORDS, _meta())) == page


def test_live_view_without_a_terminal_prints_one_line_per_cycle() -> None:
    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    sink = Sink()
    view = LiveView(_meta(), sink)  # type: ignore[arg-type]
    for record in RECORDS:
        view.update(record)
    lines = sink.text.splitlines()
    assert len(lines) == 3 and f"{CHEAP}=1->2(up)" in lines[0] and f"{CHEAP}=3->2(down)" in lines[2]
    assert view.recent[-1].endswith(f"{CHEAP} 3 -> 2: r")
