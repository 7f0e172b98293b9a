"""Settings: every variable parsed once, bad values rejected with the variable and value named."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wva.durations import format_go_duration, parse_duration
from wva.settings import ActuationMode, MetricsSourceMode, Settings, SettingsError


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert s.prometheus_base_url is None
    assert s.prometheus_tls_insecure_skip_verify is False  # TLS verification on by default
    assert s.pod_namespace == "workload-variant-autoscaler-system"
    assert s.config_map_name == "workload-variant-autoscaler-variantautoscaling-config"
    assert s.saturation_config_map_name == "saturation-scaling-config"
    assert s.collector_v2 is False
    assert s.global_opt_interval == 30.0
    assert s.actuation_mode is ActuationMode.HPA
    assert s.metrics_source is MetricsSourceMode.PROMETHEUS
    assert s.watch_namespaces == ()
    assert s.leader_election is True
    assert s.batch_queries is True
    assert s.prometheus_query_method == "POST"


def test_full_environment_is_parsed(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("pem")
    s = Settings.from_env(
        {
            "PROMETHEUS_BASE_URL": "https://prom.monitoring.svc:9090/",
            "PROMETHEUS_CA_CERT_PATH": str(ca),
            "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY": "FALSE",
            "POD_NAMESPACE": "wva-system",
            "CONTROLLER_INSTANCE": "ci-1",
            "COLLECTOR_V2": "yes",
            "GLOBAL_OPT_INTERVAL": "1m30s",
            "LOG_LEVEL": "warn",
            "WATCH_NAMESPACE": "a, b",
            "ACTUATION_MODE": "Direct",
            "METRICS_SOURCE": "auto",
            "WVA_BATCH_QUERIES": "Off",
        }
    )
    assert s.prometheus_base_url == "https://prom.monitoring.svc:9090"
    assert s.prometheus_ca_cert_path == str(ca)
    assert s.pod_namespace == "wva-system"
    assert s.controller_instance == "ci-1"
    assert s.collector_v2 is True
    assert s.global_opt_interval == 90.0
    assert s.log_level == "WARNING"
    assert s.watch_namespaces == ("a", "b")
    assert s.actuation_mode is ActuationMode.DIRECT
    assert s.metrics_source is MetricsSourceMode.AUTO
    assert s.batch_queries is False


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("COLLECTOR_V2", "banana"),
        ("GLOBAL_OPT_INTERVAL", "soon"),
        ("GLOBAL_OPT_INTERVAL", "0s"),
        ("PROMETHEUS_BASE_URL", "prometheus:9090"),
        ("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", "maybe"),
        ("PROMETHEUS_CA_CERT_PATH", "/nonexistent/ca.crt"),
        ("LOG_LEVEL", "chatty"),
        ("ACTUATION_MODE", "yolo"),
        ("METRICS_SOURCE", "carrier-pigeon"),
        ("POD_NAMESPACE", "Not_A_Namespace"),
        ("CONTROLLER_INSTANCE", "has spaces"),
        ("WATCH_NAMESPACE", "ok,BAD!"),
        ("WVA_BATCH_QUERIES", "sometimes"),
        ("WVA_PROMETHEUS_QUERY_METHOD", "PUT"),
    ],
)
def test_bad_value_names_variable_and_value(var: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({var: value})
    message = str(info.value)
    assert var in message
    assert repr(value) in message


def test_all_problems_reported_together() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"COLLECTOR_V2": "banana", "LOG_LEVEL": "chatty"})
    assert len(info.value.problems) == 2


def test_client_cert_and_key_must_come_together(tmp_path: Path) -> None:
    cert = tmp_path / "tls.crt"
    cert.write_text("x")
    with pytest.raises(SettingsError, match="PROMETHEUS_CLIENT_KEY_PATH"):
        Settings.from_env({"PROMETHEUS_CLIENT_CERT_PATH": str(cert)})


def test_prometheus_required_when_asked() -> None:
    with pytest.raises(SettingsError, match="PROMETHEUS_BASE_URL is required"):
        Settings.from_env({}, require_prometheus=True)


def test_plain_http_is_allowed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = Settings.from_env({"PROMETHEUS_BASE_URL": "http://127.0.0.1:9090"})
    assert s.prometheus_is_plain_http
    assert "plain http" in caplog.text


def test_token_never_shows_in_repr_and_env_wins_over_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file-secret\n")
    s = Settings.from_env({"PROMETHEUS_TOKEN_PATH": str(token_file)})
    assert s.bearer_token() == "from-file-secret"
    s2 = Settings.from_env({"PROMETHEUS_TOKEN_PATH": str(token_file), "PROMETHEUS_BEARER_TOKEN": "env-secret"})
    assert s2.bearer_token() == "env-secret"
    assert "env-secret" not in repr(s2) and "env-secret" not in str(s2.model_dump())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("1m", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("2.5", 2.5), ("0", 0.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5", "5s garbage", "nan"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_go_duration() -> None:
    rendered = [format_go_duration(x) for x in (30.0, 60.0, 1.5, 0.25, 3723.5)]
    assert rendered == ["30s", "1m0s", "1.5s", "250ms", "1h2m3.5s"]
