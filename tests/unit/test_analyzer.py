"""The saturation analyzer against upstream's test vectors and a few properties of its targets."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wva.collector.types import ReplicaMetrics
from wva.saturation.analyzer import (
    ModelSaturationAnalysis,
    VariantReplicaState,
    VariantSaturationAnalysis,
    analyze_model_saturation,
    calculate_saturation_targets,
    clamp_target,
)
from wva.saturation.config import SaturationScalingConfig

C0 = SaturationScalingConfig(
    kv_cache_threshold=0.80, queue_length_threshold=5, kv_spare_trigger=0.10, queue_spare_trigger=3
)


def replica(variant: str, kv: float, queue: int, *, pod: str = "", cost: float = 10.0) -> ReplicaMetrics:
    return ReplicaMetrics(
        pod_name=pod or f"{variant}-pod-{kv}-{queue}",
        kv_cache_usage=kv,
        queue_length=queue,
        variant_name=variant,
        namespace="ns",
        model_id="model",
        accelerator_name="A100",
        cost=cost,
    )


def replicas_of(variant: str, *samples: tuple[float, int], cost: float = 10.0) -> list[ReplicaMetrics]:
    return [replica(variant, kv, q, pod=f"{variant}-{i}", cost=cost) for i, (kv, q) in enumerate(samples)]


@dataclass(frozen=True)
class AnalysisVector:
    replicas: list[ReplicaMetrics]
    spare_kv: float
    spare_queue: float
    scale_up: bool
    down_safe: bool
    reason: str = ""


ANALYSIS_VECTORS = {
    "A1": AnalysisVector(
        replicas_of("v1", (0.75, 2), (0.76, 2)), 0.045, 3.0, True, False,
        "KV spare Saturation low (0.045 < 0.100)",
    ),
    "A2": AnalysisVector(
        replicas_of("v1", (0.50, 3), (0.50, 3)), 0.30, 2.0, True, False,
        "queue spare Saturation low (2.0 < 3.0)",
    ),
    "A3": AnalysisVector(replicas_of("v1", (0.50, 1), (0.50, 1)), 0.30, 4.0, False, False),
    "A4": AnalysisVector(replicas_of("v1", (0.20, 1), (0.30, 1), (0.25, 1)), 0.55, 4.0, False, True),
    "A5": AnalysisVector(
        replicas_of("v1", (0.70, 2), (0.75, 2)), 0.075, 3.0, True, False,
        "KV spare Saturation low (0.075 < 0.100)",
    ),
    "A6": AnalysisVector(replicas_of("v1", (0.50, 2)), 0.30, 3.0, False, False),
    "A7": AnalysisVector(
        replicas_of("variant-1", (0.70, 2), (0.75, 3)) + replicas_of("variant-2", (0.60, 1), (0.65, 2)),
        0.125, 3.0, False, False,
    ),
    "A8": AnalysisVector([], 0.0, 0.0, False, False),
    "A10": AnalysisVector(
        replicas_of("v1", (0.85, 2), (0.50, 6), (0.90, 7)), 0.0, 0.0, True, False,
        "both KV spare (0.000 < 0.100) and queue spare (0.0 < 3.0)",
    ),
    # Documentation examples checked against the algorithm (spec section 5.7).
    "D1": AnalysisVector(
        replicas_of("variant-1", (0.70, 2), (0.75, 3), cost=20)
        + replicas_of("variant-2", (0.60, 1), (0.65, 2), (0.55, 1), cost=15),
        0.15, 3.2, False, False,
    ),
    "D2": AnalysisVector(replicas_of("v1", (0.65, 0), (0.72, 0)), 0.115, 5.0, False, False),
}


@pytest.mark.parametrize("vector", ANALYSIS_VECTORS.values(), ids=ANALYSIS_VECTORS.keys())
def test_analysis_vectors(vector: AnalysisVector) -> None:
    result = analyze_model_saturation("model", "ns", vector.replicas, C0, now=1000.0)

    assert result.avg_spare_kv_capacity == pytest.approx(vector.spare_kv, abs=1e-12)
    assert result.avg_spare_queue_length == pytest.approx(vector.spare_queue, abs=1e-12)
    assert result.should_scale_up is vector.scale_up
    assert result.scale_down_safe is vector.down_safe
    assert result.scale_up_reason == vector.reason
    assert result.total_replicas == len(vector.replicas)
    assert result.analyzed_at == 1000.0
    assert (result.model_id, result.namespace) == ("model", "ns")


def test_a7_counts_per_variant() -> None:
    replicas = replicas_of("variant-1", (0.70, 2), (0.75, 3)) + replicas_of("variant-2", (0.60, 1), (0.65, 2))
    result = analyze_model_saturation("model", "ns", replicas, C0)

    assert (result.total_replicas, result.non_saturated_count) == (4, 4)
    assert [v.variant_name for v in result.variant_analyses] == ["variant-1", "variant-2"]
    assert [v.replica_count for v in result.variant_analyses] == [2, 2]
    v1, v2 = result.variant_analyses
    assert v1.avg_spare_kv_capacity == pytest.approx(0.075)
    assert v2.avg_spare_kv_capacity == pytest.approx(0.175)
    assert v1.avg_spare_queue_length == pytest.approx(2.5)
    assert v2.avg_spare_queue_length == pytest.approx(3.5)


def test_a8_empty_input_has_no_variants() -> None:
    result = analyze_model_saturation("model", "ns", [], C0)
    assert result.total_replicas == 0
    assert result.variant_analyses == []


def test_a9_variant_classification() -> None:
    replicas = [
        replica("v1", 0.85, 2, pod="pod-1", cost=7.5),  # saturated by KV
        replica("v1", 0.50, 6, pod="pod-2", cost=7.5),  # saturated by queue
        replica("v1", 0.60, 2, pod="pod-3", cost=7.5),
    ]
    (variant,) = analyze_model_saturation("model", "ns", replicas, C0).variant_analyses

    assert variant.replica_count == 3
    assert variant.non_saturated_count == 1
    assert variant.saturated_replicas == ["pod-1", "pod-2"]
    assert variant.avg_spare_kv_capacity == pytest.approx(0.20)
    assert variant.avg_spare_queue_length == 3.0
    assert variant.max_kv_cache_usage == 0.85
    assert variant.max_queue_length == 6
    assert (variant.accelerator_name, variant.cost) == ("A100", 7.5)


def test_a10_all_saturated_counts() -> None:
    result = analyze_model_saturation(
        "model", "ns", replicas_of("v1", (0.85, 2), (0.50, 6), (0.90, 7)), C0
    )
    assert (result.total_replicas, result.non_saturated_count) == (3, 0)
    assert result.variant_analyses[0].saturated_replicas == ["v1-0", "v1-1", "v1-2"]


def test_a11_analyzed_at_is_the_current_time() -> None:
    before = time.time()
    result = analyze_model_saturation("model", "ns", replicas_of("v1", (0.50, 2)), C0)
    after = time.time()
    assert before <= result.analyzed_at <= after


def test_d2_boundary_average_is_not_below_the_trigger() -> None:
    """0.15 and 0.05 spare average to 0.10000000000000003 in IEEE doubles: no scale-up (doc says yes)."""
    result = analyze_model_saturation("model", "ns", replicas_of("v1", (0.65, 0), (0.75, 0)), C0)
    assert result.avg_spare_kv_capacity == 0.10000000000000003
    assert result.should_scale_up is False
    assert result.scale_up_reason == ""


def test_thresholds_are_inclusive_for_saturation() -> None:
    result = analyze_model_saturation("model", "ns", replicas_of("v1", (0.80, 0), (0.10, 5), (0.10, 4)), C0)
    assert result.variant_analyses[0].saturated_replicas == ["v1-0", "v1-1"]
    assert result.non_saturated_count == 1


def test_all_zero_config_saturates_everything_without_scaling() -> None:
    zero = SaturationScalingConfig(
        kv_cache_threshold=0, queue_length_threshold=0, kv_spare_trigger=0, queue_spare_trigger=0
    )
    result = analyze_model_saturation("model", "ns", replicas_of("v1", (0.0, 0), (0.3, 1)), zero)
    assert result.non_saturated_count == 0
    assert (result.should_scale_up, result.scale_down_safe) == (False, False)


def variant(name: str, cost: float, replica_count: int) -> VariantSaturationAnalysis:
    return VariantSaturationAnalysis(variant_name=name, cost=cost, replica_count=replica_count)


def model(
    *variants: VariantSaturationAnalysis, up: bool = False, down: bool = False
) -> ModelSaturationAnalysis:
    return ModelSaturationAnalysis(
        model_id="model",
        namespace="ns",
        should_scale_up=up,
        scale_down_safe=down,
        variant_analyses=list(variants),
    )


THREE = (variant("v1-expensive", 20, 2), variant("v2-cheap", 5, 2), variant("v3-medium", 15, 2))
ALL_TWO = [VariantReplicaState(v.variant_name, 2) for v in THREE]

TargetVector = tuple[ModelSaturationAnalysis | None, list[VariantReplicaState], dict[str, int]]
TARGET_VECTORS: dict[str, TargetVector] = {
    "T1": (model(*THREE, up=True), ALL_TWO, {"v2-cheap": 3, "v1-expensive": 2, "v3-medium": 2}),
    "T2": (model(*THREE, down=True), ALL_TWO, {"v1-expensive": 1, "v2-cheap": 2, "v3-medium": 2}),
    "T3": (
        model(variant("v1-expensive", 20, 2), variant("v2-cheap", 5, 2), up=True),
        [VariantReplicaState("v1-expensive", 2, 4), VariantReplicaState("v2-cheap", 2, 0)],
        {"v1-expensive": 4, "v2-cheap": 3},
    ),
    "T4": (
        model(variant("b", 10, 2), variant("a", 10, 2), up=True),
        [VariantReplicaState("b", 2), VariantReplicaState("a", 2)],
        {"a": 3, "b": 2},
    ),
    "T5": (
        model(variant("b", 10, 2), variant("a", 10, 2), down=True),
        [VariantReplicaState("b", 2), VariantReplicaState("a", 2)],
        {"b": 1, "a": 2},
    ),
    "T6": (
        model(variant("exp", 20, 1), variant("cheap", 5, 3), down=True),
        [VariantReplicaState("exp", 1), VariantReplicaState("cheap", 3)],
        {"exp": 1, "cheap": 2},
    ),
    "T7": (model(variant("a", 10, 2), up=True), [VariantReplicaState("a", 3)], {"a": 4}),
    "T8": (model(variant("a", 10, 3), up=True), [VariantReplicaState("a", 3, 3)], {"a": 4}),
    "T9": (model(variant("a", 10, 2), up=True), [VariantReplicaState("a", 2, 5)], {"a": 5}),
    "T10": (None, [VariantReplicaState("a", 3), VariantReplicaState("b", 1)], {"a": 3, "b": 1}),
    "T11": (model(variant("a", 10, 2), up=True), [], {"a": 1}),
    # Both signals at once: scale-up has priority.
    "up-beats-down": (
        model(*THREE, up=True, down=True), ALL_TWO, {"v2-cheap": 3, "v1-expensive": 2, "v3-medium": 2}
    ),
    # An analysis without variants behaves like no analysis at all.
    "no-variants": (model(up=True), [VariantReplicaState("a", 3, 4)], {"a": 3}),
}


@pytest.mark.parametrize(
    ("analysis", "states", "expected"), TARGET_VECTORS.values(), ids=TARGET_VECTORS.keys()
)
def test_target_vectors(
    analysis: ModelSaturationAnalysis | None, states: list[VariantReplicaState], expected: dict[str, int]
) -> None:
    assert calculate_saturation_targets(analysis, states) == expected


def test_targets_cover_only_variants_with_metrics() -> None:
    analysis = model(variant("a", 10, 2), up=True)
    states = [VariantReplicaState("a", 2), VariantReplicaState("silent", 4)]
    assert calculate_saturation_targets(analysis, states) == {"a": 3}


@pytest.mark.parametrize(
    ("target", "lo", "hi", "expected"),
    [(3, 1, None, 3), (0, 1, None, 1), (12, 1, 10, 10), (5, 2, 10, 5), (0, 0, 4, 0), (7, 6, 4, 4)],
)
def test_clamp_target(target: int, lo: int, hi: int | None, expected: int) -> None:
    assert clamp_target(target, lo, hi) == expected


# --- properties ------------------------------------------------------------------------------

NAMES = ["a", "b", "c", "d", "e"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ModelSaturationAnalysis, list[VariantReplicaState]]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    variants = [
        variant(n, draw(st.sampled_from([5.0, 10.0, 20.0])), draw(st.integers(1, 5))) for n in names
    ]
    states = [
        VariantReplicaState(n, draw(st.integers(0, 6)), draw(st.integers(0, 8)))
        for n in names
        if draw(st.booleans()) or draw(st.booleans())  # mostly present, sometimes missing
    ]
    return model(*variants, up=draw(st.booleans()), down=draw(st.booleans())), states


def base_and_preserved(
    analysis: ModelSaturationAnalysis, states: list[VariantReplicaState]
) -> tuple[dict[str, int], set[str]]:
    """The target before any ±1 step, computed independently of the implementation."""
    by_name = {s.variant_name: s for s in states}
    base: dict[str, int] = {}
    preserved: set[str] = set()
    for v in analysis.variant_analyses:
        s = by_name.get(v.variant_name, VariantReplicaState(v.variant_name, 0, 0))
        if s.desired_replicas not in (0, s.current_replicas):
            base[v.variant_name] = s.desired_replicas
            preserved.add(v.variant_name)
        else:
            base[v.variant_name] = s.current_replicas
    return base, preserved


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_property_one_step_on_one_variant(
    scenario: tuple[ModelSaturationAnalysis, list[VariantReplicaState]],
) -> None:
    analysis, states = scenario
    targets = calculate_saturation_targets(analysis, states)
    base, preserved = base_and_preserved(analysis, states)

    assert targets.keys() == base.keys()
    changed = {n: targets[n] - base[n] for n in targets if targets[n] != base[n]}
    assert len(changed) <= 1
    assert all(delta in (1, -1) for delta in changed.values())
    for name, delta in changed.items():
        assert name not in preserved
        if delta == -1:
            assert targets[name] >= 1
            assert analysis.scale_down_safe and not analysis.should_scale_up
        else:
            assert analysis.should_scale_up


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_property_cost_picks_the_variant(
    scenario: tuple[ModelSaturationAnalysis, list[VariantReplicaState]],
) -> None:
    analysis, states = scenario
    targets = calculate_saturation_targets(analysis, states)
    base, preserved = base_and_preserved(analysis, states)
    movable = [v for v in analysis.variant_analyses if v.variant_name not in preserved]

    if analysis.should_scale_up and movable:
        cheapest = min(movable, key=lambda v: (v.cost, v.variant_name)).variant_name
        assert targets[cheapest] == base[cheapest] + 1
    elif analysis.scale_down_safe and not analysis.should_scale_up:
        shrinkable = [v for v in movable if base[v.variant_name] > 1]
        if shrinkable:
            priciest = max(shrinkable, key=lambda v: (v.cost, v.variant_name)).variant_name
            assert targets[priciest] == base[priciest] - 1
        else:
            assert targets == base
    else:
        assert targets == base


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(NAMES), st.floats(0, 1), st.integers(0, 10)), min_size=1, max_size=12
    )
)
def test_property_classification_partitions_replicas(samples: list[tuple[str, float, int]]) -> None:
    replicas = [replica(n, kv, q, pod=f"p{i}") for i, (n, kv, q) in enumerate(samples)]
    result = analyze_model_saturation("model", "ns", replicas, C0)

    saturated = {p for v in result.variant_analyses for p in v.saturated_replicas}
    expected = {r.pod_name for r in replicas if r.kv_cache_usage >= 0.8 or r.queue_length >= 5}
    assert saturated == expected
    assert result.non_saturated_count == len(replicas) - len(expected)
    assert sum(v.replica_count for v in result.variant_analyses) == result.total_replicas == len(replicas)
    if result.non_saturated_count < 2:
        assert result.scale_down_safe is False
    if result.non_saturated_count == 0:
        assert (result.avg_spare_kv_capacity, result.avg_spare_queue_length) == (0.0, 0.0)


# Binary-exact thresholds, so the boundary cases below are exact equalities in IEEE doubles.
EXACT = SaturationScalingConfig(
    kv_cache_threshold=0.75, queue_length_threshold=5, kv_spare_trigger=0.25, queue_spare_trigger=3
)


@pytest.mark.parametrize(
    ("samples", "safe"),
    [
        ([(0.25, 0), (0.25, 0), (0.5, 0)], True),  # kv spare after = 0.75 - 1.0/2 = 0.25 == trigger
        ([(0.25, 0), (0.25, 0), (0.5, 1)], True),
        ([(0.0, 2), (0.0, 1), (0.0, 1)], True),  # queue spare after = 5 - 4/2 = 3 == trigger
        ([(0.0, 2), (0.0, 2), (0.0, 1)], False),  # queue spare after = 2.5 < 3
        ([(0.25, 0), (0.25, 0), (0.5625, 0)], False),  # kv spare after = 0.21875 < 0.25
    ],
)
def test_scale_down_comparisons_are_inclusive(samples: list[tuple[float, int]], safe: bool) -> None:
    result = analyze_model_saturation("model", "ns", replicas_of("v1", *samples), EXACT)
    assert result.scale_down_safe is safe


def test_scale_up_comparisons_are_strict() -> None:
    at_trigger = analyze_model_saturation("model", "ns", replicas_of("v1", (0.5, 2)), EXACT)
    assert at_trigger.avg_spare_kv_capacity == 0.25
    assert at_trigger.should_scale_up is False
    below = analyze_model_saturation("model", "ns", replicas_of("v1", (0.5625, 2)), EXACT)
    assert below.scale_up_reason == "KV spare Saturation low (0.188 < 0.250)"


def test_scale_down_ignores_saturated_replicas_load() -> None:
    # Two idle replicas and one saturated one: only the idle ones' load is redistributed.
    replicas = replicas_of("v1", (0.0, 0), (0.0, 0), (0.99, 50))
    result = analyze_model_saturation("model", "ns", replicas, C0)
    assert result.scale_down_safe is True
    assert result.should_scale_up is False


def test_worked_example_of_the_scaling_algorithm_doc() -> None:
    """The two-cycle example in docs/scaling-algorithm.md, number for number."""
    replicas = [
        replica("llama-h100", 0.72, 1, pod="h100-a", cost=40),
        replica("llama-h100", 0.78, 2, pod="h100-b", cost=40),
        replica("llama-l40s", 0.70, 3, pod="l40s-a", cost=15),
        replica("llama-l40s", 0.85, 0, pod="l40s-b", cost=15),
    ]
    analysis = analyze_model_saturation("meta/llama-3-8b", "prod", replicas, C0)
    h100, l40s = analysis.variant_analyses

    assert l40s.saturated_replicas == ["l40s-b"]
    assert (h100.avg_spare_kv_capacity, h100.avg_spare_queue_length) == (pytest.approx(0.05), 3.5)
    assert (l40s.avg_spare_kv_capacity, l40s.avg_spare_queue_length) == (pytest.approx(0.10), 2.0)
    assert analysis.non_saturated_count == 3
    assert analysis.avg_spare_kv_capacity == pytest.approx(0.2 / 3)
    assert analysis.avg_spare_queue_length == 3.0
    assert analysis.scale_up_reason == "KV spare Saturation low (0.067 < 0.100)"
    assert analysis.scale_down_safe is False

    cycle1 = [VariantReplicaState("llama-h100", 2), VariantReplicaState("llama-l40s", 2)]
    assert calculate_saturation_targets(analysis, cycle1) == {"llama-h100": 2, "llama-l40s": 3}

    # Next cycle, same load, the new L40S pod is not up yet: its decision is held, H100 grows.
    cycle2 = [VariantReplicaState("llama-h100", 2, 2), VariantReplicaState("llama-l40s", 2, 3)]
    assert calculate_saturation_targets(analysis, cycle2) == {"llama-h100": 3, "llama-l40s": 3}
    assert clamp_target(3, 1, 2) == 2


# --- wva's bounds: a variant at its limit hands the step to the next one -------------------------

def _bounded_analysis(up: bool, down: bool) -> ModelSaturationAnalysis:
    return ModelSaturationAnalysis(
        model_id="m", namespace="ns", total_replicas=4, should_scale_up=up, scale_down_safe=down,
        variant_analyses=[
            VariantSaturationAnalysis("cheap", cost=5.0, replica_count=2),
            VariantSaturationAnalysis("pricey", cost=20.0, replica_count=2),
        ],
    )


def test_scale_up_skips_a_variant_at_its_max_replicas() -> None:
    states = [VariantReplicaState("cheap", 2), VariantReplicaState("pricey", 2)]
    bounds = {"cheap": (1, 2), "pricey": (1, None)}
    assert calculate_saturation_targets(_bounded_analysis(True, False), states, bounds) == {"cheap": 2, "pricey": 3}
    # without bounds the rule is upstream's: the cheapest takes the step
    assert calculate_saturation_targets(_bounded_analysis(True, False), states) == {"cheap": 3, "pricey": 2}


def test_scale_down_skips_a_variant_at_its_min_replicas() -> None:
    states = [VariantReplicaState("cheap", 2), VariantReplicaState("pricey", 2)]
    bounds = {"cheap": (1, None), "pricey": (2, None)}
    assert calculate_saturation_targets(_bounded_analysis(False, True), states, bounds) == {"cheap": 1, "pricey": 2}


def test_every_variant_at_its_max_means_no_step() -> None:
    states = [VariantReplicaState("cheap", 2), VariantReplicaState("pricey", 2)]
    bounds = {"cheap": (1, 2), "pricey": (1, 2)}
    assert calculate_saturation_targets(_bounded_analysis(True, False), states, bounds) == {"cheap": 2, "pricey": 2}
