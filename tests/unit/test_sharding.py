"""Sharding: the assignment of model groups to shards (pure), and what a shard's operator does with it.

The assignment is a contract between processes that may run different wva versions during a rolling
upgrade, so sample owners are pinned here: an accidental change to the function fails this file first.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from test_engine import FakeCollector, FakeKube, deployment, va

from wva.actuator.metrics import MetricsEmitter
from wva.actuator.status import StatusWriter
from wva.inventory import Inventory
from wva.runtime import Runtime
from wva.saturation.config import SaturationConfigStore
from wva.saturation.engine import SaturationEngine
from wva.settings import Settings, SettingsError, with_shard_flags
from wva.sharding import (
    MAX_SHARDS,
    ORDINAL,
    ShardAssignment,
    jump_hash,
    ordinal_of,
    parse_shard_index,
    parse_shards,
    shard_key,
    shard_lease_name,
    shard_of,
)


# --- the assignment ---------------------------------------------------------------------------------
def test_jump_hash_matches_the_reference_vectors() -> None:
    """The vectors every jump-hash implementation is checked against (from the paper's reference code)."""
    assert [jump_hash(1, 1), jump_hash(42, 57), jump_hash(0xDEAD10CC, 1), jump_hash(0xDEAD10CC, 666),
            jump_hash(256, 1024)] == [0, 43, 0, 361, 520]
    with pytest.raises(ValueError, match="at least 1"):
        jump_hash(1, 0)


PINNED = {
    # (namespace, model): owner for K = 2, 3, 4, 5, 8, 16
    ("llm", "meta/llama-3.1-8b"): [0, 0, 0, 0, 5, 5],
    ("llm", "Qwen/Qwen3-0.6B"): [1, 1, 1, 1, 5, 5],
    ("prod", "mistralai/Mistral-7B-Instruct-v0.3"): [1, 1, 1, 1, 1, 1],
    ("default", ""): [0, 2, 2, 4, 4, 10],
}


@pytest.mark.parametrize(("group", "owners"), sorted(PINNED.items()))
def test_pinned_owners_never_change(group: tuple[str, str], owners: list[int]) -> None:
    namespace, model = group
    assert [shard_of(namespace, model, k) for k in (2, 3, 4, 5, 8, 16)] == owners
    assert shard_of(namespace, model, 1) == 0


def test_the_key_is_sha256_of_namespace_slash_model() -> None:
    import hashlib

    digest = hashlib.sha256(b"llm/meta/llama-3.1-8b").digest()
    assert shard_key("llm", "meta/llama-3.1-8b") == int.from_bytes(digest[:8], "big") == 14338280078427155355
    # the separator keeps pairs apart that a plain concatenation would merge
    assert shard_key("ab", "c") != shard_key("a", "bc")


def _groups(n: int) -> list[tuple[str, str]]:
    return [(f"ns-{i % 7}", f"org/model-{i}") for i in range(n)]


@pytest.mark.parametrize("shards", [2, 3, 5, 10])
def test_groups_spread_evenly(shards: int) -> None:
    counts = Counter(shard_of(ns, model, shards) for ns, model in _groups(9000))
    assert sorted(counts) == list(range(shards))
    expected = 9000 / shards
    sigma = (9000 * (1 / shards) * (1 - 1 / shards)) ** 0.5  # a binomial count's standard deviation
    assert all(abs(c - expected) < 4 * sigma for c in counts.values()), counts


def test_growing_by_one_shard_moves_only_its_share_and_only_to_the_new_shard() -> None:
    groups = _groups(6000)
    for shards in (1, 2, 3, 4, 7):
        moved = 0
        for ns, model in groups:
            before, after = shard_of(ns, model, shards), shard_of(ns, model, shards + 1)
            if before != after:
                assert after == shards, (ns, model, before, after)
                moved += 1
        share = len(groups) / (shards + 1)
        assert abs(moved - share) < 4 * (share * (1 - 1 / (shards + 1))) ** 0.5, (shards, moved)


def test_every_group_has_exactly_one_owner() -> None:
    assignments = [ShardAssignment(3, i) for i in range(3)]
    for ns, model in _groups(500):
        assert sum(a.owns(ns, model) for a in assignments) == 1


def test_one_shard_owns_everything_and_keeps_the_lease_name() -> None:
    single = ShardAssignment()
    assert not single.sharded and single.owns("any", "model") and str(single) == "0/1"
    assert single.lease_name("wva-leader") == "wva-leader"
    assert ShardAssignment(3, 2).lease_name("wva-leader") == "wva-leader-shard-2"
    assert shard_lease_name("x", 4, 0) == "x-shard-0"


@pytest.mark.parametrize(("shards", "index", "fragment"), [
    (0, 0, "from 1 to"), (MAX_SHARDS + 1, 0, "from 1 to"), (3, 3, "shard index 3 is out of range for 3"),
    (3, -1, "use 0 to 2"),
])
def test_an_assignment_is_validated(shards: int, index: int, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ShardAssignment(shards, index)


# --- parsing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [("1", 1), (" 3 ", 3), ("1024", 1024)])
def test_parse_shards(text: str, value: int) -> None:
    assert parse_shards(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "1025", "3.0", "", "three", "٣", "9" * 400])
def test_parse_shards_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="1 to 1024"):
        parse_shards(text)


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("2", 2), ("ordinal", ORDINAL), (" Ordinal ", ORDINAL)])
def test_parse_shard_index(text: str, value: int | str) -> None:
    assert parse_shard_index(text) == value


@pytest.mark.parametrize("text", ["-1", "x", "", "1.5", "1024", "9" * 400])
def test_parse_shard_index_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_shard_index(text)


@pytest.mark.parametrize(("pod", "ordinal"), [("wva-0", 0), ("wva-controller-12", 12), ("a-b-3", 3)])
def test_ordinal_of_a_statefulset_pod(pod: str, ordinal: int) -> None:
    assert ordinal_of(pod) == ordinal


@pytest.mark.parametrize("pod", ["wva", "wva-", "wva-01", "wva-controller-5d9f7c6b4-x2x7q", "wva-1a"])
def test_ordinal_of_refuses_other_names(pod: str) -> None:
    with pytest.raises(ValueError, match="does not end in -<ordinal>"):
        ordinal_of(pod)


# --- settings and flags ---------------------------------------------------------------------------------
def test_settings_default_to_one_shard() -> None:
    s = Settings.from_env({})
    assert (s.shards, s.shard_index) == (1, 0)


def test_settings_from_the_environment() -> None:
    s = Settings.from_env({"WVA_SHARDS": "3", "WVA_SHARD_INDEX": "2"})
    assert (s.shards, s.shard_index) == (3, 2)
    s = Settings.from_env({"WVA_SHARDS": "3", "WVA_SHARD_INDEX": "ordinal", "POD_NAME": "wva-1"})
    assert (s.shards, s.shard_index) == (3, 1)


@pytest.mark.parametrize(("env", "problem"), [
    ({"WVA_SHARDS": "0"}, "WVA_SHARDS='0': must be from 1 to 1024"),
    ({"WVA_SHARD_INDEX": "two"}, "WVA_SHARD_INDEX='two': must be a whole number from 0, or 'ordinal'"),
    ({"WVA_SHARD_INDEX": "2"}, "WVA_SHARD_INDEX=2 needs WVA_SHARDS of at least 3: shards are numbered from 0 and "
                               "WVA_SHARDS is 1 by default"),
    ({"WVA_SHARDS": "3", "WVA_SHARD_INDEX": "3"}, "WVA_SHARD_INDEX=3 needs WVA_SHARDS of at least 4"),
    ({"WVA_SHARDS": "3", "WVA_SHARD_INDEX": "ordinal", "POD_NAME": "wva-5"},
     "WVA_SHARD_INDEX=ordinal needs WVA_SHARDS of at least 6: pod 'wva-5' has ordinal 5"),
    ({"WVA_SHARDS": "3", "WVA_SHARD_INDEX": "ordinal", "POD_NAME": "wva-controller-5d9f7-x2x7q"},
     "WVA_SHARD_INDEX=ordinal needs POD_NAME to end in -<ordinal> (a StatefulSet pod's name, e.g. wva-2), "
     "got 'wva-controller-5d9f7-x2x7q'"),
])
def test_bad_sharding_settings_name_the_variable_and_the_value(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_a_bad_shard_count_is_reported_once_not_again_through_the_index() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"WVA_SHARDS": "x", "WVA_SHARD_INDEX": "5"})
    assert err.value.problems == ["WVA_SHARDS='x': must be a whole number from 1 to 1024"]


def test_flags_override_the_environment() -> None:
    env = Settings.from_env({"WVA_SHARDS": "2", "WVA_SHARD_INDEX": "1", "POD_NAME": "wva-2"})
    assert with_shard_flags(env, None, None) is env
    s = with_shard_flags(env, "3", "2")
    assert (s.shards, s.shard_index) == (3, 2)
    s = with_shard_flags(env, "3", None)  # the environment's index under the flag's count
    assert (s.shards, s.shard_index) == (3, 1)
    s = with_shard_flags(env, "4", "ordinal")
    assert (s.shards, s.shard_index) == (4, 2)


@pytest.mark.parametrize(("shards", "index", "problems"), [
    ("0", None, ["--shards='0': must be from 1 to 1024"]),
    ("x", "y", ["--shards='x': must be a whole number from 1 to 1024",
                "--shard-index='y': must be a whole number from 0, or 'ordinal' "
                "(the StatefulSet ordinal of POD_NAME)"]),
    (None, "2", ["--shard-index=2 needs WVA_SHARDS of at least 3: shards are numbered from 0 and WVA_SHARDS is 2"]),
    ("3", "5", ["--shard-index=5 needs --shards of at least 6: shards are numbered from 0 and --shards is 3"]),
    ("2", "ordinal", ["--shard-index=ordinal needs --shards of at least 3: pod 'wva-2' has ordinal 2, shards are "
                      "numbered from 0 and --shards is 2"]),
])
def test_bad_flags_name_the_flag_and_the_value(shards: str | None, index: str | None, problems: list[str]) -> None:
    env = Settings.from_env({"WVA_SHARDS": "2", "POD_NAME": "wva-2"})
    with pytest.raises(SettingsError) as err:
        with_shard_flags(env, shards, index)
    assert err.value.problems == problems


def test_wva_run_refuses_a_bad_shard_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from wva.cli import main

    monkeypatch.setenv("PROMETHEUS_BASE_URL", "http://prometheus.invalid:9090")
    monkeypatch.delenv("WVA_SHARDS", raising=False)
    assert main(["run", "--shards=3", "--shard-index=3"]) == 2
    assert "--shard-index=3 needs --shards of at least 4" in capsys.readouterr().err


# --- the inventory keeps only the shard's VAs -----------------------------------------------------------
def _model_for(shards: int, index: int, namespace: str = "llm", start: int = 0) -> str:
    """A model name whose group shard ``index`` of ``shards`` owns."""
    return next(f"org/m-{i}" for i in range(start, start + 1000) if shard_of(namespace, f"org/m-{i}", shards) == index)


def _va(name: str, model: str, acc: str = "A100", cost: str = "10.0", namespace: str = "llm") -> dict[str, Any]:
    body = va(name, cost=cost, acc=acc)
    body["metadata"]["namespace"] = namespace
    body["spec"]["modelID"] = model
    return body


def test_the_inventory_holds_only_its_shards_vas_and_counts_their_groups() -> None:
    ours, theirs = _model_for(3, 1), _model_for(3, 2)
    inventory = Inventory(shard=ShardAssignment(3, 1))
    assert inventory.apply_variant(_va("a-l4", ours, acc="L4")) is not None
    assert inventory.apply_variant(_va("a-h100", ours, acc="H100")) is not None
    assert inventory.apply_variant(_va("b", theirs)) is None
    assert [r.name for r in inventory.variants()] == ["a-l4", "a-h100"]
    assert inventory.model_groups == 1 and inventory.sizes()["model_groups"] == 1
    # the model of a VA changes to another shard's: it leaves, with its pod mapping
    assert inventory.apply_variant(_va("a-h100", theirs, acc="H100")) is None
    assert inventory.variant("llm", "a-h100") is None and inventory.model_groups == 1
    assert inventory.mapper.get_va_for_pod("a-h100-5d9f7c6b4-x2x7q", "llm") is None
    # ... and back
    assert inventory.apply_variant(_va("a-h100", ours, acc="H100")) is not None
    inventory.delete_variant("llm", "a-l4")
    inventory.delete_variant("llm", "a-h100")
    assert inventory.model_groups == 0 and inventory.variants() == []


def test_a_foreign_va_is_not_even_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    import wva.inventory

    parsed: list[str] = []
    real = wva.inventory.parse_variant

    def counting(body: Any) -> Any:
        parsed.append(body["metadata"]["name"])
        return real(body)

    monkeypatch.setattr(wva.inventory, "parse_variant", counting)
    inventory = Inventory(shard=ShardAssignment(3, 0))
    assert inventory.apply_variant(_va("ours", _model_for(3, 0))) is not None
    assert inventory.apply_variant(_va("theirs", _model_for(3, 1))) is None
    assert parsed == ["ours"]


# --- three engines, one per shard, over the same fleet ---------------------------------------------------
def _shard_env(shards: int, index: int, direct: bool = False) -> tuple[SaturationEngine, Inventory, FakeCollector,
                                                                        FakeKube]:
    inventory = Inventory(shard=ShardAssignment(shards, index))
    kube, collector = FakeKube(), FakeCollector()
    writer = StatusWriter(kube, inventory, backoff=0.001)  # type: ignore[arg-type]
    engine = SaturationEngine(inventory, collector, SaturationConfigStore(), writer, MetricsEmitter(),
                              kube, direct_actuation=direct, group_by_accelerator=False)  # type: ignore[arg-type]
    return engine, inventory, collector, kube


FLEET = [(f"ns-{m % 2}", f"org/model-{m}") for m in range(9)]


def _feed(inventory: Inventory, collector: FakeCollector) -> list[tuple[str, str, str]]:
    """Nine models, two variants each (L4 cheap, H100 dear); every pod saturated. Returns (ns, va, model)."""
    vas = []
    for ns, model in FLEET:
        for acc, cost in (("L4", "5"), ("H100", "20")):
            name = f"{model.split('/')[1]}-{acc.lower()}"
            inventory.apply_variant(_va(name, model, acc=acc, cost=cost, namespace=ns))
            dep = deployment(name, 1)
            dep["metadata"]["namespace"] = ns
            inventory.apply_deployment(dep)
            collector.kv[name] = [0.95]
            vas.append((ns, name, model))
    return vas


async def test_each_va_is_decided_written_and_scaled_by_exactly_one_shard() -> None:
    shards = [_shard_env(3, i, direct=True) for i in range(3)]
    all_vas: list[tuple[str, str, str]] = []
    for _engine, inventory, collector, _kube in shards:
        all_vas = _feed(inventory, collector)
    decided: Counter[tuple[str, str]] = Counter()
    for index, (engine, inventory, _collector, kube) in enumerate(shards):
        report = await engine.run_cycle()
        assert not report.group_errors
        for (ns, name), _decision in report.decisions.items():
            decided[(ns, name)] += 1
        models = {record.model_id for record in inventory.variants()}
        assert all(shard_of(ns, model, 3) == index for ns, model in {(r.namespace, r.model_id)
                                                                     for r in inventory.variants()})
        # both variants of each of its models together: the cost-based choice saw them both
        assert len(inventory.variants()) == 2 * len(models)
        assert set(kube.status) == {(ns, name) for ns, name, model in all_vas if model in models}
        # saturated: one step up per model group, on its cheapest variant only
        assert set(kube.scaled) == {(ns, f"{m.split('/')[1]}-l4") for ns, m in FLEET if m in models}
        assert set(engine.emitter.series()) == set(kube.status)
        assert engine.emitter.operator.config_errors.labels("variant")._value.get() == 0
    assert sorted(decided) == sorted((ns, name) for ns, name, _model in all_vas)
    assert set(decided.values()) == {1}
    assert sorted(len(inv.variants()) for _e, inv, _c, _k in shards) != [0, 0, 18]  # spread, not all on one


async def test_scale_from_zero_lists_only_the_shards_models() -> None:
    engines = [_shard_env(3, i) for i in range(3)]
    for engine, inventory, collector, _kube in engines:
        _feed(inventory, collector)
        for record in inventory.variants():
            dep = deployment(record.deployment_name, 0)
            dep["metadata"]["namespace"] = record.namespace
            inventory.apply_deployment(dep)
        engine.config_store.update({"default": "scaleToZero: true\n"})
    listed = [engine.zero_groups() for engine, _i, _c, _k in engines]
    assert sorted(m for one in listed for _ns, m, _dep in one) == sorted(m for _ns, m in FLEET)
    for index, one in enumerate(listed):
        assert all(shard_of(ns, model, 3) == index for ns, model, _dep in one)


# --- the runtime: its Lease, its gauges, its log line ---------------------------------------------------------
def _runtime(env: dict[str, str]) -> Runtime:
    from operator_harness import OPERATOR_NAMESPACE
    from reliability.support import AcceptingKube, PodPerModelProm

    settings = Settings.from_env({"PROMETHEUS_BASE_URL": "http://prometheus.invalid:9090",
                                  "POD_NAMESPACE": OPERATOR_NAMESPACE, "POD_NAME": "wva-1", **env})
    return Runtime.build(settings, prom=PodPerModelProm("ns"), kube=AcceptingKube(),  # type: ignore[arg-type]
                         serve_http=False, run_engine_loop=False)


def test_each_shard_competes_for_its_own_lease_and_says_which_shard_it_is() -> None:
    single = _runtime({})
    assert single.elector is not None and single.elector.name == "wva-leader"
    assert single.emitter.value("wva_shard_info", shard_index="0", shards="1") == 1
    sharded = _runtime({"WVA_SHARDS": "3", "WVA_SHARD_INDEX": "ordinal", "LEADER_ELECTION_LEASE_NAME": "wva"})
    assert sharded.elector is not None and sharded.elector.name == "wva-shard-1"
    assert sharded.emitter.value("wva_shard_info", shard_index="1", shards="3") == 1
    assert sharded.emitter.value("wva_shard_groups") == 0
    ours, theirs = _model_for(3, 1), _model_for(3, 0)
    sharded.inventory.apply_variant(_va("a", ours))
    sharded.inventory.apply_variant(_va("b", ours, acc="L4"))
    sharded.inventory.apply_variant(_va("c", theirs))
    assert sharded.emitter.value("wva_shard_groups") == 1  # computed when scraped
    sharded.emitter.clear()  # a standby's clear keeps who it is
    assert sharded.emitter.value("wva_shard_info", shard_index="1", shards="3") == 1


async def test_every_write_carries_the_shards_field_manager() -> None:
    """So the server's managedFields say which shard wrote a VA's status or scaled a Deployment."""
    from kubernetes import client as k8s

    from wva.kube import KubeClient

    kube = KubeClient(k8s.ApiClient(), field_manager=ShardAssignment(3, 2).field_manager)
    seen: dict[str, Any] = {}

    def recorder(call: str) -> Any:
        def record(*_args: Any, **kwargs: Any) -> dict[str, Any]:
            seen[call] = kwargs.get("field_manager")
            return {}
        return record

    kube.custom.patch_namespaced_custom_object_status = recorder("status")  # type: ignore[method-assign]
    kube.apps.patch_namespaced_deployment_scale = recorder("scale")  # type: ignore[method-assign]
    kube.core.patch_namespaced_pod = recorder("pod")  # type: ignore[method-assign]
    kube.core.create_namespaced_event = recorder("event")  # type: ignore[method-assign]
    kube.coordination.create_namespaced_lease = recorder("lease-create")  # type: ignore[method-assign]
    kube.coordination.patch_namespaced_lease = recorder("lease-patch")  # type: ignore[method-assign]
    try:
        await kube.patch_va_status("llm", "a", {"conditions": []})
        await kube.patch_deployment_scale("llm", "a", 2)
        await kube.patch_pod_annotations("llm", "a-1", {"x": "1"})
        await kube.create_event({"name": "a", "namespace": "llm"}, "ScaledUp", "up")
        await kube.create_lease("wva", {})
        await kube.patch_lease("wva", "wva-leader-shard-2", {})
    finally:
        kube.close()
    assert seen == dict.fromkeys(["status", "scale", "pod", "event", "lease-create", "lease-patch"], "wva-shard-2")
    assert ShardAssignment().field_manager == "wva"


def test_the_runtime_names_its_writes_after_its_shard() -> None:
    settings = Settings.from_env({"PROMETHEUS_BASE_URL": "http://prometheus.invalid:9090", "WVA_SHARDS": "3",
                                  "WVA_SHARD_INDEX": "1", "WVA_KUBE_API_URL": "http://127.0.0.1:9"})
    runtime = Runtime.build(settings, serve_http=False, run_engine_loop=False)
    try:
        assert runtime.kube._writer == {"field_manager": "wva-shard-1"}
    finally:
        runtime.kube.close()
