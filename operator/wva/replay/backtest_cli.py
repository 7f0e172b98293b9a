"""``wva backtest``: read a model's recorded signals from Prometheus, replay the engine on them, report.

Every user error (a bad range or duration, an unreadable or invalid model file, an unreachable
Prometheus, a range with no samples, an output folder that cannot be written) ends the command
with one line on stderr, ``wva backtest: error: ...``, and exit code 2. Heavy imports wait until
the command runs, so ``wva --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from wva.replay.backtest import BacktestResult
    from wva.replay.config import ModelFile
    from wva.replay.history import SignalHistory

__all__ = ["BacktestError", "ProgressBar", "add_backtest_arguments", "run_backtest"]

PROG = "wva backtest"
MAX_STEPS = 1_000_000  # about 35 days at a 3 s step; more would hold too much in memory at once
QUERY_TIMEOUT = 60.0


class BacktestError(Exception):
    """A user error: printed as one line, exit code 2."""


def add_backtest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Replay wva's decision engine over a model's recorded KV-cache and queue history in Prometheus, "
        "with simulated replicas, and report replica-hours, cost, scale events and time saturated. "
        "Give two --config files to compare two configurations over the same history (docs/backtest.md)."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", metavar="URL", help="Prometheus base URL")
    source.add_argument("--prometheus-data", metavar="DIR",
                        help="a saved Prometheus data folder (wva demo keeps one), served locally while this runs")
    parser.add_argument("--from", dest="start", required=True, metavar="T1",
                        help="start: RFC 3339 (2026-01-05T10:00:00Z), Unix seconds, now or now-6h")
    parser.add_argument("--to", dest="end", required=True, metavar="T2", help="end, in the same forms as --from")
    parser.add_argument("--step", default="30s", help="the engine's interval to replay at (default 30s)")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="model file (model, namespace, thresholds, variants); give it once, or twice to compare")
    parser.add_argument("--startup-delay", default="0s", metavar="DURATION",
                        help="how long a new replica takes to become ready (default 0s: ready at the next step)")
    parser.add_argument("--output", default="backtest-output", metavar="DIR",
                        help="folder for timeline.csv, backtest.json and backtest.png (default backtest-output)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar on stderr (default: when stderr is a terminal)")
    parser.add_argument("--insecure-skip-tls-verify", action="store_true",
                        help="do not verify Prometheus' TLS certificate (verification is on by default)")


class ProgressBar:
    """``[#####-----] 3/10 chunks`` redrawn in place on a terminal; a newline when done."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width

    def __call__(self, done: int, total: int) -> None:
        filled = self.width * done // total if total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{PROG}: reading Prometheus [{bar}] {done}/{total} chunks")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def run_backtest(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        _run(args, out, err)
    except BacktestError as exc:
        err.write(f"{PROG}: error: {_one_line(str(exc))}\n")
        return 2
    except KeyboardInterrupt:
        err.write(f"\n{PROG}: interrupted\n")
        return 130
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    from wva.replay.backtest import replay

    models = _models(args.config)
    start, end, step, startup = _times(args)
    show = args.progress if args.progress is not None else err.isatty()
    progress = ProgressBar(err) if show else None
    if args.prometheus_data:
        from wva.replay.saved_data import SavedDataError, serve_saved_data

        try:
            with serve_saved_data(args.prometheus_data) as url:
                history = _history(url, False, models[0], start, end, step, progress)
        except SavedDataError as exc:
            raise BacktestError(str(exc)) from None
    else:
        history = _history(args.prometheus, args.insecure_skip_tls_verify, models[0], start, end, step, progress)
    results = [replay(history, m, startup_delay=startup) for m in models]
    out.write(_text(results) + "\n")
    for line in _write(Path(args.output), results):
        out.write(line + "\n")


def _models(paths: Sequence[str]) -> list[ModelFile]:
    from wva.replay.config import ModelFileError, load_model_file

    if len(paths) not in (1, 2):
        raise BacktestError(f"give --config once, or twice to compare two configurations (got {len(paths)})")
    try:
        models = [load_model_file(p) for p in paths]
    except ModelFileError as exc:
        raise BacktestError(str(exc)) from None
    if len(models) == 2 and (models[0].model, models[0].namespace) != (models[1].model, models[1].namespace):
        a, b = models
        raise BacktestError(
            f"both --config files must name the same model and namespace: {a.path} has {a.model} in {a.namespace}, "
            f"{b.path} has {b.model} in {b.namespace}"
        )
    return models


def _times(args: argparse.Namespace) -> tuple[float, float, float, float]:
    """--from, --to, --step and --startup-delay in seconds, checked."""
    from wva.durations import parse_duration
    from wva.replay.history import parse_time
    from wva.replay.report import iso

    now = time.time()
    try:
        start = parse_time(args.start, now)
        end = parse_time(args.end, now)
    except ValueError as exc:
        raise BacktestError(f"bad range: {exc}") from None
    if start >= end:
        raise BacktestError(f"bad range: --from {iso(start)} is not before --to {iso(end)}")
    try:
        step = parse_duration(args.step)
        startup = parse_duration(args.startup_delay)
    except ValueError as exc:
        raise BacktestError(str(exc)) from None
    if step <= 0:
        raise BacktestError(f"--step must be longer than 0s, got {args.step!r}")
    if (end - start) / step > MAX_STEPS:
        raise BacktestError(f"the range holds more than {MAX_STEPS} steps of {args.step}: use a longer --step")
    return start, end, step, startup


def _client(url: str, insecure: bool) -> Any:
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    try:
        return PrometheusConnect(url=url, disable_ssl=insecure, retry=Retry(total=0, raise_on_status=False),
                                 timeout=QUERY_TIMEOUT)
    except Exception as exc:  # the library validates the URL in its constructor
        raise BacktestError(f"bad --prometheus {url!r}: {exc}") from None


def _history(url: str, insecure: bool, model: ModelFile, start: float, end: float, step: float,
             progress: Callable[[int, int], None] | None) -> SignalHistory:
    from wva.replay.history import HistoryError, fetch_history
    from wva.replay.report import iso

    client = _client(url, insecure)
    try:
        with warnings.catch_warnings():
            if insecure:  # asked for: urllib3's per-request warning would only repeat it
                warnings.simplefilter("ignore")
            history = fetch_history(client, model, start, end, step, progress=progress)
    except HistoryError as exc:
        raise BacktestError(f"{exc} (Prometheus at {_shown(url)})") from None
    if history.empty:
        raise BacktestError(
            f"no samples for model {model.model!r} in namespace {model.namespace!r} between {iso(start)} and "
            f"{iso(end)} in Prometheus at {_shown(url)}"
        )
    return history


def _shown(url: str) -> str:
    """The URL without a user name or password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _text(results: Sequence[BacktestResult]) -> str:
    from wva.replay.report import LABELS, comparison_table, header, timeline_table, totals_table

    parts = [header(results[0])]
    for index, result in enumerate(results):
        title = f"Config {LABELS[index]}: {result.source}" if len(results) > 1 else f"Config: {result.source}"
        parts.append(title)
        parts += [timeline_table(result, name) for name in result.variant_names]
        parts.append(totals_table(result))
    if len(results) == 2:
        parts.append(comparison_table(results[0], results[1]))
    return "\n\n".join(parts)


def _write(folder: Path, results: Sequence[BacktestResult]) -> list[str]:
    """Write the three files; the lines that say where they went (or why the chart was skipped)."""
    from wva.replay.report import write_csv, write_json, write_png

    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(folder / "timeline.csv", results)
        write_json(folder / "backtest.json", results)
        drawn = write_png(folder / "backtest.png", results)
    except OSError as exc:
        raise BacktestError(f"cannot write to {str(folder)!r}: {exc.strerror or exc}") from None
    lines = ["", f"wrote {folder / 'timeline.csv'}", f"wrote {folder / 'backtest.json'}"]
    if drawn:
        lines.append(f"wrote {folder / 'backtest.png'}")
    else:
        lines.append("no chart: matplotlib is not installed (pip install 'wva[plot]')")
    return lines
