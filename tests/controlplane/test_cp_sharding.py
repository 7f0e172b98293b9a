"""Three shards of wva on the real control plane: every model group decided by exactly one shard, and a
shard's standby taking over that shard's groups when its leader dies.

Four ``wva run`` processes, each configured like the chart's pod and authenticated as the chart's
ServiceAccount, watch one namespace with nine models (three of them with a second variant on another
accelerator: twelve VAs, each with a one-pod emulator Deployment, found by Prometheus through its own pod
discovery): the leaders of shards 0, 1 and 2 (``--shards=3`` and ``--shard-index``; shard 2's index comes
from its pod name's ordinal, ``--shard-index=ordinal``) and a standby of shard 1. The model names are
chosen so that each shard owns three models. Actuation is ``hpa``: decisions are published and written
to status, nothing is scaled. It proves:

- each process elects on its own shard's Lease (``<lease>-shard-<i>``), so the three leaders lead at once
  and the standby waits on shard 1's Lease only; each says its shard (``wva_shard_info``) and the number of
  model groups it owns (``wva_shard_groups``, 3 each, on the standby too);
- every VA gets its decision (TargetResolved and MetricsAvailable True, ``minReplicas`` at idle), written
  by its own shard only: the server's ``managedFields`` of each VA's status name exactly one wva writer,
  ``wva-shard-<owner>``;
- on every sampled cycle, the VAs the processes hold decision records and ``wva_desired_replicas`` series
  for are disjoint and together exactly the twelve, each with its owner (no double decisions); each
  leader's last cycle decided exactly its own groups; the standby writes nothing but its Lease and
  publishes no decision;
- SIGKILL of shard 1's leader: the standby takes shard 1's Lease once it expires (within the lease duration
  plus a renew interval and slack, not before), while shards 0 and 2 lead on undisturbed; the new leader
  decides shard 1's groups (saturated now: ``maxReplicas``) and only those, and still no VA has a second
  writer.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from conftest import LiveCluster, Release
from cpsupport import (
    LEASE_SECONDS,
    RENEW_SECONDS,
    SLACK_SECONDS,
    WvaProcess,
    assert_clean_log,
    create_va,
    desired_gauges,
    election_env,
    engine_cycles,
    gpu_free_deployment,
    list_vas,
    ready_pod_ips,
    samples,
    server_side_apply,
    set_load,
    variant,
    wait_until,
    wrong_statuses,
)
from test_cp_leader import leader_gauge, status_patches, writes
from test_cp_loop import IDLE, SATURATED
from wva.sharding import shard_of

SHARDS = 3
MODELS_PER_SHARD = 3
MIN_REPLICAS, MAX_REPLICAS = 1, 2
VARIANTS = (("l4", "L4", "5"), ("h100", "H100", "20"))  # (suffix, accelerator, cost)


def models_by_shard(namespace: str) -> dict[int, list[str]]:
    """Nine model names, three owned by each shard (the owner depends on the namespace too)."""
    found: dict[int, list[str]] = {i: [] for i in range(SHARDS)}
    i = 0
    while any(len(models) < MODELS_PER_SHARD for models in found.values()):
        model = f"shard/model-{i}"
        owner = found[shard_of(namespace, model, SHARDS)]
        if len(owner) < MODELS_PER_SHARD:
            owner.append(model)
        i += 1
    return found


def fleet(namespace: str) -> dict[str, tuple[str, int, str, str]]:
    """VA name -> (model, owning shard, accelerator, cost): the first model of each shard has two variants."""
    out: dict[str, tuple[str, int, str, str]] = {}
    for shard, models in models_by_shard(namespace).items():
        for k, model in enumerate(models):
            for suffix, accelerator, cost in VARIANTS[: 2 if k == 0 else 1]:
                out[f"{model.split('/')[1]}-{suffix}"] = (model, shard, accelerator, cost)
    return out


def status_writers(va: dict[str, Any]) -> set[str]:
    """The wva field managers that wrote the VA's status subresource (the server's own record)."""
    return {
        entry["manager"] for entry in va["metadata"].get("managedFields") or []
        if entry.get("subresource") == "status" and entry.get("manager", "").startswith("wva")
    }


def decided_vas(wva: WvaProcess, namespace: str) -> set[str] | None:
    """The VAs of ``namespace`` the process holds decision records for; None when it does not answer."""
    status, body = wva.http(wva.metrics_port, "/debug/decisions")
    if status != 200:
        return None
    keys = json.loads(body)["variantAutoscalings"]
    return {key.split("/", 1)[1] for key in keys if key.split("/", 1)[0] == namespace}


def one_value(metrics: str, name: str) -> tuple[dict[str, str], float] | None:
    found = samples(metrics, name)
    return found[0] if len(found) == 1 else None


def last_cycle_groups(wva: WvaProcess) -> int | None:
    """``groups=`` of the process' last "Engine cycle done" log line."""
    lines = [ln for ln in wva.log_text().splitlines() if "Engine cycle done groups=" in ln]
    return int(lines[-1].split("groups=", 1)[1].split()[0]) if lines else None


def statuses_are(api: k8s.ApiClient, namespace: str, expected: dict[str, int]) -> bool:
    wrong = wrong_statuses(api, namespace, expected)
    assert not wrong, wrong  # wait_until reports the last one
    return True


@pytest.fixture()
def lease_base(kube: k8s.ApiClient, wva_release: Release, namespace: str) -> Iterator[str]:
    """The Lease name of this test (each shard adds -shard-<i>); the shards' Leases are deleted afterwards."""
    base = f"wva-leader-{namespace}"[:50].rstrip("-")
    yield base
    for i in range(SHARDS):
        with contextlib.suppress(ApiException):
            k8s.CoordinationV1Api(kube).delete_namespaced_lease(f"{base}-shard-{i}", wva_release.namespace)


def test_three_shards_each_decide_only_their_groups_and_a_standby_takes_over_its_shard(
    live: LiveCluster, lease_base: str
) -> None:
    kube, namespace = live.kube, live.namespace
    vas = fleet(namespace)
    owner = {name: shard for name, (_model, shard, _acc, _cost) in vas.items()}
    groups = {i: sum(1 for s in owner.values() if s == i) for i in range(SHARDS)}  # one per accelerator of a model
    assert len(vas) == SHARDS * MODELS_PER_SHARD + SHARDS
    for name, (model, _shard, accelerator, cost) in vas.items():
        server_side_apply(kube, gpu_free_deployment(name, namespace, model))
        create_va(kube, variant(name, namespace, model, accelerator=accelerator, cost=cost,
                                min_replicas=MIN_REPLICAS, max_replicas=MAX_REPLICAS))

    env = {
        **election_env(lease_base),
        "ACTUATION_MODE": "hpa",
        "GLOBAL_OPT_INTERVAL": "1s",
        "WVA_METRICS_SECURE": "false",  # the test reads /debug/decisions and /metrics directly
    }
    # shard 2 takes its index from its pod name's StatefulSet ordinal
    plan = {"wva-shard-0": "0", "wva-shard-1": "1", "wva-shard-1-standby": "1", "wva-shard-2": "ordinal"}
    procs = {name: live.wva(name, **env) for name in plan}
    leaders = {0: procs["wva-shard-0"], 1: procs["wva-shard-1"], 2: procs["wva-shard-2"]}
    standby = procs["wva-shard-1-standby"]
    codes: dict[str, int | None] = {}
    try:
        for name, index in plan.items():
            if name != "wva-shard-1-standby":
                procs[name].start("--namespace", namespace, f"--shards={SHARDS}", f"--shard-index={index}")
        for proc in leaders.values():
            proc.wait_ready(90)
        for i, proc in leaders.items():
            wait_until(lambda p=proc: leader_gauge(p) == 1.0, 30, f"shard {i} leads; log:\n{proc.tail()}")
        standby.start("--namespace", namespace, f"--shards={SHARDS}", "--shard-index=1")
        standby.wait_ready(90)

        ips = wait_until(lambda: (found := ready_pod_ips(kube, namespace)) and len(found) == len(vas) and found, 120,
                         f"{len(vas)} ready pods", interval=0.5)
        for name in vas:
            set_load(ips[name], **IDLE)

        # --- who leads what: one Lease per shard, each shard says who it is -------------------------------
        for i, proc in leaders.items():
            lease = live.read_lease(f"{lease_base}-shard-{i}")
            assert lease.spec.holder_identity == f"wva-shard-{i}", lease.spec
            assert f"shard={i}/{SHARDS} lease={lease_base}-shard-{i}" in proc.log_text()
        assert leader_gauge(standby) == 0.0
        for proc, i in [*((p, i) for i, p in leaders.items()), (standby, 1)]:
            metrics = proc.metrics()
            assert one_value(metrics, "wva_shard_info") == ({"shard_index": str(i), "shards": str(SHARDS)}, 1.0)
            wait_until(lambda p=proc: (found := one_value(p.metrics(), "wva_shard_groups")) and found[1] == 3.0,
                       30, f"shard {i} owns three model groups")

        # --- every VA decided, each written by its own shard only ----------------------------------------
        wait_until(lambda: statuses_are(kube, namespace, dict.fromkeys(vas, MIN_REPLICAS)), 120,
                   "every VA decided on metrics", interval=1.0)
        for name, va in list_vas(kube, namespace).items():
            assert status_writers(va) == {f"wva-shard-{owner[name]}"}, (name, va["metadata"].get("managedFields"))

        # --- on each sampled cycle: every VA decided and published by exactly its owner ----------------------
        cycles_before = {i: engine_cycles(p.metrics()) for i, p in leaders.items()}
        for _sample in range(3):
            for i, proc in leaders.items():
                before = engine_cycles(proc.metrics())
                wait_until(lambda p=proc, n=before: engine_cycles(p.metrics()) > n, 15, f"a cycle of shard {i}")
            held = {i: decided_vas(p, namespace) for i, p in leaders.items()}
            gauges = {i: desired_gauges(p.metrics(), namespace) for i, p in leaders.items()}
            for i in range(SHARDS):
                mine = {name for name, s in owner.items() if s == i}
                assert held[i] == mine, (i, held[i], mine)
                assert gauges[i] == dict.fromkeys(mine, float(MIN_REPLICAS)), (i, gauges[i])
                assert last_cycle_groups(leaders[i]) == groups[i], leaders[i].tail(5)
            assert decided_vas(standby, namespace) == set()
        assert all(engine_cycles(p.metrics()) >= cycles_before[i] + 3 for i, p in leaders.items())
        standby_metrics = standby.metrics()
        assert {resource for _verb, resource in writes(standby_metrics)} <= {"leases"}, writes(standby_metrics)
        assert status_patches(standby_metrics) == 0 and desired_gauges(standby_metrics, namespace) == {}
        assert "Saturation engine started" not in standby.log_text()
        transitions = live.read_lease(f"{lease_base}-shard-1").spec.lease_transitions or 0

        # --- SIGKILL of shard 1's leader: its standby takes shard 1, the other shards carry on ---------------
        killed_at = time.monotonic()
        killed_wall = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        leaders[1].kill()
        others_led = True
        while leader_gauge(standby) != 1.0:
            assert time.monotonic() - killed_at < LEASE_SECONDS + RENEW_SECONDS + 30, standby.tail()
            others_led = others_led and leader_gauge(leaders[0]) == 1.0 and leader_gauge(leaders[2]) == 1.0
            time.sleep(0.1)  # sampling the roles until the handover: the moments matter, not only the end
        handover = time.monotonic() - killed_at
        print(f"shard 1 handover after SIGKILL: {handover:.2f}s (lease {LEASE_SECONDS:g}s, renew {RENEW_SECONDS:g}s)")
        assert handover <= LEASE_SECONDS + RENEW_SECONDS + SLACK_SECONDS, f"handover took {handover:.2f}s"
        assert handover >= LEASE_SECONDS - RENEW_SECONDS - 1.0, f"took over a live lease after {handover:.2f}s"
        assert others_led, "shards 0 and 2 kept leading while shard 1 changed hands"
        lease = live.read_lease(f"{lease_base}-shard-1")
        assert lease.spec.holder_identity == "wva-shard-1-standby"
        assert (lease.spec.lease_transitions or 0) == transitions + 1
        for i in (0, 2):
            assert live.read_lease(f"{lease_base}-shard-{i}").spec.holder_identity == f"wva-shard-{i}"

        # the new leader decides shard 1's groups, now saturated, and only those
        for name, shard in owner.items():
            if shard == 1:
                set_load(ips[name], **SATURATED)
        expected = {name: MAX_REPLICAS if shard == 1 else MIN_REPLICAS for name, shard in owner.items()}
        wait_until(lambda: statuses_are(kube, namespace, expected), 60,
                   f"shard 1's VAs scaled up by the new leader; its log:\n{standby.tail(15)}", interval=0.5)
        mine = {name for name, s in owner.items() if s == 1}
        wait_until(lambda: desired_gauges(standby.metrics(), namespace) == dict.fromkeys(mine, float(MAX_REPLICAS)), 30,
                   "the new leader publishes shard 1's decisions")
        assert decided_vas(standby, namespace) == mine
        assert last_cycle_groups(standby) == groups[1]
        for i in (0, 2):
            assert decided_vas(leaders[i], namespace) == {name for name, s in owner.items() if s == i}
        for name, va in list_vas(kube, namespace).items():
            assert status_writers(va) == {f"wva-shard-{owner[name]}"}, (name, va["metadata"].get("managedFields"))
            if owner[name] == 1:
                run = (va["status"]["desiredOptimizedAlloc"] or {}).get("lastRunTime", "")
                assert datetime.datetime.fromisoformat(run.replace("Z", "+00:00")) >= killed_wall, (name, run)
        assert status_patches(standby.metrics()) >= len(mine)
    finally:
        codes = {name: proc.stop() for name, proc in procs.items() if proc.alive}
    assert all(code == 0 for code in codes.values()), codes
    for name, proc in procs.items():
        assert_clean_log(proc, "every shard's Lease", name)
