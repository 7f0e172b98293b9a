"""``wva backtest`` without Prometheus: the replay on hand-built histories, the report and the CLI's errors.

The replay's figures are checked against the engine driven one step at a time by hand
(:func:`_by_hand`): the same decision function, the same simulated replicas, written out again
here, so a change in either shows up as a difference at the first step where they part.
"""

from __future__ import annotations

import csv
import importlib
import io
import itertools
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from backtest_model import PODS, model_file_text
from wva.cli import main
from wva.collector.types import ReplicaMetrics
from wva.decisions.decide import DEFAULT_STABILIZATION_WINDOW, GroupHistory, decide_group, next_history
from wva.replay import backtest_cli
from wva.replay.backtest import BacktestResult, ModelLoad, model_load, replay, spread_load
from wva.replay.config import ModelFile, parse_model_file
from wva.replay.history import PodSample, SignalHistory
from wva.replay.report import (
    CSV_COLUMNS,
    backtest_dict,
    comparison_dict,
    comparison_table,
    timeline_table,
    totals_table,
    write_csv,
    write_json,
    write_png,
)

MODEL = "acme/llama-8b"
NS = "prod"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STEP = 30.0

# the replays here scale down as soon as the rules allow (no stabilisation window); the window and
# the pending-replica guard have tests of their own below
MODEL_FILE = model_file_text(MODEL, NS, "  scaleDownStabilizationWindow: 0s\n")

Load = tuple[float | None, float | None] | None  # per recorded pod: (kv, queue); None: no pod reported

LOW: Load = (0.2, 0.0)
HIGH: Load = (0.9, 6.0)


def model_file(text: str = MODEL_FILE, where: str = "a.yaml") -> ModelFile:
    return parse_model_file(text, where)


def history(loads: Sequence[Load], pods: Sequence[str] = PODS, queries: int = 2) -> SignalHistory:
    steps = [T0 + i * STEP for i in range(len(loads))]
    samples = [{} if load is None else {p: PodSample(*load) for p in pods} for load in loads]
    return SignalHistory(MODEL, NS, steps, samples, queries)


def curve() -> list[Load]:
    """Quiet, a burst, quiet again, then a gap with no data."""
    return [LOW] * 10 + [HIGH] * 30 + [LOW] * 15 + [None] * 5


# --- the engine driven by hand -------------------------------------------------------------------------
def _by_hand(hist: SignalHistory, model: ModelFile, delay: float) -> dict[str, Any]:
    """Every step's (replicas, ready, target, code) per variant, and the totals, from decide_group directly."""
    specs = sorted(model.variants, key=lambda v: v.name)
    ready = {v.name: v.initial_replicas for v in specs}
    pending: dict[str, list[float]] = {v.name: [] for v in specs}
    last = {v.name: 0 for v in specs}
    hours = {v.name: 0.0 for v in specs}
    ups = {v.name: 0 for v in specs}
    downs = {v.name: 0 for v in specs}
    steps: list[dict[str, tuple[int, int, int, str]]] = []
    saturated = 0.0
    step = hist.steps[1] - hist.steps[0]
    cfg = model.config
    past: GroupHistory | None = None
    for t, samples in zip(hist.steps, hist.samples, strict=True):
        for name in ready:
            ready[name] += sum(1 for at in pending[name] if at <= t)
            pending[name] = [at for at in pending[name] if at > t]
        total_ready = sum(ready.values())
        kvs = [s.kv for s in samples.values() if s.kv is not None]
        queues = [s.queue for s in samples.values() if s.queue is not None]
        metrics = None
        if (kvs or queues) and total_ready:
            kv = min(1.0, sum(kvs) / total_ready) if kvs else None
            queue = round(sum(queues) / total_ready) if queues else None
            metrics = [
                ReplicaMetrics(f"{v.deployment}-{i}", kv or 0.0, queue or 0, v.name, NS, MODEL, cost=v.cost,
                               kv_known=kv is not None, queue_known=queue is not None)
                for v in specs for i in range(ready[v.name])
            ]
            if (kv or 0.0) >= cfg.kv_cache_threshold or (queue or 0) >= cfg.queue_length_threshold:
                saturated += step
        inputs = [v.input(ready[v.name] + len(pending[v.name]), last[v.name], ready=ready[v.name]) for v in specs]
        decision = decide_group(MODEL, NS, inputs, metrics, cfg, now=t, history=past,
                                default_stabilization_window=DEFAULT_STABILIZATION_WINDOW)
        past = next_history(past, decision.record)
        row = {}
        for v in specs:
            outcome = decision.outcome(v.name)
            current = ready[v.name] + len(pending[v.name])
            row[v.name] = (current, ready[v.name], outcome.target, outcome.code)
            hours[v.name] += current * step / 3600.0
            before = last[v.name] or current
            ups[v.name] += outcome.target > before
            downs[v.name] += outcome.target < before
            last[v.name] = outcome.target
            if outcome.target > current:
                pending[v.name] += [t + delay] * (outcome.target - current)
            drop = current - outcome.target
            while drop > 0 and pending[v.name]:
                pending[v.name].pop()
                drop -= 1
            ready[v.name] -= max(0, drop)
        steps.append(row)
    return {"steps": steps, "hours": hours, "ups": ups, "downs": downs, "saturated": saturated,
            "cost": {v.name: hours[v.name] * v.cost for v in specs}}


@pytest.mark.parametrize("delay", [0.0, 30.0, 90.0, 125.0])
def test_replay_equals_the_engine_driven_by_hand(delay: float) -> None:
    hist, model = history(curve()), model_file()
    result = replay(hist, model, startup_delay=delay)
    expected = _by_hand(hist, model, delay)
    assert len(result.steps) == len(expected["steps"])
    for step, want in zip(result.steps, expected["steps"], strict=True):
        got = {v.variant: (v.replicas, v.ready, v.target, v.code) for v in step.variants}
        assert got == want, step.time
    for t in result.totals:
        assert t.replica_hours == pytest.approx(expected["hours"][t.variant])
        assert t.cost == pytest.approx(expected["cost"][t.variant])
        assert (t.scale_ups, t.scale_downs) == (expected["ups"][t.variant], expected["downs"][t.variant])
    assert result.saturated_seconds == pytest.approx(expected["saturated"])
    assert result.unknown_seconds == 5 * STEP


def test_scale_up_in_the_burst_and_down_after_it() -> None:
    result = replay(history(curve()), model_file())
    cheap = [v.replicas for v in result.series("cheap")]
    assert cheap[:11] == [1] * 11
    assert max(cheap[10:40]) == 4 and cheap[39] == 4  # three +1 steps, one per cycle, while the burst lasts
    assert cheap[54] == 1  # back down, one -1 per cycle, once the burst is over
    ups = [e for e in result.events if e.to_replicas > e.from_replicas]
    downs = [e for e in result.events if e.to_replicas < e.from_replicas]
    assert [e.time for e in ups] == [T0 + 10 * STEP, T0 + 11 * STEP, T0 + 12 * STEP]
    assert all(T0 + 40 * STEP <= e.time < T0 + 55 * STEP for e in downs) and len(downs) == 3
    assert ups[0].code == "ScaleUpKVAndQueueSpareLow" and ups[0].message.startswith("1→2: ")
    assert downs[0].code == "ScaleDownRedistributable"
    total = result.total("cheap")
    assert (total.scale_ups, total.scale_downs, total.min_replicas, total.max_replicas) == (3, 3, 1, 4)
    assert total.replica_hours == pytest.approx(sum(cheap) * STEP / 3600)
    assert total.cost == pytest.approx(total.replica_hours * 5)
    assert result.total("premium").events == 0
    assert result.saturated_seconds == STEP  # the first burst step, until the +1 lands


def test_min_and_max_are_honoured() -> None:
    text = MODEL_FILE.replace("minReplicas: 1\n    maxReplicas: 4\n    initialReplicas: 1",
                              "minReplicas: 2\n    maxReplicas: 3\n    initialReplicas: 2")
    model = model_file(text)
    result = replay(history([(1.0, 40.0)] * 20 + [(0.0, 0.0)] * 30), model)
    for spec in model.variants:
        targets = [v.target for v in result.series(spec.name)]
        assert max(targets) == spec.max_replicas
        assert min(targets) >= spec.min_replicas
        assert result.series(spec.name)[-1].replicas == max(1, spec.min_replicas)
    codes = {v.code for s in result.steps for v in s.variants}
    assert {"AtMaxReplicas", "AtMinReplicas"} <= codes
    assert result.saturated_seconds == 20 * STEP  # 40 queued per pod stays saturating at full size


def test_pending_replicas_are_counted_but_do_not_report() -> None:
    """With a startup delay the ready count lags each +1 by exactly the delay; pending replicas never report.

    The model waits for replicas on the way (HoldPendingReplicas) instead of adding more each cycle,
    and a scale-down waits until they report (their load is unknown).
    """
    delay = 90.0
    loads = [LOW] * 4 + [HIGH] * 12 + [LOW] * 12
    result = replay(history(loads), model_file(), startup_delay=delay)
    cheap = result.series("cheap")
    ups = [e for e in result.events if e.variant == "cheap" and e.to_replicas > e.from_replicas]
    assert ups[0].time == T0 + 4 * STEP
    for i, step in enumerate(result.steps):
        added = sum(e.to_replicas - e.from_replicas for e in ups if e.time + delay <= step.time)
        if i < 16:  # during the burst nothing is removed: ready = initial + the +1s that are old enough
            assert cheap[i].ready == 1 + added, i
    # one +1, then the model waits for it: no second +1 until the first replica is ready
    assert ups[1].time - ups[0].time >= delay
    waiting = [v for v in cheap if v.replicas > v.ready]
    assert waiting and all(v.target == v.replicas for v in waiting)
    assert {v.code for v in waiting} <= {"HoldPendingReplicas", "HoldReplicasNotReporting", "HoldUnknownSignal",
                                         "AtMaxReplicas"}
    assert "HoldPendingReplicas" in {v.code for v in waiting}
    # no costlier replica while a cheap one is on its way: the premium +1 comes once cheap is at its maximum
    premium_up = next(e for e in result.events if e.variant == "premium" and e.to_replicas > e.from_replicas)
    at_max = next(s.time for s, v in zip(result.steps, cheap, strict=True) if v.target == 4)
    assert premium_up.time > at_max
    # a drop in load while replicas are still starting: no scale-down until they report
    quiet = replay(history([HIGH] + [LOW] * 10), model_file(), startup_delay=delay)
    steps = quiet.series("cheap")
    assert steps[1].replicas == 2 and steps[1].ready == 1 and steps[1].target == 2
    assert steps[1].code in ("HoldReplicasNotReporting", "HoldUnknownSignal")
    down = next(e for e in quiet.events if e.to_replicas < e.from_replicas)
    assert down.time >= T0 + delay


def test_stuck_pending_replicas_pass_the_step_to_the_next_variant() -> None:
    """A replica that never becomes ready (no GPU): after pendingStuckAfter the costlier variant takes the +1."""
    text = MODEL_FILE.replace("thresholds:\n", "thresholds:\n  pendingStuckAfter: 2m\n")
    result = replay(history([HIGH] * 12), model_file(text), startup_delay=3600.0)
    cheap, premium = result.series("cheap"), result.series("premium")
    assert cheap[1].replicas == 2 and cheap[1].ready == 1
    assert all(v.code == "HoldPendingReplicas" for v in cheap[1:5])  # 30..120 s: waiting
    first_premium = next(i for i, v in enumerate(premium) if v.target > v.replicas)
    assert first_premium == 5  # pending since step 1 (30 s): stuck at 150 s, 2 minutes later
    assert cheap[first_premium].code == "PendingReplicasStuck"
    assert premium[first_premium].code.startswith("ScaleUp")


def test_scale_down_waits_for_the_stabilization_window() -> None:
    """The default window (300 s, what wva applies with direct actuation): the -1 comes once the rules have
    asked for it for five minutes, then the next ones follow cycle by cycle."""
    text = MODEL_FILE.replace("thresholds:\n  scaleDownStabilizationWindow: 0s\n", "")
    loads = [HIGH] * 4 + [LOW] * 20
    result = replay(history(loads), model_file(text))
    downs = [e for e in result.events if e.to_replicas < e.from_replicas]
    first_low = T0 + 4 * STEP
    asked = next(s.time for s in result.steps if any(v.code == "HoldScaleDownStabilizing" for v in s.variants))
    assert asked >= first_low
    assert downs and downs[0].time - asked >= DEFAULT_STABILIZATION_WINDOW
    assert all(b.time - a.time == STEP for a, b in itertools.pairwise(downs))
    # without the window (the replays above), the first -1 comes at the first quiet step that allows it
    eager = replay(history(loads), model_file())
    eager_downs = [e for e in eager.events if e.to_replicas < e.from_replicas]
    assert eager_downs[0].time < downs[0].time


def test_unknown_steps_hold_and_are_not_zero_load() -> None:
    result = replay(history([HIGH, None, None, (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)]), model_file())
    gap = result.steps[1:3]
    assert all(not s.load.known and s.kv is None and s.queue is None and not s.saturated for s in gap)
    assert all(v.code == "HoldMetricsUnavailable" and v.target == v.replicas == 2 for s in gap
               for v in s.variants if v.variant == "cheap")
    assert result.unknown_seconds == 2 * STEP
    # a confirmed zero is a value: the extra replica goes once the pods say 0
    assert result.steps[3].load == ModelLoad(pods=2, kv=0.0, queue=0.0)
    assert result.series("cheap")[3].code == "ScaleDownRedistributable"


def test_one_missing_signal_is_unknown_not_zero() -> None:
    load = model_load({"a": PodSample(0.5, None), "b": PodSample(0.25, None), "c": PodSample(None, None)})
    assert load == ModelLoad(pods=2, kv=0.75, queue=None)
    assert spread_load(load, 2) == (0.375, None)
    assert spread_load(ModelLoad(3, 2.7, 7.0), 2) == (1.0, 4)  # KV capped at 1; round(3.5) == 4
    assert spread_load(ModelLoad(3, 2.7, 7.0), 0) == (None, None)
    result = replay(history([(0.9, None)] * 3), model_file())
    record_inputs = result.steps[0]
    assert record_inputs.queue is None and record_inputs.kv == pytest.approx(0.9)


def test_replay_is_deterministic() -> None:
    hist = history(curve())
    one = replay(hist, model_file(), startup_delay=60)
    two = replay(hist, model_file(), startup_delay=60)
    assert one == two
    assert json.dumps(backtest_dict([one])) == json.dumps(backtest_dict([two]))


def test_thresholds_override_and_shadow_is_ignored() -> None:
    text = MODEL_FILE + "shadow:\n  kvSpareTrigger: 0.3\n"
    model = model_file(text)
    assert model.config.shadow is not None
    result = replay(history(curve()), model)
    assert result.config.shadow is None
    assert result == replay(history(curve()), model_file())  # the shadow changes nothing
    strict = model.config.model_copy(update={"queue_spare_trigger": 0.0, "kv_spare_trigger": 0.0, "shadow": None})
    assert len(replay(history(curve()), model, config=strict).events) < len(result.events)


# --- the report -------------------------------------------------------------------------------------
def two_configs() -> tuple[BacktestResult, BacktestResult]:
    hist = history(curve())
    loose = MODEL_FILE.replace("thresholds:\n", "thresholds:\n  queueSpareTrigger: 1\n")
    return replay(hist, model_file(where="a.yaml")), replay(hist, model_file(loose, "b.yaml"))


def test_csv_has_one_row_per_step_variant_and_config(tmp_path: Path) -> None:
    a, b = two_configs()
    path = tmp_path / "timeline.csv"
    write_csv(path, [a, b])
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == 2 * 2 * len(a.steps)
    first = rows[0]
    assert first["config"] == "A" and first["time"] == "2026-01-01T00:00:00Z" and first["variant"] == "cheap"
    assert float(first["unix"]) == T0
    assert (first["replicas"], first["ready"], first["target"], first["recorded_pods"]) == ("1", "1", "1", "2")
    assert float(first["recorded_kv"]) == pytest.approx(0.4) and first["saturated"] == "false"
    b_rows = [r for r in rows if r["config"] == "B" and r["variant"] == "cheap"]
    assert [int(r["replicas"]) for r in b_rows] == [v.replicas for v in b.series("cheap")]
    gap = [r for r in rows if r["recorded_pods"] == "0"]
    assert len(gap) == 2 * 2 * 5 and all(r["kv_per_replica"] == "" and r["recorded_kv"] == "" for r in gap)


def test_json_holds_meta_timeline_events_and_totals(tmp_path: Path) -> None:
    a, b = two_configs()
    path = tmp_path / "backtest.json"
    write_json(path, [a, b])
    data = json.loads(path.read_text())
    meta = data["meta"]
    assert (meta["model"], meta["namespace"], meta["from"], meta["stepSeconds"]) == (
        MODEL, NS, "2026-01-01T00:00:00Z", STEP)
    assert (meta["steps"], meta["unknownSteps"], meta["prometheusQueries"]) == (len(curve()), 5, 2)
    config_a = data["configs"][0]
    assert config_a["label"] == "A" and config_a["file"] == "a.yaml"
    assert len(config_a["timeline"]) == len(a.steps)
    assert config_a["timeline"][11]["variants"]["cheap"] == {"replicas": 2, "ready": 2, "target": 3,
                                                            "code": "ScaleUpQueueSpareLow"}
    assert [(e["variant"], e["from"], e["to"]) for e in config_a["events"]] == [
        (e.variant, e.from_replicas, e.to_replicas) for e in a.events]
    totals = {t["variant"]: t for t in config_a["totals"]["variants"]}
    assert totals["cheap"]["replicaHours"] == a.total("cheap").replica_hours
    assert config_a["totals"]["saturatedSeconds"] == a.saturated_seconds
    assert data["comparison"]["cost"]["delta"] == pytest.approx(b.cost - a.cost)


def test_comparison_of_two_configs() -> None:
    a, b = two_configs()
    assert b.total("cheap").replica_hours < a.total("cheap").replica_hours  # fewer +1s with the looser trigger
    data = comparison_dict(a, b)
    cheap = next(r for r in data["variants"] if r["variant"] == "cheap")
    assert cheap["replicaHours"]["delta"] == pytest.approx(b.total("cheap").replica_hours
                                                           - a.total("cheap").replica_hours)
    events_a, events_b = a.total("cheap").events, b.total("cheap").events
    assert cheap["events"] == {"A": events_a, "B": events_b, "delta": events_b - events_a}
    table = comparison_table(a, b)
    lines = table.splitlines()
    assert lines[0] == "Comparison: A = a.yaml, B = b.yaml"
    cheap_row = next(line for line in lines if line.startswith("cheap"))
    hours_a, hours_b = a.total("cheap").replica_hours, b.total("cheap").replica_hours
    assert f"{hours_a:.2f}" in cheap_row and f"{hours_b:.2f}" in cheap_row and f"{hours_b - hours_a:+.2f}" in cheap_row
    assert lines[-1].startswith("Saturated: A ")
    assert "total" in table


def test_text_tables_are_compact() -> None:
    result = replay(history([LOW] * 500 + [HIGH] * 40 + [LOW] * 500), model_file())
    table = timeline_table(result, "cheap", samples=8)
    rows = table.splitlines()[3:]
    events = [e for e in result.events if e.variant == "cheap"]
    assert len(rows) <= 8 + len(events)
    assert sum(1 for r in rows if r.startswith("*")) == len(events)
    totals = totals_table(result)
    assert totals.splitlines()[0] == "Totals:" and "cheap" in totals and "Saturated " in totals


def test_png_is_written_and_skipped_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two_configs()
    path = tmp_path / "backtest.png"
    assert write_png(path, [a, b])
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    real = importlib.import_module

    def no_matplotlib(name: str, package: str | None = None) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_matplotlib)
    assert not write_png(tmp_path / "none.png", [a])
    assert not (tmp_path / "none.png").exists()


# --- the command, with a fake Prometheus --------------------------------------------------------------
class FakePrometheus:
    """Answers the two range queries from a list of per-pod (kv, queue) loads at T0 + i * STEP."""

    def __init__(self, loads: Sequence[Load]) -> None:
        self.loads = loads
        self.calls = 0

    def custom_query_range(self, query: str, start_time: datetime, end_time: datetime, step: str,
                           params: dict[str, Any] | None = None) -> Any:
        self.calls += 1
        which = 0 if "kv_cache_usage_perc" in query else 1
        series = []
        for pod in PODS:
            values = [[T0 + i * STEP, str(load[which])] for i, load in enumerate(self.loads)
                      if load is not None and load[which] is not None
                      and start_time.timestamp() <= T0 + i * STEP <= end_time.timestamp()]
            series.append({"metric": {"pod": pod}, "values": values})
        return series


def write_model(tmp_path: Path, text: str = MODEL_FILE, name: str = "model.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["backtest", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_command_prints_tables_and_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePrometheus(curve())
    monkeypatch.setattr(backtest_cli, "_client", lambda url, insecure: fake)
    b = write_model(tmp_path, MODEL_FILE.replace("thresholds:\n", "thresholds:\n  queueSpareTrigger: 1\n"), "b.yaml")
    out_dir = tmp_path / "out"
    end = T0 + (len(curve()) - 1) * STEP
    code, out, err = run(["--prometheus", "http://prometheus.invalid", "--from", str(T0), "--to", str(end),
                          "--config", write_model(tmp_path), "--config", b, "--output", str(out_dir),
                          "--progress"], capsys)
    assert code == 0, err
    assert fake.calls == 2
    assert "reading Prometheus [" in err and "1/1 chunks" in err
    assert out.startswith(f"wva backtest: model {MODEL} in namespace {NS}, 2026-01-01T00:00:00Z to ")
    assert "Timeline of cheap" in out and "Totals:" in out and "Comparison: A = " in out
    for name in ("timeline.csv", "backtest.json", "backtest.png"):
        assert f"wrote {out_dir / name}" in out
        assert (out_dir / name).stat().st_size > 0


def error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("wva backtest: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"--from": "2026-01-02T00:00:00Z", "--to": "2026-01-01T00:00:00Z"}, "bad range: --from 2026-01-02"),
        ({"--from": "yesterday"}, "invalid time 'yesterday'"),
        ({"--step": "0s"}, "--step must be longer than 0s"),
        ({"--step": "fast"}, "invalid duration 'fast'"),
        ({"--startup-delay": "-5s"}, "must be a finite number of seconds >= 0"),
        ({"--config": "missing.yaml"}, "missing.yaml: cannot read"),
        ({"--config": "bad.yaml"}, "bad.yaml: line 3: unknown key 'treshholds' (did you mean 'thresholds'?)"),
        ({"--config": "broken.yaml"}, "broken.yaml: line 3: invalid YAML"),
        ({"--config": None}, "give --config once, or twice"),
        ({"--config": "model.yaml model.yaml model.yaml"}, "(got 3)"),
        ({"--config": "model.yaml other.yaml"}, "must name the same model and namespace"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    change: dict[str, str | None], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(backtest_cli, "_client", lambda url, insecure: FakePrometheus(curve()))
    write_model(tmp_path)
    write_model(tmp_path, MODEL_FILE.replace(f"namespace: {NS}", "namespace: staging"), "other.yaml")
    (tmp_path / "bad.yaml").write_text(f"model: {MODEL}\nnamespace: {NS}\ntreshholds: {{}}\n")
    (tmp_path / "broken.yaml").write_text("model: [\nnamespace: x\n")
    options: dict[str, str | None] = {"--prometheus": "http://prometheus.invalid", "--from": str(T0),
                                      "--to": str(T0 + 3600), "--config": "model.yaml", **change}
    argv: list[str] = []
    for key, value in options.items():
        for item in (value or "").split() if key == "--config" else [value or ""]:
            argv.append(f"{key}={item}")
    code, out, err = run(argv, capsys)
    assert code == 2
    assert says in error_line(err)
    assert "Traceback" not in err and out == ""


def test_empty_history_names_model_namespace_and_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backtest_cli, "_client", lambda url, insecure: FakePrometheus([None] * 10))
    code, _out, err = run(["--prometheus", "http://p", "--from", "2026-01-01T00:00:00Z", "--to",
                           "2026-01-01T01:00:00Z", "--config", write_model(tmp_path)], capsys)
    assert code == 2
    line = error_line(err)
    assert f"no samples for model '{MODEL}' in namespace '{NS}'" in line
    assert "between 2026-01-01T00:00:00Z and 2026-01-01T01:00:00Z" in line


def test_progress_bar_draws_in_place() -> None:
    stream = io.StringIO()
    bar = backtest_cli.ProgressBar(stream, width=10)
    bar(1, 2)
    bar(2, 2)
    assert stream.getvalue() == (
        "\rwva backtest: reading Prometheus [#####-----] 1/2 chunks"
        "\rwva backtest: reading Prometheus [##########] 2/2 chunks\n"
    )


def test_tls_is_verified_unless_skipped_on_request() -> None:
    assert backtest_cli._client("https://prometheus.example", insecure=False)._session.verify is True
    assert backtest_cli._client("https://prometheus.example", insecure=True)._session.verify is False
