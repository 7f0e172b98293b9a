"""wva.actuator.drain: pod-deletion costs from load, the annotations written before a scale-down, the drain wait."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry

from wva.actuator.drain import (
    DELETION_COST_ANNOTATION,
    UNKNOWN_COST,
    DrainAwareScaler,
    PodLoad,
    deletion_costs,
    plan_scale_down,
)
from wva.actuator.metrics import OperatorMetrics
from wva.inventory import PodRecord
from wva.kube import KubeClient, KubeError
from wva.settings import Settings, SettingsError

NS, DEPLOY = "llm", "llama"


# --- the pure cost function ---------------------------------------------------------------------
def test_least_loaded_pod_gets_the_lowest_cost_and_busier_pods_higher() -> None:
    costs = deletion_costs({"busy": (0.9, 12), "idle": (0.05, 0), "mid": (0.4, 3)})
    assert costs["idle"] < costs["mid"] < costs["busy"]
    assert sorted(costs, key=costs.__getitem__) == ["idle", "mid", "busy"]


def test_the_documented_formula() -> None:
    # cost = 1000 * ceil(in_flight) + round(999 * kv)
    costs = deletion_costs({"a": (0.42, 8), "b": (0.0, 0), "c": (1.0, 0), "d": (0.5, 0.2)})
    assert costs == {"a": 8000 + 420, "b": 0, "c": 999, "d": 1000 + 500}


def test_in_flight_requests_outweigh_any_kv_usage() -> None:
    costs = deletion_costs({"full-cache-idle": (1.0, 0), "empty-cache-one-request": (0.0, 1)})
    assert costs["full-cache-idle"] < costs["empty-cache-one-request"]


def test_values_are_clamped_into_int32_below_the_unknown_cost() -> None:
    costs = deletion_costs({"huge": (7.0, 1e12), "negative": (-0.5, -3), "inf": (0.1, math.inf)})
    assert costs["negative"] == 0
    assert costs["huge"] == 2_000_000 * 1000 + 999
    assert costs["huge"] < UNKNOWN_COST == 2**31 - 1
    assert costs["inf"] == UNKNOWN_COST  # not finite: unknown


def test_a_pod_with_unknown_load_gets_the_highest_cost() -> None:
    costs = deletion_costs({"known": (0.99, 500), "unknown": (None, None)})
    assert costs["unknown"] == UNKNOWN_COST > costs["known"]
    # missing a signal the other pods have is unknown too, however idle the other signal looks
    costs = deletion_costs({"a": (0.3, 2), "no-in-flight": (0.0, None), "no-kv": (None, 0), "nan": (math.nan, 0)})
    assert costs["a"] == 2300
    assert costs["no-in-flight"] == costs["no-kv"] == costs["nan"] == UNKNOWN_COST


def test_a_signal_nobody_has_is_not_held_against_anyone() -> None:
    # the engine may know KV usage only: then KV alone orders the pods
    assert deletion_costs({"a": (0.7, None), "b": (0.2, None)}) == {"a": 699, "b": 200}
    assert deletion_costs({"a": (None, 3), "b": (None, 0)}) == {"a": 3000, "b": 0}
    assert deletion_costs({"a": (None, None), "b": (None, None)}) == {"a": UNKNOWN_COST, "b": UNKNOWN_COST}
    assert deletion_costs({}) == {}


def test_ties_are_equal_costs_and_stable() -> None:
    loads = {"c": (0.5, 1), "a": (0.5, 1), "b": (0.5, 1)}
    first = deletion_costs(loads)
    assert len(set(first.values())) == 1
    assert deletion_costs(dict(reversed(list(loads.items())))) == first
    assert deletion_costs({k: PodLoad(*v) for k, v in loads.items()}) == first


# --- the plan of one scale-down -------------------------------------------------------------------
def test_plan_names_the_least_loaded_pods_as_victims() -> None:
    plan = plan_scale_down({"p1": (0.8, 6), "p2": (0.1, 0), "p3": (0.4, 2)}, current=3, target=1)
    assert plan.victims == ("p2", "p3")
    assert plan.undetermined == 0
    assert plan.costs == deletion_costs({"p1": (0.8, 6), "p2": (0.1, 0), "p3": (0.4, 2)})


def test_a_tie_across_the_boundary_is_broken_by_name_and_written_into_the_costs() -> None:
    plan = plan_scale_down({"b": (0.0, 0), "a": (0.0, 0), "c": (0.0, 0), "busy": (0.9, 9)}, current=4, target=3)
    assert plan.victims == ("a",)
    assert plan.costs["a"] == -1 and plan.costs["b"] == plan.costs["c"] == 0
    # the same input always gives the same plan
    assert plan_scale_down({"c": (0.0, 0), "a": (0.0, 0), "b": (0.0, 0), "busy": (0.9, 9)}, 4, 3) == plan
    # no tie at the boundary: nothing is adjusted
    plan = plan_scale_down({"a": (0.0, 0), "b": (0.0, 0), "busy": (0.9, 9)}, current=3, target=1)
    assert plan.victims == ("a", "b") and plan.costs == {"a": 0, "b": 0, "busy": 9899}


def test_pods_of_unknown_load_are_never_named_victims() -> None:
    plan = plan_scale_down({"known": (0.5, 4), "u1": (None, None), "u2": (None, None)}, current=3, target=1)
    assert plan.victims == ("known",)
    assert plan.undetermined == 1
    assert plan.costs["u1"] == plan.costs["u2"] == UNKNOWN_COST  # the controller's own ranking decides


def test_not_ready_pods_go_first_so_fewer_ready_pods_are_victims() -> None:
    # 3 replicas, one not ready (not in the loads): the controller removes that one for 3 -> 2
    assert plan_scale_down({"a": (0.1, 0), "b": (0.9, 9)}, current=3, target=2).victims == ()
    assert plan_scale_down({"a": (0.1, 0), "b": (0.9, 9)}, current=3, target=1).victims == ("a",)
    assert plan_scale_down({"a": (0.1, 0)}, current=2, target=2).victims == ()


# --- the scaler with a fake API -------------------------------------------------------------------
class FakeKube:
    """Records pod annotation patches; ``fail`` maps pod -> the KubeError its patch raises."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict[str, str | None]]] = []
        self.fail: dict[str, Exception] = {}
        self.annotations: dict[str, dict[str, str]] = {}

    async def patch_pod_annotations(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        await asyncio.sleep(0)
        if name in self.fail:
            raise self.fail[name]
        self.patches.append((namespace, name, dict(annotations)))
        target = self.annotations.setdefault(name, {})
        for key, value in annotations.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value

    def costs(self) -> dict[str, int]:
        return {pod: int(a[DELETION_COST_ANNOTATION]) for pod, a in self.annotations.items()}

    def patched_pods(self) -> list[str]:
        return sorted(name for _, name, _ in self.patches)


class Pods:
    def __init__(self, *names: str) -> None:
        self.names = list(names)
        self.asked: list[tuple[str, str]] = []

    def __call__(self, namespace: str, deployment: str) -> list[PodRecord]:
        self.asked.append((namespace, deployment))
        return [PodRecord(n, namespace, deployment, ip=f"10.0.0.{i}", ready=True) for i, n in enumerate(self.names)]


LOADS = {"p1": (0.8, 6), "p2": (0.1, 0), "p3": (0.4, 2)}


async def test_scale_down_annotates_every_ready_pod_least_loaded_lowest(caplog: pytest.LogCaptureFixture) -> None:
    kube, pods = FakeKube(), Pods("p1", "p2", "p3")
    scaler = DrainAwareScaler(kube, pods)
    with caplog.at_level(logging.INFO, logger="wva.actuator.drain"):
        await scaler.prepare_scale_down(NS, DEPLOY, current=3, target=2, loads=LOADS)
    assert pods.asked == [(NS, DEPLOY)]
    assert kube.patched_pods() == ["p1", "p2", "p3"]
    assert all(ns == NS and set(a) == {DELETION_COST_ANNOTATION} for ns, _, a in kube.patches)
    costs = kube.costs()
    assert min(costs, key=costs.__getitem__) == "p2"
    assert costs == deletion_costs(LOADS)
    assert "Deletion costs set namespace=llm deployment=llama from=3 to=2 victims=p2 " in caplog.text
    assert scaler.stats["patched"] == 3


async def test_only_pods_whose_value_changes_are_patched() -> None:
    kube, pods = FakeKube(), Pods("p1", "p2", "p3")
    scaler = DrainAwareScaler(kube, pods)
    await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, LOADS)
    assert len(kube.patches) == 3
    await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, LOADS)
    assert len(kube.patches) == 3, "same loads: nothing written again"
    assert scaler.stats["unchanged"] == 3
    await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, {**LOADS, "p1": (0.9, 7)})
    assert [name for _, name, _ in kube.patches[3:]] == ["p1"]
    # a pod that left is forgotten; a new one is written, the others stay as they are
    pods.names = ["p1", "p3", "p4"]
    await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, {**LOADS, "p1": (0.9, 7), "p4": (0.0, 0)})
    assert [name for _, name, _ in kube.patches[4:]] == ["p4"]
    # the same pod names under another Deployment are separate
    await scaler.prepare_scale_down(NS, "other", 3, 2, {**LOADS, "p1": (0.9, 7), "p4": (0.0, 0)})
    assert len(kube.patches) == 8


async def test_scale_up_and_no_change_set_nothing() -> None:
    kube, pods = FakeKube(), Pods("p1", "p2", "p3")
    scaler = DrainAwareScaler(kube, pods)
    await scaler.prepare_scale_down(NS, DEPLOY, current=3, target=4, loads=LOADS)
    await scaler.prepare_scale_down(NS, DEPLOY, current=3, target=3, loads=LOADS)
    assert kube.patches == [] and pods.asked == []


async def test_disabled_sets_nothing() -> None:
    kube, pods = FakeKube(), Pods("p1", "p2", "p3")
    scaler = DrainAwareScaler.from_settings(Settings.from_env({"WVA_DELETION_COST": "false"}), kube, pods)
    await scaler.prepare_scale_down(NS, DEPLOY, 3, 1, LOADS)
    assert kube.patches == []


async def test_pods_without_loads_get_the_unknown_cost() -> None:
    kube = FakeKube()
    scaler = DrainAwareScaler(kube, Pods("p1", "p2", "p3", "fresh"))
    await scaler.prepare_scale_down(NS, DEPLOY, 4, 3, LOADS)
    assert kube.costs()["fresh"] == UNKNOWN_COST
    assert min(kube.costs(), key=kube.costs().__getitem__) == "p2"


async def test_an_annotation_failure_is_logged_and_counted_and_does_not_block(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = FakeKube()
    kube.fail = {"p1": KubeError(500, "patch pods: 500 Internal Server Error"), "p3": KubeError(0, "refused")}
    metrics = OperatorMetrics(CollectorRegistry())
    scaler = DrainAwareScaler(kube, Pods("p1", "p2", "p3"), metrics=metrics)
    with caplog.at_level(logging.INFO, logger="wva.actuator.drain"):
        await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, LOADS)  # returns; the caller scales down next
    assert kube.patched_pods() == ["p2"]
    assert scaler.stats["failed"] == 2
    assert metrics.errors.labels("actuator", "deletion_cost")._value.get() == 2
    assert caplog.text.count("Deletion cost annotation failed namespace=llm deployment=llama pod=") == 2
    assert "patched=1 unchanged=0 failed=2" in caplog.text
    # the failed pods are retried next time, the written one is not
    kube.fail = {}
    await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, LOADS)
    assert kube.patched_pods() == ["p1", "p2", "p3"]


async def test_a_pod_gone_meanwhile_is_not_an_error() -> None:
    kube = FakeKube()
    kube.fail = {"p3": KubeError(404, "patch pods: 404 Not Found")}
    metrics = OperatorMetrics(CollectorRegistry())
    scaler = DrainAwareScaler(kube, Pods("p1", "p2", "p3"), metrics=metrics)
    await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, LOADS)
    assert scaler.stats["gone"] == 1 and scaler.stats["failed"] == 0
    assert metrics.errors.labels("actuator", "deletion_cost")._value.get() == 0


async def test_any_other_failure_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    def broken(namespace: str, deployment: str) -> list[PodRecord]:
        raise RuntimeError("inventory exploded")

    kube = FakeKube()
    scaler = DrainAwareScaler(kube, broken)
    with caplog.at_level(logging.ERROR, logger="wva.actuator.drain"):
        await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, LOADS)
    assert scaler.stats["errors"] == 1
    assert "Deletion cost preparation failed; scaling down without it" in caplog.text


async def test_missing_in_flight_counts_are_fetched_and_a_failed_fetch_is_unknown() -> None:
    asked: list[tuple[str, str]] = []

    async def in_flight(namespace: str, pod: str) -> float | None:
        asked.append((namespace, pod))
        if pod == "p3":
            raise OSError("connection refused")
        return {"p1": 5.0, "p2": 0.0}[pod]

    kube = FakeKube()
    scaler = DrainAwareScaler(kube, Pods("p1", "p2", "p3"), in_flight=in_flight)
    # the engine knows KV usage from its collector; the in-flight counts are fetched for it
    await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, {"p1": (0.2, None), "p2": (0.9, None), "p3": (0.1, None)})
    assert sorted(asked) == [(NS, "p1"), (NS, "p2"), (NS, "p3")]
    assert kube.costs() == {"p1": 5200, "p2": 899, "p3": UNKNOWN_COST}


async def test_a_hanging_fetch_is_bounded() -> None:
    async def hang_on_p1(namespace: str, pod: str) -> float | None:
        if pod == "p1":
            await asyncio.Event().wait()
        return 4.0

    kube = FakeKube()
    scaler = DrainAwareScaler(kube, Pods("p1", "p2"), in_flight=hang_on_p1, fetch_timeout=0.05)
    started = time.monotonic()
    await scaler.prepare_scale_down(NS, DEPLOY, 2, 1, {"p1": (0.2, None), "p2": (0.1, None)})
    assert time.monotonic() - started < 2
    # p1 did not answer: its load is unknown, so the busier p2 (4 requests) goes instead of a guess
    assert kube.costs() == {"p1": UNKNOWN_COST, "p2": 4100}


# --- waiting for the victim to drain ------------------------------------------------------------------
async def test_wait_drained_times_out_and_returns(caplog: pytest.LogCaptureFixture) -> None:
    polls: list[str] = []

    async def busy(namespace: str, pod: str) -> float | None:
        polls.append(pod)
        return 3.0

    scaler = DrainAwareScaler(FakeKube(), Pods(), in_flight=busy, poll_interval=0.02)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="wva.actuator.drain"):
        drained = await scaler.wait_drained(NS, ["p2"], timeout=0.2)
    elapsed = time.monotonic() - started
    assert drained is False
    assert 0.2 <= elapsed < 2
    assert len(polls) >= 2 and set(polls) == {"p2"}
    assert "Drain wait timed out namespace=llm pods=p2 waited=" in caplog.text and "in_flight=p2=3" in caplog.text
    assert scaler.stats["drain_timeout"] == 1


async def test_wait_drained_returns_once_the_victim_is_idle() -> None:
    counts = {"p2": [2.0, None, 1.0, 0.0, 5.0]}  # unknown is not zero; a zero ends the wait

    async def in_flight(namespace: str, pod: str) -> float | None:
        return counts[pod].pop(0)

    scaler = DrainAwareScaler(FakeKube(), Pods(), in_flight=in_flight, poll_interval=0.01)
    assert await scaler.wait_drained(NS, ["p2"], timeout=10) is True
    assert counts["p2"] == [5.0]


async def test_wait_drained_with_a_hanging_source_still_ends_at_the_timeout() -> None:
    async def hang(namespace: str, pod: str) -> float | None:
        await asyncio.Event().wait()
        return 0.0

    scaler = DrainAwareScaler(FakeKube(), Pods(), in_flight=hang, fetch_timeout=30)
    started = time.monotonic()
    assert await scaler.wait_drained(NS, ["p1"], timeout=0.1) is False
    assert time.monotonic() - started < 2


async def test_wait_drained_without_a_source_does_not_wait() -> None:
    scaler = DrainAwareScaler(FakeKube(), Pods())
    assert await scaler.wait_drained(NS, ["p1"], timeout=60) is False
    assert await scaler.wait_drained(NS, [], timeout=60) is True


async def test_scale_down_waits_for_the_victim_only_when_a_drain_timeout_is_set() -> None:
    polled: list[str] = []
    running = {"p1": 6.0, "p2": 1.0, "p3": 2.0}

    async def in_flight(namespace: str, pod: str) -> float | None:
        polled.append(pod)
        value = running[pod]
        if pod == "p2":
            running["p2"] = 0.0  # the victim finishes its last request
        return value

    kube = FakeKube()
    scaler = DrainAwareScaler(kube, Pods("p1", "p2", "p3"), in_flight=in_flight, poll_interval=0.01)
    await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, {"p1": (0.8, 6), "p2": (0.1, 1), "p3": (0.4, 2)})
    assert polled == [], "no drain timeout: no wait"

    scaler = DrainAwareScaler.from_settings(
        Settings.from_env({"WVA_DRAIN_TIMEOUT": "5s"}), kube, Pods("p1", "p2", "p3"), in_flight=in_flight
    )
    scaler.poll_interval = 0.01
    await scaler.prepare_scale_down(NS, DEPLOY, 3, 2, {"p1": (0.8, 6), "p2": (0.1, 1), "p3": (0.4, 2)})
    assert set(polled) == {"p2"} and len(polled) == 2
    assert scaler.stats["drained"] == 1


# --- settings --------------------------------------------------------------------------------------
def test_settings_defaults_and_values() -> None:
    s = Settings.from_env({})
    assert s.deletion_cost is True and s.drain_timeout == 0.0
    assert Settings.from_env({"WVA_DELETION_COST": ""}).deletion_cost is True
    s = Settings.from_env({"WVA_DELETION_COST": "Off", "WVA_DRAIN_TIMEOUT": "1m30s"})
    assert s.deletion_cost is False and s.drain_timeout == 90.0
    assert Settings.from_env({"WVA_DRAIN_TIMEOUT": "0"}).drain_timeout == 0.0
    assert Settings.from_env({"WVA_DRAIN_TIMEOUT": "2.5"}).drain_timeout == 2.5


@pytest.mark.parametrize(
    ("var", "value", "reason"),
    [
        ("WVA_DELETION_COST", "sometimes", "not a boolean"),
        ("WVA_DRAIN_TIMEOUT", "soon", "invalid duration"),
        ("WVA_DRAIN_TIMEOUT", "-5s", ">= 0"),
        ("WVA_DRAIN_TIMEOUT", "1h", "at most 600s"),
    ],
)
def test_bad_settings_name_the_variable_and_the_value(var: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({var: value})
    message = str(info.value)
    assert f"{var}={value!r}" in message and reason in message


# --- KubeClient.patch_pod_annotations -----------------------------------------------------------------
class FakeCore:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.error = error

    def patch_namespaced_pod(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error


async def test_kube_client_merges_only_the_annotations_and_counts_the_call() -> None:
    seen: list[tuple[str, str, str]] = []
    kube = KubeClient(k8s.ApiClient(), request_timeout=3.0, on_request=lambda *a: seen.append(a))
    try:
        kube.core = FakeCore()
        await kube.patch_pod_annotations(NS, "p1", {DELETION_COST_ANNOTATION: "42", "gone": None})
        (args, kwargs), = kube.core.calls
        assert args == ("p1", NS, {"metadata": {"annotations": {DELETION_COST_ANNOTATION: "42", "gone": None}}})
        assert kwargs == {"_request_timeout": 3.0}
        assert kube.calls[("patch", "pods")] == 1
        assert seen == [("patch", "pods", "ok")]

        kube.core = FakeCore(ApiException(status=403, reason="Forbidden"))
        with pytest.raises(KubeError) as info:
            await kube.patch_pod_annotations(NS, "p1", {DELETION_COST_ANNOTATION: "1"})
        assert info.value.status == 403 and not info.value.retryable
        assert seen[-1] == ("patch", "pods", "403")
    finally:
        kube.close()
