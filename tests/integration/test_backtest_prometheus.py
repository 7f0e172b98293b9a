"""``wva backtest`` against the real Prometheus serving backfilled history.

A three-hour load curve (quiet, a burst, quiet) for two recorded pods of one model is written as
OpenMetrics text, turned into TSDB blocks with ``promtool tsdb create-blocks-from openmetrics``
and served by a fresh Prometheus. The history ends hours before now, so the blocks never overlap
the head. The command is run through ``wva.cli.main`` and judged from its files and exit codes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backtest_model import PODS, model_file_text
from wva.cli import main
from wva.sim.prometheus import LocalPrometheus, free_port

pytestmark = pytest.mark.prometheus

MODEL = "acme/llama-8b"
NS = "backtest"
OTHER_POD = "mistral-7b-7f9c8d6b4-qwert"  # another model in the same namespace: never part of the load
SAMPLE = 30  # seconds between recorded samples
HOUR = 3600

MODEL_FILE = model_file_text(MODEL, NS, "  kvCacheThreshold: 0.8\n  queueLengthThreshold: 5\n")


def load_at(offset: float) -> tuple[float, float]:
    """Per recorded pod: KV usage and waiting requests, ``offset`` seconds into the history."""
    if HOUR <= offset < 2 * HOUR:
        return 0.9, 6.0
    return 0.2, 0.0


def openmetrics(start: int, end: int) -> str:
    lines: list[str] = []
    for metric, index in (("vllm:kv_cache_usage_perc", 0), ("vllm:num_requests_waiting", 1)):
        lines += [f"# HELP {metric} recorded for the backtest test", f"# TYPE {metric} gauge"]
        for model, pod in [(MODEL, p) for p in PODS] + [("mistral/7b", OTHER_POD)]:
            labels = f'model_name="{model}",namespace="{NS}",pod="{pod}"'
            for t in range(start, end + 1, SAMPLE):
                lines.append(f"{metric}{{{labels}}} {load_at(t - start)[index]} {t}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Recorded:
    prometheus: LocalPrometheus
    start: int  # first and last recorded sample
    end: int


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs promtool (in the Debian prometheus package) to backfill history")
    end = (int(time.time()) // HOUR - 4) * HOUR  # whole hours, ending four hours ago: clear of the head
    start = end - 3 * HOUR
    source = tmp_path_factory.mktemp("openmetrics") / "history.om.txt"
    source.write_text(openmetrics(start, end))
    server = LocalPrometheus(targets=[], retention="3650d")
    try:
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(source),
                        str(server.data_dir)], check=True, capture_output=True, timeout=60)
        server.start()
        yield Recorded(server, start, end)
    finally:
        server.close()


def model_file(tmp_path: Path, text: str = MODEL_FILE, name: str = "model.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def backtest(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["backtest", "--no-progress", *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_range(recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str,
              *extra: str, tail: int = 600) -> tuple[dict[str, Any], str]:
    """Backtest the whole recorded range plus ``tail`` seconds with no data; the JSON and stdout."""
    code, stdout, err = backtest(
        capsys, "--prometheus", recorded.prometheus.url, "--from", str(recorded.start),
        "--to", str(recorded.end + tail), "--output", str(tmp_path / out), *extra,
    )
    assert code == 0, err
    return json.loads((tmp_path / out / "backtest.json").read_text()), stdout


def test_backtest_scales_up_in_the_burst_and_down_after(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, stdout = run_range(recorded, tmp_path, capsys, "one", "--config", model_file(tmp_path))
    meta = data["meta"]
    steps = (recorded.end + 600 - recorded.start) // 30 + 1
    assert (meta["model"], meta["namespace"], meta["steps"], meta["stepSeconds"]) == (MODEL, NS, steps, 30.0)
    assert meta["prometheusQueries"] == 2  # one chunk: one range query per signal
    config = data["configs"][0]
    timeline = config["timeline"]
    assert all(s["recordedPods"] == 2 for s in timeline[: steps - 20])  # the other model's pod is not counted
    burst = (recorded.start + HOUR, recorded.start + 2 * HOUR)
    ups = [e for e in config["events"] if e["to"] > e["from"]]
    downs = [e for e in config["events"] if e["to"] < e["from"]]
    assert ups and all(burst[0] <= e["time"] < burst[0] + 300 for e in ups)
    assert downs and all(burst[1] <= e["time"] < burst[1] + 600 for e in downs)
    assert [(e["variant"], e["from"], e["to"]) for e in ups] == [("cheap", 1, 2), ("cheap", 2, 3), ("cheap", 3, 4)]
    in_burst = [s for s in timeline if burst[0] + 300 <= s["time"] < burst[1]]
    assert all(s["variants"]["cheap"]["replicas"] == 4 for s in in_burst)
    assert timeline[-25]["variants"]["cheap"]["replicas"] == 1
    # after the last sample the [1m] window empties: unknown, held, never zero load
    tail = [s for s in timeline if s["time"] > recorded.end + 60]
    assert tail and all(s["recordedPods"] == 0 and s["kvPerReplica"] is None for s in tail)
    assert all(v["code"] == "HoldMetricsUnavailable" for s in tail for v in s["variants"].values())
    assert meta["unknownSteps"] == len(tail)
    totals = {t["variant"]: t for t in config["totals"]["variants"]}
    cheap_replicas = sum(s["variants"]["cheap"]["replicas"] for s in timeline)
    assert totals["cheap"]["replicaHours"] == pytest.approx(cheap_replicas * 30 / 3600)
    assert totals["cheap"]["cost"] == pytest.approx(totals["cheap"]["replicaHours"] * 5)
    assert (totals["cheap"]["scaleUps"], totals["cheap"]["scaleDowns"], totals["cheap"]["maxReplicas"]) == (3, 3, 4)
    assert totals["premium"]["replicaHours"] == pytest.approx(steps * 30 / 3600)
    assert config["totals"]["saturatedSeconds"] == 30.0  # the first burst step, until the +1 lands
    assert "Timeline of cheap" in stdout and "Totals:" in stdout
    png = tmp_path / "one" / "backtest.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "one" / "timeline.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * steps


def test_two_runs_give_identical_files(recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = model_file(tmp_path)
    run_range(recorded, tmp_path, capsys, "first", "--config", config, "--startup-delay", "90s")
    run_range(recorded, tmp_path, capsys, "second", "--config", config, "--startup-delay", "90s")
    for name in ("backtest.json", "timeline.csv"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


def test_two_configs_are_compared(recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loose = MODEL_FILE.replace("  queueLengthThreshold: 5\n", "  queueLengthThreshold: 5\n  queueSpareTrigger: 1\n")
    data, stdout = run_range(recorded, tmp_path, capsys, "ab", "--config", model_file(tmp_path),
                             "--config", model_file(tmp_path, loose, "loose.yaml"))
    a, b = data["configs"]
    assert (a["label"], b["label"]) == ("A", "B")
    assert data["meta"]["prometheusQueries"] == 2  # the history is read once for both
    comparison = data["comparison"]
    assert comparison["replicaHours"]["delta"] == pytest.approx(
        b["totals"]["replicaHours"] - a["totals"]["replicaHours"])
    assert comparison["replicaHours"]["delta"] < 0  # the looser queue trigger adds fewer replicas
    assert "Comparison: A = " in stdout and "loose.yaml" in stdout


def test_queries_stay_two_per_chunk(recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 1 s step over three hours is 10,801 steps: two chunks of at most 10,000, four queries."""
    data, _ = run_range(recorded, tmp_path, capsys, "fine", "--config", model_file(tmp_path), "--step", "1s",
                        tail=0)
    assert data["meta"]["steps"] == 3 * HOUR + 1
    assert data["meta"]["prometheusQueries"] == 4
    assert data["configs"][0]["timeline"][-1]["recordedPods"] == 2


def error_line(code: int, out: str, err: str) -> str:
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wva backtest: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_user_errors_are_one_line_with_exit_code_2(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, config = recorded.prometheus.url, model_file(tmp_path)
    span = ("--from", str(recorded.start), "--to", str(recorded.end))

    line = error_line(*backtest(capsys, "--prometheus", url, "--from", str(recorded.end), "--to",
                                str(recorded.start), "--config", config))
    assert "bad range" in line

    closed = f"http://127.0.0.1:{free_port()}"
    line = error_line(*backtest(capsys, "--prometheus", closed, *span, "--config", config))
    assert "Prometheus query failed" in line and closed in line

    other = model_file(tmp_path, MODEL_FILE.replace(MODEL, "nobody/none"), "other.yaml")
    line = error_line(*backtest(capsys, "--prometheus", url, *span, "--config", other))
    assert f"no samples for model 'nobody/none' in namespace '{NS}' between " in line

    unknown = model_file(tmp_path, MODEL_FILE.replace("    cost: 5\n", "    cost: 5\n    replicas: 3\n"), "bad.yaml")
    line = error_line(*backtest(capsys, "--prometheus", url, *span, "--config", unknown))
    assert "bad.yaml: line 11: unknown key 'variants[0].replicas'" in line
