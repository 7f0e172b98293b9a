"""When a model group may keep last cycle's decision instead of deciding again.

A group is decided again only when something the decision depends on changed. The decision is a pure
function of the group's configuration, its variants as Kubernetes reports them (:class:`VariantInput`),
the replicas' signals, the metrics availability, the idle and wake flags and the group's history. The
history is what makes reuse subtle: stabilisation, pending-replica and cold-start timers and the
falling-load guard change a decision by the clock alone. So only a *quiet* decision is reused: every
variant decided, held where it is (target = current replicas = previous decision), by the ``steady``
rule, with no guard in play, no replica pending, no shadow configuration and scale-to-zero off. For such a decision,
:func:`~wva.decisions.decide.next_history` leaves the history as it was, so deciding again on equal
inputs yields the same targets, codes and messages: only the record's time and ID would differ.

Freshness still advances by the clock: the collector judges every cycle whether samples are fresh,
and its verdict (each replica's freshness status, which signals are known, the availability) is part
of the inputs, so data turning stale is a change like any other.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from wva.collector.types import MetricsValidationResult, ReplicaMetrics
from wva.decisions import GroupDecision, VariantInput
from wva.decisions.decide import pending_replicas
from wva.saturation.config import SaturationScalingConfig

__all__ = ["decision_inputs", "is_quiet", "same_config"]


def decision_inputs(
    variants: Sequence[VariantInput],
    replicas: Sequence[ReplicaMetrics] | None,
    availability: MetricsValidationResult,
    error: str | None,
    source: str | None,
    idle: bool | None,
    woken: bool,
) -> Hashable:
    """Everything a group's decision reads this cycle except its configuration and history, as one
    comparable value (the configuration is compared on its own: mostly by identity, which is cheap)."""
    rows = tuple(
        (r.pod_name, r.variant_name, r.kv_cache_usage, r.queue_length, r.kv_known, r.queue_known,
         r.accelerator_name, r.cost, r.metadata.freshness_status if r.metadata is not None else None,
         r.metadata.source if r.metadata is not None else None)
        for r in replicas or ()
    )
    return (tuple(variants), rows, availability.available, availability.reason, error, source, idle, woken)


def is_quiet(decision: GroupDecision, config: SaturationScalingConfig) -> bool:
    """Whether ``decision`` may be reused while its inputs stay equal (see the module's docstring)."""
    record = decision.record
    if config.scale_to_zero or config.shadow is not None or record.shadow is not None:
        return False
    if record.rule != "steady" or record.guards or record.analysis is None:
        return False
    if not all(o.decided and o.target == o.current and o.previous_desired == o.target for o in record.outcomes):
        return False
    # replicas on the way start a timer (stuck after pendingStuckAfter): such a group is decided every cycle
    return all(pending_replicas(record, v.name) == 0 for v in record.variants)


def same_config(previous: SaturationScalingConfig, current: SaturationScalingConfig) -> bool:
    return previous is current or previous == current
