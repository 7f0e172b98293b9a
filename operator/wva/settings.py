"""Operator configuration from the environment, parsed and validated once at startup.

Every bad value is reported with the variable's name and the offending value; all problems are
collected so an operator sees them in one go. Secrets (the bearer token) never appear in reprs or
logs.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import string
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from wva.collector import collector_v2_enabled
from wva.durations import parse_duration
from wva.flags import flag_word
from wva.sharding import ORDINAL, ordinal_of, parse_shard_index, parse_shards

log = logging.getLogger(__name__)

DEFAULT_POD_NAMESPACE = "workload-variant-autoscaler-system"
DEFAULT_CONFIG_MAP_NAME = "workload-variant-autoscaler-variantautoscaling-config"
DEFAULT_SATURATION_CONFIG_MAP_NAME = "saturation-scaling-config"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ActuationMode(StrEnum):
    HPA = "hpa"  # publish gauges; an HPA or KEDA scales the Deployment
    DIRECT = "direct"  # also patch the Deployment's scale subresource


class MetricsSourceMode(StrEnum):
    PROMETHEUS = "prometheus"
    PODS = "pods"
    AUTO = "auto"


class EppMetricsSourceMode(StrEnum):
    """Where the scale-from-zero poller reads the gateway EPP's flow-control queue."""

    PROMETHEUS = "prometheus"
    PODS = "pods"  # the EPP pods' metrics endpoints, WVA_EPP_METRICS_URLS
    OFF = "off"


DEFAULT_EPP_QUEUE_METRIC = "inference_extension_flow_control_queue_size"
DEFAULT_EPP_MODEL_LABEL = "target_model_name"
DEFAULT_EPP_NAMESPACE_LABEL = "namespace"


class SettingsError(ValueError):
    """One or more environment variables are invalid; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))


class Settings(BaseModel):
    """All of wva's environment configuration. Durations are float seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prometheus_base_url: str | None = None
    prometheus_ca_cert_path: str | None = None
    prometheus_tls_insecure_skip_verify: bool = False
    prometheus_bearer_token: SecretStr | None = None
    prometheus_token_path: str | None = None
    prometheus_client_cert_path: str | None = None
    prometheus_client_key_path: str | None = None
    prometheus_server_name: str | None = None
    prometheus_query_timeout: float = 10.0
    prometheus_query_method: str = "POST"  # GET for proxies that authorise POST differently
    pod_namespace: str = DEFAULT_POD_NAMESPACE
    pod_name: str = Field(default_factory=socket.gethostname)
    config_map_name: str = DEFAULT_CONFIG_MAP_NAME
    saturation_config_map_name: str = DEFAULT_SATURATION_CONFIG_MAP_NAME
    controller_instance: str = ""
    collector_v2: bool = False
    global_opt_interval: float = 30.0
    log_level: str = "INFO"
    watch_namespaces: tuple[str, ...] = ()
    actuation_mode: ActuationMode = ActuationMode.HPA
    group_by_accelerator: bool = True  # False: variants of a model on different accelerators compete on cost
    batch_queries: bool = True  # collector v2: one combined query per namespace instead of 8 per model
    # batched v2: read wva's recorded series where they exist (a wva.collector.v2.recording.RecordingMode value)
    recording_rules: Literal["auto", "true", "false"] = "auto"
    metrics_source: MetricsSourceMode = MetricsSourceMode.PROMETHEUS
    leader_election: bool = True
    lease_name: str = "wva-leader"
    lease_duration: float = 15.0
    resync_interval: float = 300.0
    decision_ring_size: int = 4  # decision records kept per VariantAutoscaling (/debug/decisions)
    # sharding (WVA_SHARDS, WVA_SHARD_INDEX; --shards, --shard-index): this process owns shard_index of shards
    shards: int = 1
    shard_index: int = 0
    # the metrics port: HTTPS with bearer-token authn/authz (TokenReview + SubjectAccessReview), or plain HTTP
    metrics_secure: bool = True
    metrics_cert_path: str | None = None  # a folder with tls.crt and tls.key; None: a self-signed certificate
    kube_api_url: str | None = None
    # direct pod scraping (METRICS_SOURCE=pods|auto)
    pod_metrics_port: int = 8000
    pod_metrics_scheme: str = "http"
    pod_metrics_path: str = "/metrics"
    pod_metrics_url_template: str | None = None  # e.g. http://{ip}:{port}/metrics; also {namespace}, {pod}
    pod_metrics_token_path: str | None = None
    pod_metrics_ca_cert_path: str | None = None
    pod_metrics_tls_insecure_skip_verify: bool = False
    pod_scrape_timeout: float = 5.0
    pod_scrape_concurrency: int = 10
    # scale from zero: the gateway EPP's flow-control queue
    scale_from_zero_interval: float = 0.25
    epp_metrics_source: EppMetricsSourceMode = EppMetricsSourceMode.OFF
    epp_metrics_urls: tuple[tuple[str, str], ...] = ()  # (namespace or "", URL)
    epp_metrics_token_path: str | None = None
    epp_queue_metric: str = DEFAULT_EPP_QUEUE_METRIC
    epp_model_label: str = DEFAULT_EPP_MODEL_LABEL
    epp_namespace_label: str = DEFAULT_EPP_NAMESPACE_LABEL  # "" = the series carry no namespace
    # drain-aware scale-down (direct actuation): pod-deletion-cost annotations, optional wait for the victim
    deletion_cost: bool = True
    drain_timeout: float = 0.0  # 0: do not wait for the victim's in-flight requests to finish

    @property
    def prometheus_is_plain_http(self) -> bool:
        return bool(self.prometheus_base_url) and urlparse(self.prometheus_base_url or "").scheme == "http"

    def bearer_token(self) -> str | None:
        """The Prometheus bearer token: the env value wins, else the token file (read each call)."""
        if self.prometheus_bearer_token is not None:
            return self.prometheus_bearer_token.get_secret_value()
        if self.prometheus_token_path:
            with open(self.prometheus_token_path, encoding="utf-8") as fh:
                return fh.read().strip() or None
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, require_prometheus: bool = False) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raise SettingsError naming bad values."""
        env = os.environ if environ is None else environ
        problems: list[str] = []
        values: dict[str, Any] = {}

        def take(var: str, field: str, parse: Callable[[str], Any]) -> None:
            raw = env.get(var)
            if raw is None:
                return
            try:
                values[field] = parse(raw)
            except ValueError as exc:
                problems.append(f"{var}={raw!r}: {exc}")

        take("PROMETHEUS_BASE_URL", "prometheus_base_url", _parse_prometheus_url)
        take("PROMETHEUS_CA_CERT_PATH", "prometheus_ca_cert_path", _optional_readable_file)
        take("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", "prometheus_tls_insecure_skip_verify", parse_bool)
        take("PROMETHEUS_BEARER_TOKEN", "prometheus_bearer_token", _secret)
        take("PROMETHEUS_TOKEN_PATH", "prometheus_token_path", _optional_readable_file)
        take("PROMETHEUS_CLIENT_CERT_PATH", "prometheus_client_cert_path", _optional_readable_file)
        take("PROMETHEUS_CLIENT_KEY_PATH", "prometheus_client_key_path", _optional_readable_file)
        take("PROMETHEUS_SERVER_NAME", "prometheus_server_name", lambda v: v.strip() or None)
        take("WVA_PROMETHEUS_QUERY_TIMEOUT", "prometheus_query_timeout", _positive_duration)
        take("WVA_PROMETHEUS_QUERY_METHOD", "prometheus_query_method", _query_method)
        take("POD_NAMESPACE", "pod_namespace", _dns_label)
        take("POD_NAME", "pod_name", _non_empty)
        take("CONFIG_MAP_NAME", "config_map_name", _non_empty)
        take("SATURATION_CONFIG_MAP_NAME", "saturation_config_map_name", _non_empty)
        take("CONTROLLER_INSTANCE", "controller_instance", _label_value)
        take("COLLECTOR_V2", "collector_v2", _collector_flag)
        take("GLOBAL_OPT_INTERVAL", "global_opt_interval", _positive_duration)
        take("LOG_LEVEL", "log_level", parse_log_level)
        take("WATCH_NAMESPACE", "watch_namespaces", _namespaces)
        take("ACTUATION_MODE", "actuation_mode", lambda v: _enum(ActuationMode, v))
        take("WVA_GROUP_BY_ACCELERATOR", "group_by_accelerator", parse_bool)
        take("WVA_BATCH_QUERIES", "batch_queries", _batch_queries)
        take("WVA_RECORDING_RULES", "recording_rules", _recording_rules)
        take("METRICS_SOURCE", "metrics_source", lambda v: _enum(MetricsSourceMode, v))
        take("LEADER_ELECTION", "leader_election", parse_bool)
        take("LEADER_ELECTION_LEASE_NAME", "lease_name", _dns_label)
        take("LEADER_ELECTION_LEASE_DURATION", "lease_duration", _positive_duration)
        take("WVA_RESYNC_INTERVAL", "resync_interval", _positive_duration)
        take("WVA_DECISION_RING_SIZE", "decision_ring_size", _ring_size)
        take("WVA_SHARDS", "shards", parse_shards)
        take("WVA_SHARD_INDEX", "shard_index", parse_shard_index)
        take("WVA_METRICS_SECURE", "metrics_secure", metrics_secure_flag)
        take("WVA_METRICS_CERT_PATH", "metrics_cert_path", metrics_cert_dir)
        take("WVA_KUBE_API_URL", "kube_api_url", _parse_http_url)
        take("WVA_POD_METRICS_PORT", "pod_metrics_port", _port)
        take("WVA_POD_METRICS_SCHEME", "pod_metrics_scheme", _scheme)
        take("WVA_POD_METRICS_PATH", "pod_metrics_path", _url_path)
        take("WVA_POD_METRICS_URL_TEMPLATE", "pod_metrics_url_template", _url_template)
        take("WVA_POD_METRICS_TOKEN_PATH", "pod_metrics_token_path", lambda v: v.strip() or None)
        take("WVA_POD_METRICS_CA_CERT_PATH", "pod_metrics_ca_cert_path", _optional_readable_file)
        take("WVA_POD_METRICS_TLS_INSECURE_SKIP_VERIFY", "pod_metrics_tls_insecure_skip_verify", parse_bool)
        take("WVA_POD_SCRAPE_TIMEOUT", "pod_scrape_timeout", _positive_duration)
        take("WVA_POD_SCRAPE_CONCURRENCY", "pod_scrape_concurrency", _positive_int)
        take("WVA_SCALE_FROM_ZERO_INTERVAL", "scale_from_zero_interval", _scale_from_zero_interval)
        take("WVA_EPP_METRICS_SOURCE", "epp_metrics_source", lambda v: _enum(EppMetricsSourceMode, v))
        take("WVA_EPP_METRICS_URLS", "epp_metrics_urls", _epp_urls)
        take("WVA_EPP_METRICS_TOKEN_PATH", "epp_metrics_token_path", lambda v: v.strip() or None)
        take("WVA_EPP_QUEUE_METRIC", "epp_queue_metric", _metric_name)
        take("WVA_EPP_MODEL_LABEL", "epp_model_label", _label_name)
        take("WVA_EPP_NAMESPACE_LABEL", "epp_namespace_label", lambda v: _label_name(v) if v.strip() else "")
        take("WVA_DELETION_COST", "deletion_cost", _deletion_cost_flag)
        take("WVA_DRAIN_TIMEOUT", "drain_timeout", _drain_timeout)

        cert, key = values.get("prometheus_client_cert_path"), values.get("prometheus_client_key_path")
        if bool(cert) != bool(key):
            problems.append(
                "PROMETHEUS_CLIENT_CERT_PATH and PROMETHEUS_CLIENT_KEY_PATH must be set together "
                f"(got cert={cert!r}, key={key!r})"
            )
        problems.extend(_epp_problems(values))
        if "WVA_SHARDS" in env and "shards" not in values:
            values.pop("shard_index", None)  # WVA_SHARDS is wrong itself: nothing to check the index against
        elif "shard_index" in values:
            index, shard_problems = resolve_shard_index(
                values.get("shards", 1), values["shard_index"], values.get("pod_name") or socket.gethostname(),
                shards_name="WVA_SHARDS", index_name="WVA_SHARD_INDEX", default_shards="shards" not in values,
            )
            problems.extend(shard_problems)
            values["shard_index"] = index
        if values.get("metrics_cert_path") and values.get("metrics_secure") is False:
            problems.append("WVA_METRICS_CERT_PATH needs secure metrics (WVA_METRICS_SECURE is false)")
        if require_prometheus and not values.get("prometheus_base_url"):
            problems.append("PROMETHEUS_BASE_URL is required (e.g. https://prometheus.monitoring.svc:9090)")
        if problems:
            raise SettingsError(problems)
        settings = cls(**values)
        if settings.prometheus_is_plain_http:
            log.warning(
                "Prometheus URL uses plain http; traffic and any bearer token are unencrypted url=%s",
                settings.prometheus_base_url,
            )
        if settings.prometheus_tls_insecure_skip_verify:
            log.warning("TLS certificate verification for Prometheus is disabled")
        return settings


def parse_bool(value: str) -> bool:
    if not value.strip():
        return False
    enabled = flag_word(value)
    if enabled is not None:
        return enabled
    raise ValueError("not a boolean; use true/false (also 1/0, yes/no, on/off)")


def parse_log_level(value: str) -> str:
    level = value.strip().upper()
    level = {"WARN": "WARNING", "": "INFO"}.get(level, level)
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("unknown log level; use debug, info, warning or error")
    return level


def _strict_flag(parse: Callable[[str], bool], value: str) -> bool:
    # the caller's error names the variable and the value; keep only the reason here
    try:
        return parse(value)
    except ValueError:
        raise ValueError("not a boolean; use true/1/yes/on or false/0/no/off") from None


def _collector_flag(value: str) -> bool:
    return _strict_flag(collector_v2_enabled, value)


def _parse_prometheus_url(value: str) -> str | None:
    url = value.strip()
    if not url:
        return None
    return _parse_http_url(url)


def _parse_http_url(value: str) -> str:
    url = value.strip().rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http:// or https:// URL with a host")
    return url


def _optional_readable_file(value: str) -> str | None:
    path = value.strip()
    if not path:
        return None
    if not os.path.isfile(path):
        raise ValueError("no such file")
    if not os.access(path, os.R_OK):
        raise ValueError("file is not readable")
    return path


def _positive_duration(value: str) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def _port(value: str) -> int:
    port = _positive_int(value)
    if port > 65535:
        raise ValueError("must be a port number from 1 to 65535")
    return port


def _one_of(*choices: str) -> Callable[[str], str]:
    """A parser taking any of ``choices`` in any case, returned as spelled in ``choices``."""
    by_lower = {choice.lower(): choice for choice in choices}

    def parse(value: str) -> str:
        found = by_lower.get(value.strip().lower())
        if found is None:
            raise ValueError(f"must be {' or '.join(choices)}")
        return found

    return parse


_query_method = _one_of("GET", "POST")
_scheme = _one_of("http", "https")


def _deletion_cost_flag(value: str) -> bool:
    """``WVA_DELETION_COST``: unset or empty means on."""
    if not value.strip():
        return True
    return _strict_flag(parse_bool, value)


MAX_DRAIN_TIMEOUT = 600.0


def _drain_timeout(value: str) -> float:
    seconds = parse_duration(value)  # rejects negative, NaN and infinite values
    if seconds > MAX_DRAIN_TIMEOUT:
        raise ValueError(
            f"must be at most {MAX_DRAIN_TIMEOUT:.0f}s (the wait holds the model group's engine cycle); "
            "0 turns the wait off"
        )
    return seconds


def metrics_secure_flag(value: str) -> bool:
    """``WVA_METRICS_SECURE`` (and ``--metrics-secure``): unset or empty means on."""
    if not value.strip():
        return True
    return _strict_flag(parse_bool, value)


def metrics_cert_dir(value: str) -> str | None:
    """A folder holding ``tls.crt`` and ``tls.key`` (a mounted kubernetes.io/tls Secret); empty: none."""
    path = value.strip()
    if not path:
        return None
    if not os.path.isdir(path):
        raise ValueError("no such directory (it must hold tls.crt and tls.key)")
    for name in ("tls.crt", "tls.key"):
        file = os.path.join(path, name)
        if not os.path.isfile(file) or not os.access(file, os.R_OK):
            raise ValueError(f"{name} is missing or unreadable in it")
    return path


def resolve_shard_index(
    shards: int, index: int | str, pod_name: str, *, shards_name: str, index_name: str, default_shards: bool = False
) -> tuple[int, list[str]]:
    """The shard index ``index`` stands for (``ordinal``: the pod name's StatefulSet ordinal), and the
    problems with it; ``shards_name`` and ``index_name`` say where the values came from."""
    given = f"{shards_name} is {shards}" + (" by default" if default_shards else "")
    if index == ORDINAL:
        try:
            number = ordinal_of(pod_name)
        except ValueError:
            return 0, [f"{index_name}=ordinal needs POD_NAME to end in -<ordinal> (a StatefulSet pod's name, "
                       f"e.g. wva-2), got {pod_name!r}"]
        if number >= shards:
            return 0, [f"{index_name}=ordinal needs {shards_name} of at least {number + 1}: pod {pod_name!r} has "
                       f"ordinal {number}, shards are numbered from 0 and {given}"]
        return number, []
    assert isinstance(index, int)
    if index >= shards:
        return 0, [f"{index_name}={index} needs {shards_name} of at least {index + 1}: shards are numbered from 0 "
                   f"and {given}"]
    return index, []


def with_shard_flags(settings: Settings, shards: str | None, shard_index: str | None) -> Settings:
    """``settings`` with ``--shards`` / ``--shard-index`` applied over the environment's values.

    Raises SettingsError naming the flag and its value.
    """
    if shards is None and shard_index is None:
        return settings
    problems: list[str] = []
    count, index = settings.shards, settings.shard_index
    if shards is not None:
        try:
            count = parse_shards(shards)
        except ValueError as exc:
            problems.append(f"--shards={shards!r}: {exc}")
    raw_index: int | str = index
    if shard_index is not None:
        try:
            raw_index = parse_shard_index(shard_index)
        except ValueError as exc:
            problems.append(f"--shard-index={shard_index!r}: {exc}")
    if not problems:
        index, found = resolve_shard_index(
            count, raw_index, settings.pod_name,
            shards_name="--shards" if shards is not None else "WVA_SHARDS",
            index_name="--shard-index" if shard_index is not None else "WVA_SHARD_INDEX",
        )
        problems.extend(found)
    if problems:
        raise SettingsError(problems)
    return settings.model_copy(update={"shards": count, "shard_index": index})


def _batch_queries(value: str) -> bool:
    from wva.collector.v2.batching import batch_queries_enabled

    return _strict_flag(batch_queries_enabled, value)


def _recording_rules(value: str) -> str:
    from wva.collector.v2.recording import recording_mode

    try:
        return recording_mode(value).value
    except ValueError:  # the caller's error names the variable and the value
        raise ValueError("not a recording-rules mode; use auto, true/1/yes/on or false/0/no/off") from None


def _ring_size(value: str) -> int:
    size = _positive_int(value)
    if size > 1000:
        raise ValueError(f"must be at most 1000 (records per VariantAutoscaling), got {size}")
    return size


def _positive_int(value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError("must be a whole number") from None
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _url_path(value: str) -> str:
    path = value.strip()
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise ValueError("must be an absolute URL path such as /metrics")
    return path


_URL_TEMPLATE_FIELDS = frozenset({"namespace", "pod", "ip", "port"})


def _url_template(value: str) -> str | None:
    template = value.strip()
    if not template:
        return None
    try:
        fields = [(name, spec, conversion) for _text, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:  # an unmatched brace
        raise ValueError(f"placeholders must be {{namespace}}, {{pod}}, {{ip}} or {{port}} ({exc})") from None
    for name, spec, conversion in fields:
        # plain names only: an index, attribute, conversion or format spec ({port[0]}, {ip.x}, {ip:>999999})
        # would fail or blow up at every scrape instead of here
        if name not in _URL_TEMPLATE_FIELDS or spec or conversion:
            field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"placeholders must be {{namespace}}, {{pod}}, {{ip}} or {{port}}, got {field!r}")
    _parse_http_url(template.format(namespace="ns", pod="pod", ip="10.0.0.1", port=8000))
    return template


_METRIC_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MIN_SCALE_FROM_ZERO_INTERVAL = 0.01
_MAX_SCALE_FROM_ZERO_INTERVAL = 60.0


def _scale_from_zero_interval(value: str) -> float:
    seconds = parse_duration(value)
    if not _MIN_SCALE_FROM_ZERO_INTERVAL <= seconds <= _MAX_SCALE_FROM_ZERO_INTERVAL:
        raise ValueError(f"must be from 10ms to 1m (e.g. 250ms), got {seconds:g}s")
    return seconds


def _epp_urls(value: str) -> tuple[tuple[str, str], ...]:
    """``url[,url...]``; an entry ``namespace=url`` says which namespace that EPP's series belong to.

    A URL without a path gets ``/metrics``.
    """
    entries: dict[tuple[str, str], None] = {}
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        namespace = ""
        head, sep, rest = entry.partition("=")
        if sep and "://" not in head:
            namespace, entry = _dns_label(head), rest.strip()
        try:
            url = _parse_http_url(entry)
        except ValueError:
            message = f"{entry!r} is not an http:// or https:// URL with a host (entries: URL or namespace=URL)"
            raise ValueError(message) from None
        if urlparse(url).path in ("", "/"):
            url += "/metrics"
        entries[(namespace, url)] = None
    if not entries:
        raise ValueError("must list at least one URL")
    return tuple(entries)


def _metric_name(value: str) -> str:
    name = value.strip()
    if not _METRIC_NAME.match(name):
        raise ValueError("must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    return name


def _label_name(value: str) -> str:
    name = value.strip()
    if not _LABEL_NAME.match(name) or name.startswith("__"):
        raise ValueError("must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)")
    return name


def _epp_problems(values: Mapping[str, Any]) -> list[str]:
    """Cross-checks of the scale-from-zero settings (the EPP source needs somewhere to read)."""
    problems: list[str] = []
    mode = values.get("epp_metrics_source", EppMetricsSourceMode.OFF)
    urls = values.get("epp_metrics_urls", ())
    if mode is EppMetricsSourceMode.PODS and not urls:
        problems.append("WVA_EPP_METRICS_SOURCE=pods needs WVA_EPP_METRICS_URLS (the EPP pods' metrics URLs)")
    if mode is EppMetricsSourceMode.PROMETHEUS and not values.get("prometheus_base_url"):
        problems.append("WVA_EPP_METRICS_SOURCE=prometheus needs PROMETHEUS_BASE_URL")
    model_label = values.get("epp_model_label", DEFAULT_EPP_MODEL_LABEL)
    namespace_label = values.get("epp_namespace_label", DEFAULT_EPP_NAMESPACE_LABEL)
    if model_label == namespace_label:
        problems.append(f"WVA_EPP_MODEL_LABEL and WVA_EPP_NAMESPACE_LABEL must differ (both {model_label!r})")
    if not namespace_label and any(namespace for namespace, _url in urls):
        problems.append("WVA_EPP_METRICS_URLS entries with namespace= need WVA_EPP_NAMESPACE_LABEL (it is empty)")
    return problems


def _secret(value: str) -> SecretStr | None:
    return SecretStr(value.strip()) if value.strip() else None


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _dns_label(value: str) -> str:
    name = value.strip()
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise ValueError("must be a DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters)")
    return name


def _label_value(value: str) -> str:
    v = value.strip()
    if len(v) > 63 or not _LABEL_VALUE.match(v):
        raise ValueError("must be a valid Kubernetes label value (at most 63 characters of [A-Za-z0-9-_.])")
    return v


def _namespaces(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    for name in names:
        _dns_label(name)
    return names


def _enum(enum: type[StrEnum], value: str) -> StrEnum:
    try:
        return enum(value.strip().lower())
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise ValueError(f"must be one of {allowed}") from None
