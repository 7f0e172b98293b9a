"""PodVAMapper: watched pods, owner references, pod-name-shape fallback, namespaces, threads."""

from __future__ import annotations

import threading

from wva.collector.types import PodResolver
from wva.collector.v2 import PodVAMapper


def mapper_with(*entries: tuple[str, str, str]) -> PodVAMapper:
    m = PodVAMapper()
    for va, ns, deployment in entries:
        m.register(va, ns, deployment)
    return m


def test_observed_pod_resolves_through_its_deployment() -> None:
    m = mapper_with(("llama-va", "ns", "llama-deploy"))
    m.observe_pod("anything-at-all", "ns", "llama-deploy")
    resolver: PodResolver = m  # the protocol the collectors consume
    assert resolver.get_va_for_pod("anything-at-all", "ns") == "llama-va"


def test_an_empty_mapper_is_truthy() -> None:
    shared = PodVAMapper()
    assert (shared or PodVAMapper()) is shared  # callers may write `mapper or PodVAMapper()`


def test_unknown_pod_and_deployment_without_va_give_none() -> None:
    m = mapper_with(("va-b", "ns", "deploy-b"))
    m.observe_pod("pod-a-1", "ns", "deploy-a")
    assert m.get_va_for_pod("pod-a-1", "ns") is None
    assert m.get_va_for_pod("stranger", "ns") is None


def test_va_in_another_namespace_is_not_used() -> None:
    m = mapper_with(("va", "other", "deploy"))
    m.observe_pod("deploy-7d9f-abcde", "ns", "deploy")
    assert m.get_va_for_pod("deploy-7d9f-abcde", "ns") is None
    assert m.get_va_for_pod("deploy-7d9f-abcde", "other") == "va"  # name-shape fallback there


def test_same_deployment_name_in_two_namespaces() -> None:
    m = mapper_with(("va-1", "ns1", "app"), ("va-2", "ns2", "app"))
    m.observe_pod("app-1-x", "ns1", "app")
    m.observe_pod("app-1-x", "ns2", "app")
    assert m.get_va_for_pod("app-1-x", "ns1") == "va-1"
    assert m.get_va_for_pod("app-1-x", "ns2") == "va-2"


def test_replicaset_owner_is_resolved_lazily_whatever_the_event_order() -> None:
    m = PodVAMapper()
    m.observe_pod_owner("p1", "ns", "ReplicaSet", "llama-8b-5d4f9c7b8")  # pod seen before its VA
    assert m.get_va_for_pod("p1", "ns") is None
    m.register("va-8b", "ns", "llama-8b")
    m.register("va-llama", "ns", "llama")
    assert m.get_va_for_pod("p1", "ns") == "va-8b"  # one dash-suffix only: never "llama"
    m.observe_pod_owner("p2", "ns", "ReplicaSet", "llama-8b-5d4f-extra")  # RS is not <llama-8b>-<hash>
    assert m.get_va_for_pod("p2", "ns") is None
    m.observe_pod_owner("p3", "ns", "Deployment", "llama")
    assert m.get_va_for_pod("p3", "ns") == "va-llama"


def test_pod_owned_by_something_else_does_not_fall_back_to_its_name() -> None:
    m = mapper_with(("va", "ns", "web"))
    m.observe_pod_owner("web-0", "ns", "StatefulSet", "web")
    assert m.get_va_for_pod("web-0", "ns") is None
    m.observe_pod_owner("web-abc-def", "ns", None, None)
    assert m.get_va_for_pod("web-abc-def", "ns") is None
    m.forget_pod("web-abc-def", "ns")
    assert m.get_va_for_pod("web-abc-def", "ns") == "va"  # never observed now: name shape applies


def test_name_shape_fallback_longest_match_wins() -> None:
    m = mapper_with(("va-llama", "ns", "llama"), ("va-8b", "ns", "llama-8b"))
    assert m.get_va_for_pod("llama-8b-5d4f9c7b8-x2x4k", "ns") == "va-8b"
    assert m.get_va_for_pod("llama-5d4f9c7b8-x2x4k", "ns") == "va-llama"
    assert m.get_va_for_pod("llama-8b-0", "ns") == "va-8b"  # 2-part shape prefers the longer name
    assert m.get_va_for_pod("llama", "ns") is None
    assert m.get_va_for_pod("-x-y", "ns") is None


def test_name_shape_fallback_does_not_take_a_longer_deployment_for_a_shorter_one() -> None:
    # Upstream's prefix fallback maps a pod of "llama-8b" to "llama" when only "llama" is known.
    m = mapper_with(("va-llama", "ns", "llama"))
    assert m.get_va_for_pod("llama-8b-5d4f9c7b8-x2x4k", "ns") is None


def test_three_deployments_one_va() -> None:
    m = mapper_with(("va-b", "ns", "deploy-b"))
    for d in ("deploy-a", "deploy-b", "deploy-c"):
        m.observe_pod(f"{d}-1-x", "ns", d)
    assert [m.get_va_for_pod(f"{d}-1-x", "ns") for d in ("deploy-a", "deploy-b", "deploy-c")] == [
        None,
        "va-b",
        None,
    ]


def test_unregister_and_retarget() -> None:
    m = mapper_with(("va", "ns", "old"))
    m.observe_pod("old-1-a", "ns", "old")
    m.observe_pod("new-1-a", "ns", "new")
    m.register("va", "ns", "new")  # VA now scales another Deployment
    assert m.get_va_for_pod("old-1-a", "ns") is None
    assert m.get_va_for_pod("new-1-a", "ns") == "va"
    assert m.deployment_for_va("va", "ns") == "new"
    m.unregister("va", "ns")
    assert m.get_va_for_pod("new-1-a", "ns") is None and m.va_count() == len(m) == 0
    m.unregister("va", "ns")  # absent: no error


def test_unregistering_a_va_keeps_a_newer_claim_on_the_same_deployment() -> None:
    m = mapper_with(("first", "ns", "d"), ("second", "ns", "d"))
    m.unregister("first", "ns")
    m.observe_pod("p", "ns", "d")
    assert m.get_va_for_pod("p", "ns") == "second"


def test_concurrent_updates_and_lookups() -> None:
    m = PodVAMapper()
    barrier = threading.Barrier(8)
    wrong: list[str] = []

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(300):
            ns = f"ns{t}"
            m.register(f"va{i}", ns, f"d{i}")
            m.observe_pod(f"p{i}", ns, f"d{i}")
            if m.get_va_for_pod(f"p{i}", ns) != f"va{i}":
                wrong.append(f"{ns}/p{i}")
            if i % 3 == 0:
                m.forget_pod(f"p{i}", ns)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == [] and m.va_count() == 8 * 300
    assert m.get_va_for_pod("p1", "ns3") == "va1" and m.get_va_for_pod("d3-x", "ns5") == "va3"
