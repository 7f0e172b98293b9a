"""Cache configuration of collector v1, read from the main ConfigMap's ``PROMETHEUS_METRICS_CACHE_*`` keys.

Durations in the ConfigMap use Go's duration syntax (``30s``, ``1m``, ``1h30m``, ``500ms``, ``0``) because
that is what upstream's ConfigMaps contain; in Python they are floats of seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from wva.collector.types import FreshnessStatus
from wva.durations import format_go_duration, parse_go_duration

logger = logging.getLogger(__name__)

KEY_ENABLED = "PROMETHEUS_METRICS_CACHE_ENABLED"
KEY_TTL = "PROMETHEUS_METRICS_CACHE_TTL"
KEY_CLEANUP_INTERVAL = "PROMETHEUS_METRICS_CACHE_CLEANUP_INTERVAL"
KEY_FETCH_INTERVAL = "PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL"
KEY_FRESH_THRESHOLD = "PROMETHEUS_METRICS_CACHE_FRESH_THRESHOLD"
KEY_STALE_THRESHOLD = "PROMETHEUS_METRICS_CACHE_STALE_THRESHOLD"
KEY_UNAVAILABLE_THRESHOLD = "PROMETHEUS_METRICS_CACHE_UNAVAILABLE_THRESHOLD"

_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})


@dataclass(frozen=True, slots=True)
class FreshnessThresholds:
    """Age limits (seconds) that classify cached metrics as fresh, stale or unavailable.

    As upstream, ``stale`` is carried for configuration symmetry but not used by
    :meth:`determine_status`: anything younger than ``unavailable`` that is not fresh is stale.
    """

    fresh: float = 60.0
    stale: float = 120.0
    unavailable: float = 300.0

    def determine_status(self, age: float) -> FreshnessStatus:
        if age < self.fresh:
            return FreshnessStatus.FRESH
        if age < self.unavailable:
            return FreshnessStatus.STALE
        return FreshnessStatus.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """How collector v1 caches: TTL of entries, sweep period, background refresh period (0 = off)."""

    enabled: bool = True
    ttl: float = 30.0
    cleanup_interval: float = 60.0
    fetch_interval: float = 30.0
    freshness: FreshnessThresholds = field(default_factory=FreshnessThresholds)


# --- ConfigMap loading ------------------------------------------------------------------------------


def _read_duration(
    data: Mapping[str, str], key: str, default: float, warnings: list[str], *, allow_zero: bool
) -> float:
    raw = data.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse_go_duration(raw)
    except ValueError:
        value = None
    if value is None or value < 0 or (value == 0 and not allow_zero):
        expected = "a non-negative" if allow_zero else "a positive"
        warnings.append(
            f"invalid {key}={raw!r}: expected {expected} Go duration such as 30s or 1m; "
            f"using the default {format_go_duration(default)}"
        )
        return default
    return value


def _read_enabled(data: Mapping[str, str], warnings: list[str]) -> bool:
    raw = data.get(KEY_ENABLED)
    if raw is None or raw.strip() == "":
        return True
    word = raw.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word not in _FALSE_WORDS:
        # Upstream semantics: any value other than true/1/yes disables the cache. Say so loudly.
        warnings.append(
            f"unrecognised {KEY_ENABLED}={raw!r}: only true/1/yes enable the cache; the cache is disabled"
        )
    return False


def load_cache_config(data: Mapping[str, str]) -> tuple[CacheConfig, list[str]]:
    """Build a :class:`CacheConfig` from ConfigMap data; return it with a list of warnings.

    A missing or empty key keeps its default. A bad value keeps the default and produces a warning
    naming the key and the value (each warning is also logged).
    """
    defaults = CacheConfig()
    warnings: list[str] = []
    enabled = _read_enabled(data, warnings)
    ttl = _read_duration(data, KEY_TTL, defaults.ttl, warnings, allow_zero=False)
    cleanup = _read_duration(data, KEY_CLEANUP_INTERVAL, defaults.cleanup_interval, warnings, allow_zero=True)
    fetch = _read_duration(data, KEY_FETCH_INTERVAL, defaults.fetch_interval, warnings, allow_zero=True)
    d = defaults.freshness
    freshness = FreshnessThresholds(
        fresh=_read_duration(data, KEY_FRESH_THRESHOLD, d.fresh, warnings, allow_zero=True),
        stale=_read_duration(data, KEY_STALE_THRESHOLD, d.stale, warnings, allow_zero=True),
        unavailable=_read_duration(data, KEY_UNAVAILABLE_THRESHOLD, d.unavailable, warnings, allow_zero=True),
    )
    if not freshness.fresh <= freshness.stale <= freshness.unavailable:
        warnings.append(
            "freshness thresholds must satisfy fresh <= stale <= unavailable, got "
            f"{KEY_FRESH_THRESHOLD}={format_go_duration(freshness.fresh)}, "
            f"{KEY_STALE_THRESHOLD}={format_go_duration(freshness.stale)}, "
            f"{KEY_UNAVAILABLE_THRESHOLD}={format_go_duration(freshness.unavailable)}; using the defaults"
        )
        freshness = d
    for message in warnings:
        logger.warning("cache config: %s", message)
    config = replace(
        defaults,
        enabled=enabled,
        ttl=ttl,
        cleanup_interval=cleanup,
        fetch_interval=fetch,
        freshness=freshness,
    )
    return config, warnings
