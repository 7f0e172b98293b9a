"""The scale-from-zero poller with fakes (under looptime: loop time is exact), and its settings."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Collection
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from wva.actuator.metrics import OperatorMetrics
from wva.collector.v2.epp import (
    EPP_QUEUE_SIZE,
    LABEL_TARGET_MODEL_NAME,
    EppScrapingSource,
    EppTarget,
    ModelKey,
    PrometheusEppSource,
    QueueReading,
)
from wva.scalefromzero import (
    DEFAULT_INTERVAL,
    ScaleFromZeroPoller,
    ZeroModel,
    epp_source_from_settings,
    poller_from_settings,
)
from wva.settings import (
    DEFAULT_EPP_MODEL_LABEL,
    DEFAULT_EPP_QUEUE_METRIC,
    EppMetricsSourceMode,
    Settings,
    SettingsError,
)

NS = "team-a"
A = ZeroModel(NS, "acme/a", "a-cheap", "va-a")
B = ZeroModel(NS, "acme/b", "b-cheap", "va-b")


class FakeReader:
    """``queues``: model -> queued requests (None = unknown, absent = no series)."""

    def __init__(self) -> None:
        self.queues: dict[ModelKey, float | None] = {}
        self.calls: list[list[ModelKey]] = []
        self.fail: BaseException | None = None
        self.hang = False
        self.answer: Any = None  # overrides the readings when set (malformed answers)

    async def read_queues(self, models: Collection[ModelKey]) -> dict[ModelKey, QueueReading]:
        self.calls.append(sorted(models))
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        if self.answer is not None:
            return self.answer  # type: ignore[no-any-return]
        out = {}
        for key in models:
            if key in self.queues:
                value = self.queues[key]
                out[key] = QueueReading(key[0], key[1], value, "" if value is not None else "unknown")
        return out


class Actuator:
    """Records ``scale_up`` calls with their loop time; ``failures`` calls fail first."""

    def __init__(self, failures: int = 0, hang: bool = False) -> None:
        self.calls: list[tuple[str, str, int, float]] = []
        self.failures = failures
        self.hang = hang

    async def __call__(self, namespace: str, deployment: str, replicas: int) -> None:
        self.calls.append((namespace, deployment, replicas, asyncio.get_running_loop().time()))
        if self.hang:
            await asyncio.Event().wait()
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("apiserver said 503")


class AtZero:
    def __init__(self, *models: Any) -> None:
        self.models: list[Any] = list(models)
        self.calls = 0
        self.fail: BaseException | None = None

    def __call__(self) -> list[Any]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return list(self.models)


def make(
    reader: FakeReader, at_zero: Any, actuator: Actuator, metrics: OperatorMetrics | None = None, **kwargs: Any
) -> ScaleFromZeroPoller:
    return ScaleFromZeroPoller(reader, at_zero, actuator, metrics=metrics, **kwargs)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.looptime
async def test_nothing_at_zero_means_no_query_at_all() -> None:
    reader, at_zero = FakeReader(), AtZero()
    poller = make(reader, at_zero, Actuator())
    await poller.start()
    try:
        await asyncio.sleep(10)
    finally:
        await poller.stop()
    assert poller.stats.polls >= 40 and at_zero.calls == poller.stats.polls
    assert reader.calls == [] and poller.stats.reads == 0


@pytest.mark.looptime
async def test_a_queued_request_scales_up_once_within_one_interval() -> None:
    reader, actuator = FakeReader(), Actuator()
    reader.queues = {A.key: 0.0, B.key: 0.0}
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    poller = make(reader, AtZero(A, B), actuator, metrics)
    loop = asyncio.get_running_loop()
    await poller.start()
    try:
        await asyncio.sleep(1.1)
        assert actuator.calls == []  # a confirmed zero wakes nothing
        rose_at = loop.time()
        reader.queues[A.key] = 3.0
        await asyncio.sleep(DEFAULT_INTERVAL)
        assert [(ns, dep, n) for ns, dep, n, _t in actuator.calls] == [(NS, "a-cheap", 1)]
        assert actuator.calls[0][3] - rose_at <= DEFAULT_INTERVAL
        await asyncio.sleep(5)  # still listed at zero (the watch has not caught up): no second call
        assert len(actuator.calls) == 1
        assert poller.in_progress() == {A.key}
        assert all(A.key not in call for call in reader.calls[-10:])  # a model being woken is not re-read
    finally:
        await poller.stop()
    assert sample(registry, "wva_scale_from_zero_total", namespace=NS, model_id="acme/a", outcome="scaled") == 1
    assert sample(registry, "wva_scale_from_zero_models") == 2
    assert sample(registry, "wva_scale_from_zero_poll_duration_seconds_count") == poller.stats.reads > 0


@pytest.mark.looptime
async def test_every_model_is_read_in_one_batch_per_poll() -> None:
    reader = FakeReader()
    reader.queues = {A.key: 0.0, B.key: 0.0}
    poller = make(reader, AtZero(A, B), Actuator())
    for _ in range(3):
        await poller.poll_once()
    assert reader.calls == [sorted([A.key, B.key])] * 3


@pytest.mark.looptime
async def test_debounced_until_the_model_leaves_the_list_then_armed_again() -> None:
    reader, actuator, at_zero = FakeReader(), Actuator(), AtZero(A)
    reader.queues = {A.key: 2.0}
    poller = make(reader, at_zero, actuator)
    await poller.start()
    try:
        await asyncio.sleep(2)
        assert len(actuator.calls) == 1
        at_zero.models = []  # the Deployment is at 1 now
        await asyncio.sleep(1)
        assert poller.in_progress() == set()
        at_zero.models = [A]  # scaled back to zero later, and requests queue again
        await asyncio.sleep(1)
        assert len(actuator.calls) == 2
    finally:
        await poller.stop()


@pytest.mark.looptime
@pytest.mark.parametrize("queue", [None, "absent", math.nan, 0.0])
async def test_unknown_or_zero_never_scales(queue: Any) -> None:
    reader, actuator = FakeReader(), Actuator()
    if queue != "absent":
        reader.queues = {A.key: queue}  # NaN never leaves a real source (unknown there); a fake passes it on
    poller = make(reader, AtZero(A), actuator)
    await poller.start()
    try:
        await asyncio.sleep(5)
    finally:
        await poller.stop()
    assert actuator.calls == [] and poller.stats.reads >= 20


@pytest.mark.looptime
async def test_read_errors_timeouts_and_malformed_answers_keep_it_polling(caplog: pytest.LogCaptureFixture) -> None:
    reader, actuator = FakeReader(), Actuator()
    reader.queues = {A.key: 1.0}
    registry = CollectorRegistry()
    poller = make(reader, AtZero(A), actuator, OperatorMetrics(registry), read_timeout=0.5)
    caplog.set_level(logging.INFO, logger="wva.scalefromzero")
    await poller.start()
    try:
        reader.fail = ConnectionError("prometheus down")
        await asyncio.sleep(2)
        reader.fail = None
        reader.hang = True
        await asyncio.sleep(2)
        reader.hang = False
        for bad in ([1, 2], {A.key: "3"}, {A.key: None}, "x"):
            reader.answer = bad
            await asyncio.sleep(0.5)
        assert actuator.calls == []
        reader.answer = None
        await asyncio.sleep(0.5)
        assert len(actuator.calls) == 1
    finally:
        await poller.stop()
    assert poller.stats.read_errors >= 8
    assert sample(registry, "wva_errors_total", component="scale_from_zero", kind="read") == poller.stats.read_errors
    failed = [r for r in caplog.records if "reading the EPP queue failed" in r.getMessage()]
    assert 2 <= len(failed) <= 4  # logged once per change of error, not on every poll
    assert any("reading the EPP queue works again" in r.getMessage() for r in caplog.records)


@pytest.mark.looptime
async def test_a_failing_models_callable_or_bad_entries_do_not_stop_it() -> None:
    reader, actuator = FakeReader(), Actuator()
    reader.queues = {A.key: 1.0, B.key: 1.0}
    at_zero = AtZero()
    at_zero.fail = RuntimeError("inventory not ready")
    poller = make(reader, at_zero, actuator)
    await poller.start()
    try:
        await asyncio.sleep(1)
        at_zero.fail = None
        bad = [None, 42, ("", "m", "d"), ("ns",), ZeroModel("", "m", "d")]
        at_zero.models = [*bad, (B.namespace, B.model_id, B.deployment), A]
        await asyncio.sleep(1)
    finally:
        await poller.stop()
    assert sorted(dep for _ns, dep, _n, _t in actuator.calls) == ["a-cheap", "b-cheap"]


@pytest.mark.looptime
async def test_an_async_models_callable_works() -> None:
    reader, actuator = FakeReader(), Actuator()
    reader.queues = {A.key: 4.0}

    async def at_zero() -> list[ZeroModel]:
        await asyncio.sleep(0.01)
        return [A]

    poller = make(reader, at_zero, actuator)
    result = await poller.poll_once()
    await asyncio.sleep(0)
    assert result.triggered == (A.key,) and result.read and len(actuator.calls) == 1


@pytest.mark.looptime
async def test_a_failed_scale_up_is_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    reader, actuator = FakeReader(), Actuator(failures=2)
    reader.queues = {A.key: 1.0}
    registry = CollectorRegistry()
    poller = make(reader, AtZero(A), actuator, OperatorMetrics(registry))
    caplog.set_level(logging.INFO, logger="wva.scalefromzero")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await poller.start()
    try:
        await asyncio.sleep(10)
    finally:
        await poller.stop()
    times = [t - started for *_rest, t in actuator.calls]
    assert len(times) == 3  # failed, failed, scaled; then debounced
    assert 1.0 <= times[1] - times[0] <= 1.0 + DEFAULT_INTERVAL
    assert 2.0 <= times[2] - times[1] <= 2.0 + DEFAULT_INTERVAL
    assert sample(registry, "wva_scale_from_zero_total", namespace=NS, model_id="acme/a", outcome="failed") == 2
    assert sample(registry, "wva_scale_from_zero_total", namespace=NS, model_id="acme/a", outcome="scaled") == 1
    messages = [r.getMessage() for r in caplog.records]
    assert "Scale from zero: requests queued namespace=team-a model=acme/a deployment=a-cheap queue=1" in messages
    assert any(m.startswith("Scale from zero: scale-up failed namespace=team-a model=acme/a") for m in messages)
    assert any(m.startswith("Scale from zero: scaled namespace=team-a model=acme/a deployment=a-cheap replicas=1")
               for m in messages)


@pytest.mark.looptime
async def test_a_slow_scale_up_does_not_hold_up_polling_and_stop_cancels_it() -> None:
    reader, actuator = FakeReader(), Actuator(hang=True)
    reader.queues = {A.key: 1.0, B.key: 0.0}
    poller = make(reader, AtZero(A, B), actuator, actuation_timeout=60)
    await poller.start()
    await poller.start()  # a second start is a no-op
    try:
        await asyncio.sleep(2)
        polls = poller.stats.polls
        reader.queues[B.key] = 1.0
        await asyncio.sleep(1)
        assert poller.stats.polls >= polls + 4
        assert [dep for _ns, dep, _n, _t in actuator.calls] == ["a-cheap", "b-cheap"]
    finally:
        await poller.stop()
        await poller.stop()
    assert not poller.running and poller.in_progress() == set()


def test_constructor_validates_the_interval() -> None:
    for bad in (0, -1, math.nan, math.inf, "250ms"):
        with pytest.raises(ValueError, match="interval"):
            ScaleFromZeroPoller(FakeReader(), AtZero(), Actuator(), interval=bad)  # type: ignore[arg-type]


# --- settings -----------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = Settings.from_env({})
    assert s.scale_from_zero_interval == DEFAULT_INTERVAL == 0.25
    assert s.epp_metrics_source is EppMetricsSourceMode.OFF
    assert s.epp_metrics_urls == ()
    assert (s.epp_queue_metric, s.epp_model_label, s.epp_namespace_label) == (
        EPP_QUEUE_SIZE, LABEL_TARGET_MODEL_NAME, "namespace"
    )
    assert (DEFAULT_EPP_QUEUE_METRIC, DEFAULT_EPP_MODEL_LABEL) == (EPP_QUEUE_SIZE, LABEL_TARGET_MODEL_NAME)


@pytest.mark.parametrize(("raw", "seconds"), [("100ms", 0.1), ("0.5", 0.5), ("1s", 1.0), ("10ms", 0.01), ("1m", 60.0)])
def test_interval_setting(raw: str, seconds: float) -> None:
    assert Settings.from_env({"WVA_SCALE_FROM_ZERO_INTERVAL": raw}).scale_from_zero_interval == seconds


@pytest.mark.parametrize("raw", ["0", "5ms", "2m", "-1s", "abc", "", "nan"])
def test_bad_interval_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"WVA_SCALE_FROM_ZERO_INTERVAL": raw})
    assert info.value.problems[0].startswith(f"WVA_SCALE_FROM_ZERO_INTERVAL={raw!r}: ")


def test_urls_setting() -> None:
    s = Settings.from_env(
        {
            "WVA_EPP_METRICS_SOURCE": "PODS",
            "WVA_EPP_METRICS_URLS": " http://epp-a.team-a:9090 , team-b=https://epp-b.team-b:9090/metrics,,"
            "http://epp-c:9090/x?a=b",
        }
    )
    assert s.epp_metrics_source is EppMetricsSourceMode.PODS
    assert s.epp_metrics_urls == (
        ("", "http://epp-a.team-a:9090/metrics"),
        ("team-b", "https://epp-b.team-b:9090/metrics"),
        ("", "http://epp-c:9090/x?a=b"),
    )


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"WVA_EPP_METRICS_SOURCE": "sometimes"}, "WVA_EPP_METRICS_SOURCE='sometimes': must be one of"),
        ({"WVA_EPP_METRICS_SOURCE": "pods"}, "WVA_EPP_METRICS_SOURCE=pods needs WVA_EPP_METRICS_URLS"),
        ({"WVA_EPP_METRICS_SOURCE": "prometheus"}, "WVA_EPP_METRICS_SOURCE=prometheus needs PROMETHEUS_BASE_URL"),
        ({"WVA_EPP_METRICS_URLS": "ftp://x"}, "WVA_EPP_METRICS_URLS='ftp://x': 'ftp://x' is not an http"),
        ({"WVA_EPP_METRICS_URLS": "Bad_NS=http://x"}, "WVA_EPP_METRICS_URLS='Bad_NS=http://x': must be a DNS-1123"),
        ({"WVA_EPP_METRICS_URLS": " , "}, "must list at least one URL"),
        ({"WVA_EPP_QUEUE_METRIC": 'up{a="b"}'}, "WVA_EPP_QUEUE_METRIC"),
        ({"WVA_EPP_MODEL_LABEL": "model-name"}, "WVA_EPP_MODEL_LABEL"),
        ({"WVA_EPP_MODEL_LABEL": "namespace"}, "must differ"),
        ({"WVA_EPP_NAMESPACE_LABEL": "", "WVA_EPP_METRICS_URLS": "a=http://x"}, "need WVA_EPP_NAMESPACE_LABEL"),
    ],
)
def test_bad_epp_settings_are_reported(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert any(fragment in p for p in info.value.problems), info.value.problems


def test_sources_and_poller_from_settings() -> None:
    assert epp_source_from_settings(Settings.from_env({})) is None
    pods = epp_source_from_settings(
        Settings.from_env(
            {
                "WVA_EPP_METRICS_SOURCE": "pods",
                "WVA_EPP_METRICS_URLS": "team-a=http://epp:9090",
                "WVA_EPP_MODEL_LABEL": "model_name",
            }
        )
    )
    assert isinstance(pods, EppScrapingSource)
    assert pods.targets == (EppTarget("http://epp:9090/metrics", "team-a"),)
    assert pods.query_config.model_label == "model_name"
    prom_settings = Settings.from_env(
        {"WVA_EPP_METRICS_SOURCE": "prometheus", "PROMETHEUS_BASE_URL": "https://prom:9090"}
    )
    with pytest.raises(ValueError, match="Prometheus client"):
        epp_source_from_settings(prom_settings)

    class Prom:
        def custom_query(self, query: str, params: dict[str, Any] | None = None) -> Any:
            return []

    prom_source = epp_source_from_settings(prom_settings, Prom())
    assert isinstance(prom_source, PrometheusEppSource)
    poller = poller_from_settings(
        Settings.from_env({"WVA_SCALE_FROM_ZERO_INTERVAL": "100ms"}), prom_source, AtZero(), Actuator()
    )
    assert poller.interval == 0.1
