"""Pod-scraping settings and the collector METRICS_SOURCE selects in the runtime."""

from __future__ import annotations

import pytest

from wva.collector.failover import FailoverCollector
from wva.collector.v2 import PodVAMapper, V2MetricsCollector
from wva.inventory import Inventory
from wva.runtime import _build_collector
from wva.settings import Settings, SettingsError

BASE = {"PROMETHEUS_BASE_URL": "http://127.0.0.1:9", "COLLECTOR_V2": "true"}


def test_pod_scraping_settings_parse_and_validate() -> None:
    settings = Settings.from_env(
        {
            "WVA_POD_METRICS_PORT": "9090",
            "WVA_POD_METRICS_SCHEME": "HTTPS",
            "WVA_POD_METRICS_PATH": "/vllm/metrics",
            "WVA_POD_SCRAPE_TIMEOUT": "2s",
            "WVA_POD_SCRAPE_CONCURRENCY": "4",
            "WVA_POD_METRICS_URL_TEMPLATE": "http://127.0.0.1:1234/pods/{namespace}/{pod}/metrics",
        }
    )
    assert (settings.pod_metrics_port, settings.pod_metrics_scheme, settings.pod_metrics_path) == (
        9090, "https", "/vllm/metrics"
    )
    assert (settings.pod_scrape_timeout, settings.pod_scrape_concurrency) == (2.0, 4)
    defaults = Settings.from_env({})
    assert (defaults.pod_metrics_port, defaults.pod_metrics_scheme, defaults.pod_metrics_path) == (
        8000, "http", "/metrics"
    )
    assert not defaults.pod_metrics_tls_insecure_skip_verify  # TLS verification on by default


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("WVA_POD_METRICS_PORT", "70000"),
        ("WVA_POD_METRICS_PORT", "http"),
        ("WVA_POD_METRICS_SCHEME", "ftp"),
        ("WVA_POD_METRICS_PATH", "metrics"),
        ("WVA_POD_SCRAPE_CONCURRENCY", "0"),
        ("WVA_POD_METRICS_URL_TEMPLATE", "http://{host}/metrics"),
    ],
)
def test_bad_pod_scraping_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({var: value})


@pytest.mark.parametrize(("mode", "expected"), [("pods", V2MetricsCollector), ("auto", FailoverCollector)])
def test_metrics_source_selects_the_collector(mode: str, expected: type) -> None:
    settings = Settings.from_env({**BASE, "METRICS_SOURCE": mode})
    mapper = PodVAMapper()
    collector = _build_collector(settings, object(), mapper, Inventory(mapper))
    assert isinstance(collector, expected)
    if isinstance(collector, FailoverCollector):
        assert collector.source_for("m", "ns") == "prometheus"
        assert isinstance(collector.fallback, V2MetricsCollector) and collector.fallback.source_name == "pods"
    else:
        assert isinstance(collector, V2MetricsCollector) and collector.source_name == "pods"


def test_prometheus_mode_builds_no_pod_scraping() -> None:
    settings = Settings.from_env({**BASE, "METRICS_SOURCE": "prometheus"})
    mapper = PodVAMapper()
    collector = _build_collector(settings, object(), mapper, Inventory(mapper))
    assert isinstance(collector, V2MetricsCollector) and collector.source_name == "prometheus"
