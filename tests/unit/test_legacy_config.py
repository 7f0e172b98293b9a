"""Cache configuration of collector v1: freshness classification, Go durations, ConfigMap loading."""

from __future__ import annotations

import logging

import pytest

from wva.collector.legacy import (
    CacheConfig,
    FreshnessThresholds,
    format_go_duration,
    load_cache_config,
    parse_go_duration,
)
from wva.collector.types import FreshnessStatus

FRESH, STALE, UNAVAILABLE = FreshnessStatus.FRESH, FreshnessStatus.STALE, FreshnessStatus.UNAVAILABLE


def test_defaults_match_upstream() -> None:
    cfg = CacheConfig()
    assert (cfg.enabled, cfg.ttl, cfg.cleanup_interval, cfg.fetch_interval) == (True, 30.0, 60.0, 30.0)
    assert (cfg.freshness.fresh, cfg.freshness.stale, cfg.freshness.unavailable) == (60.0, 120.0, 300.0)


@pytest.mark.parametrize(
    ("age", "status"),
    [
        (0.0, FRESH),
        (30.0, FRESH),
        (59.999, FRESH),
        (60.0, STALE),  # boundary belongs to the next class
        (90.0, STALE),
        (150.0, STALE),  # beyond "stale" threshold but below "unavailable": the stale threshold is unused
        (299.999, STALE),
        (300.0, UNAVAILABLE),
        (360.0, UNAVAILABLE),
    ],
)
def test_determine_status_default_thresholds(age: float, status: FreshnessStatus) -> None:
    assert FreshnessThresholds().determine_status(age) is status


@pytest.mark.parametrize(
    ("thresholds", "cases"),
    [
        (FreshnessThresholds(10, 20, 30), [(5, FRESH), (15, STALE), (35, UNAVAILABLE)]),
        (FreshnessThresholds(0.001, 0.002, 0.005), [(0.0005, FRESH), (0.003, STALE), (0.01, UNAVAILABLE)]),
        (FreshnessThresholds(3600, 7200, 18000), [(1800, FRESH), (5400, STALE), (21600, UNAVAILABLE)]),
        (FreshnessThresholds(0, 0, 0), [(0, UNAVAILABLE), (1, UNAVAILABLE)]),
    ],
)
def test_determine_status_custom_thresholds(
    thresholds: FreshnessThresholds, cases: list[tuple[float, FreshnessStatus]]
) -> None:
    assert [thresholds.determine_status(age) for age, _ in cases] == [status for _, status in cases]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("30s", 30.0),
        ("1m", 60.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("2h45m30.5s", 9930.5),
        ("100us", 1e-4),
        ("100\u00b5s", 1e-4),
        ("10ns", 1e-8),
        ("+5s", 5.0),
        ("-5s", -5.0),
        (".5m", 30.0),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "1d", "s", "1m30", "abc", "1.2.3s", "--1s", "5 s", "-"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.25, "250ms"), (30, "30s"), (90, "1m30s"), (360, "6m0s"), (3723.5, "1h2m3.5s")],
)
def test_format_go_duration(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


def test_load_empty_gives_defaults_without_warnings() -> None:
    cfg, warnings = load_cache_config({})
    assert cfg == CacheConfig()
    assert warnings == []


def test_load_all_keys() -> None:
    cfg, warnings = load_cache_config(
        {
            "PROMETHEUS_METRICS_CACHE_ENABLED": "yes",
            "PROMETHEUS_METRICS_CACHE_TTL": "45s",
            "PROMETHEUS_METRICS_CACHE_CLEANUP_INTERVAL": "2m",
            "PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL": "0",
            "PROMETHEUS_METRICS_CACHE_FRESH_THRESHOLD": "30s",
            "PROMETHEUS_METRICS_CACHE_STALE_THRESHOLD": "1m30s",
            "PROMETHEUS_METRICS_CACHE_UNAVAILABLE_THRESHOLD": "1h",
            "UNRELATED": "ignored",
        }
    )
    assert warnings == []
    assert cfg == CacheConfig(
        enabled=True,
        ttl=45.0,
        cleanup_interval=120.0,
        fetch_interval=0.0,
        freshness=FreshnessThresholds(30.0, 90.0, 3600.0),
    )


@pytest.mark.parametrize(
    ("value", "enabled", "warns"),
    [("true", True, False), ("TRUE", True, False), ("1", True, False), ("yes", True, False),
     ("false", False, False), ("0", False, False), ("no", False, False),
     ("on", False, True), ("maybe", False, True), ("", True, False)],
)
def test_load_enabled(value: str, enabled: bool, warns: bool) -> None:
    cfg, warnings = load_cache_config({"PROMETHEUS_METRICS_CACHE_ENABLED": value})
    assert cfg.enabled is enabled
    assert bool(warnings) is warns
    if warns:
        assert "PROMETHEUS_METRICS_CACHE_ENABLED" in warnings[0] and repr(value) in warnings[0]


def test_bad_values_fall_back_to_defaults_with_warnings(caplog: pytest.LogCaptureFixture) -> None:
    data = {
        "PROMETHEUS_METRICS_CACHE_TTL": "thirty seconds",
        "PROMETHEUS_METRICS_CACHE_CLEANUP_INTERVAL": "-1m",
        "PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL": "15s",
        "PROMETHEUS_METRICS_CACHE_FRESH_THRESHOLD": "10",
    }
    with caplog.at_level(logging.WARNING, logger="wva.collector.legacy.config"):
        cfg, warnings = load_cache_config(data)
    defaults = CacheConfig()
    assert cfg.ttl == defaults.ttl
    assert cfg.cleanup_interval == defaults.cleanup_interval
    assert cfg.fetch_interval == 15.0  # the good value is kept
    assert cfg.freshness == defaults.freshness
    assert len(warnings) == 3
    for key, value in [("TTL", "thirty seconds"), ("CLEANUP_INTERVAL", "-1m"), ("FRESH_THRESHOLD", "10")]:
        (hit,) = [w for w in warnings if f"PROMETHEUS_METRICS_CACHE_{key}=" in w]
        assert repr(value) in hit
    logged = [r.getMessage() for r in caplog.records]
    assert all(any(w in line for line in logged) for w in warnings)


def test_zero_ttl_is_rejected_but_zero_fetch_interval_disables_fetching() -> None:
    cfg, warnings = load_cache_config(
        {"PROMETHEUS_METRICS_CACHE_TTL": "0", "PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL": "0s"}
    )
    assert cfg.ttl == 30.0 and cfg.fetch_interval == 0.0
    assert len(warnings) == 1 and "PROMETHEUS_METRICS_CACHE_TTL" in warnings[0]


def test_unordered_thresholds_revert_to_defaults() -> None:
    cfg, warnings = load_cache_config(
        {"PROMETHEUS_METRICS_CACHE_FRESH_THRESHOLD": "10m", "PROMETHEUS_METRICS_CACHE_UNAVAILABLE_THRESHOLD": "5m"}
    )
    assert cfg.freshness == FreshnessThresholds()
    assert len(warnings) == 1 and "fresh <= stale <= unavailable" in warnings[0]
