"""``wva backtest``: the engine replayed over recorded signals, with simulated replicas.

:func:`replay` walks a :class:`~wva.replay.history.SignalHistory` step by step and, at every step,
calls the engine's own decision function (:func:`wva.decisions.decide_group`) on a simulated
cluster, applies the targets to it, and keeps what happened. Pure: no I/O, no clock; the same
history and model file always give the same result.

Simulated replicas. Each variant starts with ``initialReplicas`` ready replicas. A scale-up adds
*pending* replicas that become ready ``startup_delay`` seconds later (with 0, at the next step); a
scale-down removes pending replicas first (the youngest first), then ready ones. The engine is
given what Kubernetes would show it: ``current_replicas`` = ready + pending (the Deployment's
count), ``previous_desired`` = the last target, and metrics from the ready replicas only.

Load model. The recorded history says how loaded the pods that really ran were, not how loaded
the simulated ones would be. At each step the recorded model load is the sum, over every recorded
pod of the model, of its KV-cache usage and of its queue length; it is spread evenly over the
simulated ready replicas of all variants (a load-aware gateway spreads load across all pods)::

    kv per replica    = min(1, total_kv / ready)
    queue per replica = round(total_queue / ready)

Limits: KV usage is treated as additive capacity (a pod of a bigger accelerator counts the same as
a small one), load beyond the recorded pods' capacity is capped at 1.0 (requests that were never
admitted are not in the history), and the simulated replicas do not change the recorded load (no
feedback: more replicas do not shorten a queue that had already formed).

Unknown steps. A step where no recorded pod reported either signal is unknown, never zero load:
the engine gets no replicas and holds (``HoldMetricsUnavailable``). If only one signal is missing,
it is passed as unknown, as the collector does. A step with load but no ready replica also gives
the engine nothing to read and holds.

Totals. Each step's replica count (the count the engine saw, ready + pending) is charged for one
step: replica-hours = replicas x step / 3600 and cost = replica-hours x the variant's cost (cost is
per replica-hour). The model is saturated at a step when the per-replica KV is at or above
``kvCacheThreshold`` or the per-replica queue at or above ``queueLengthThreshold``, or when there
is load and no ready replica to serve it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from wva.collector.types import ReplicaMetrics, ReplicaMetricsMetadata
from wva.decisions.decide import DEFAULT_STABILIZATION_WINDOW, GroupHistory, decide_group, next_history
from wva.decisions.record import VariantInput, VariantOutcome
from wva.replay.config import ModelFile, VariantSpec
from wva.replay.history import PodSample, SignalHistory
from wva.saturation.config import SaturationScalingConfig

__all__ = [
    "SOURCE",
    "BacktestResult",
    "ModelLoad",
    "ScaleEvent",
    "Step",
    "VariantStep",
    "VariantTotals",
    "model_load",
    "replay",
    "spread_load",
]

SOURCE = "backtest"  # the decision records' metrics source


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """The recorded load of the whole model at one step: sums over the pods that reported."""

    pods: int  # recorded pods with at least one signal
    kv: float | None  # sum of their KV-cache usage; None: no pod reported KV
    queue: float | None  # sum of their queue lengths; None: no pod reported a queue

    @property
    def known(self) -> bool:
        return self.kv is not None or self.queue is not None


@dataclass(frozen=True, slots=True)
class VariantStep:
    variant: str
    replicas: int  # ready + pending when the engine decided (what the Deployment shows)
    ready: int
    target: int
    code: str


@dataclass(frozen=True, slots=True)
class Step:
    time: float
    load: ModelLoad
    kv: float | None  # per simulated ready replica; None: unknown, or no ready replica
    queue: int | None
    saturated: bool
    variants: tuple[VariantStep, ...]

    def variant(self, name: str) -> VariantStep:
        return next(v for v in self.variants if v.variant == name)


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """A variant's target changed: from the last target (or the initial count) to a new one."""

    time: float
    variant: str
    from_replicas: int
    to_replicas: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class VariantTotals:
    variant: str
    cost_per_hour: float  # the model file's cost: per replica-hour
    replica_hours: float
    cost: float
    scale_ups: int
    scale_downs: int
    min_replicas: int  # the fewest and most replicas seen over the replay
    max_replicas: int
    final_replicas: int

    @property
    def events(self) -> int:
        return self.scale_ups + self.scale_downs


@dataclass(frozen=True, slots=True)
class BacktestResult:
    model: str
    namespace: str
    source: str  # the model file's path, to label the result
    config: SaturationScalingConfig
    variants: tuple[VariantSpec, ...]
    step_seconds: float
    startup_delay: float
    queries: int  # Prometheus queries the history cost
    steps: tuple[Step, ...]
    events: tuple[ScaleEvent, ...]
    totals: tuple[VariantTotals, ...]
    saturated_seconds: float
    unknown_seconds: float

    @property
    def start(self) -> float:
        return self.steps[0].time if self.steps else 0.0

    @property
    def end(self) -> float:
        return self.steps[-1].time if self.steps else 0.0

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(t.variant for t in self.totals)

    def total(self, variant: str) -> VariantTotals:
        return next(t for t in self.totals if t.variant == variant)

    def series(self, variant: str) -> list[VariantStep]:
        return [s.variant(variant) for s in self.steps]

    @property
    def replica_hours(self) -> float:
        return sum(t.replica_hours for t in self.totals)

    @property
    def cost(self) -> float:
        return sum(t.cost for t in self.totals)


@dataclass
class _Variant:
    """One variant's simulated replicas."""

    spec: VariantSpec
    ready: int
    pending: list[float] = field(default_factory=list)  # when each pending replica becomes ready, ascending
    last_target: int | None = None
    seen: list[int] = field(default_factory=list)

    @property
    def replicas(self) -> int:
        return self.ready + len(self.pending)

    def promote(self, now: float) -> None:
        due = sum(1 for at in self.pending if at <= now)
        if due:
            self.ready += due
            del self.pending[:due]

    def apply(self, target: int, now: float, startup_delay: float) -> None:
        change = target - self.replicas
        if change > 0:
            self.pending.extend([now + startup_delay] * change)
        while change < 0 and self.pending:
            self.pending.pop()  # the youngest first: it is the furthest from serving
            change += 1
        if change < 0:
            self.ready = max(0, self.ready + change)

    def pods(self) -> tuple[str, ...]:
        return tuple(f"{self.spec.deployment}-backtest-{i}" for i in range(self.ready))


def model_load(samples: dict[str, PodSample]) -> ModelLoad:
    """Sum the recorded pods' signals; a signal no pod reported stays unknown."""
    kvs = [s.kv for s in samples.values() if s.kv is not None]
    queues = [s.queue for s in samples.values() if s.queue is not None]
    pods = sum(1 for s in samples.values() if s.kv is not None or s.queue is not None)
    return ModelLoad(pods, sum(kvs) if kvs else None, sum(queues) if queues else None)


def spread_load(load: ModelLoad, ready: int) -> tuple[float | None, int | None]:
    """Per-replica KV and queue of ``ready`` replicas sharing ``load`` evenly (None: unknown)."""
    if ready <= 0:
        return None, None
    kv = None if load.kv is None else min(1.0, load.kv / ready)
    queue = None if load.queue is None else round(load.queue / ready)
    return kv, queue


def _saturated(load: ModelLoad, kv: float | None, queue: int | None, ready: int,
               config: SaturationScalingConfig) -> bool:
    if not load.known:
        return False
    if ready <= 0:
        return bool(load.kv) or bool(load.queue)
    return (kv is not None and kv >= config.kv_cache_threshold) or (
        queue is not None and queue >= config.queue_length_threshold
    )


def _replicas(model: ModelFile, sims: Sequence[_Variant], kv: float | None, queue: int | None,
              now: float) -> list[ReplicaMetrics]:
    meta = ReplicaMetricsMetadata(collected_at=now, source=SOURCE)
    return [
        ReplicaMetrics(
            pod_name=pod, kv_cache_usage=kv if kv is not None else 0.0, queue_length=queue if queue is not None else 0,
            variant_name=sim.spec.name, namespace=model.namespace, model_id=model.model,
            accelerator_name=sim.spec.accelerator, cost=sim.spec.cost, metadata=meta, sample_time=now,
            kv_known=kv is not None, queue_known=queue is not None,
        )
        for sim in sims
        for pod in sim.pods()
    ]


def _unavailable(load: ModelLoad, ready: int) -> str | None:
    if not load.known:
        return "no recorded pod reported metrics at this step (unknown, not zero)"
    if ready <= 0:
        return "no simulated replica is ready"
    return None


def _step_seconds(history: SignalHistory) -> float:
    """The history's step; a single-step history covers no time."""
    return history.steps[1] - history.steps[0] if len(history.steps) >= 2 else 0.0


def replay(
    history: SignalHistory,
    model: ModelFile,
    *,
    startup_delay: float = 0.0,
    config: SaturationScalingConfig | None = None,
) -> BacktestResult:
    """Drive the engine over ``history`` with ``model``'s variants (and its thresholds, or ``config``'s).

    A shadow in the thresholds is ignored: to compare two configurations, replay twice.
    """
    if startup_delay < 0:
        raise ValueError(f"startup_delay must be >= 0, got {startup_delay!r}")
    thresholds = (config or model.config).model_copy(update={"shadow": None})
    step_seconds = _step_seconds(history)
    sims = [_Variant(spec, ready=spec.initial_replicas) for spec in sorted(model.variants, key=lambda v: v.name)]
    events: list[ScaleEvent] = []
    memory: list[GroupHistory | None] = [None]  # what the engine keeps between cycles (its guards' past)
    steps = [_step(model, thresholds, sims, now, samples, startup_delay, events, memory)
             for now, samples in zip(history.steps, history.samples, strict=True)]
    return BacktestResult(
        model=model.model, namespace=model.namespace, source=model.path, config=thresholds,
        variants=tuple(sim.spec for sim in sims), step_seconds=step_seconds, startup_delay=startup_delay,
        queries=history.queries, steps=tuple(steps), events=tuple(events),
        totals=tuple(_totals(sim, events, step_seconds) for sim in sims),
        saturated_seconds=step_seconds * sum(1 for s in steps if s.saturated),
        unknown_seconds=step_seconds * sum(1 for s in steps if not s.load.known),
    )


def _step(
    model: ModelFile,
    thresholds: SaturationScalingConfig,
    sims: Sequence[_Variant],
    now: float,
    samples: dict[str, PodSample],
    startup_delay: float,
    events: list[ScaleEvent],
    memory: list[GroupHistory | None],
) -> Step:
    """One engine cycle at ``now``: decide on the simulated replicas, record, apply (``sims`` and ``events`` change)."""
    for sim in sims:
        sim.promote(now)
    load = model_load(samples)
    ready = sum(sim.ready for sim in sims)
    kv, queue = spread_load(load, ready)
    rows = _replicas(model, sims, kv, queue, now) if load.known and ready > 0 else None
    inputs = [sim.spec.input(sim.replicas, sim.last_target or 0, sim.pods(), ready=sim.ready) for sim in sims]
    decision = decide_group(model.model, model.namespace, inputs, rows, thresholds, now=now,
                            unavailable=_unavailable(load, ready), source=SOURCE, history=memory[0],
                            default_stabilization_window=DEFAULT_STABILIZATION_WINDOW)
    memory[0] = next_history(memory[0], decision.record)
    variants = []
    for sim, given in zip(sims, inputs, strict=True):
        outcome = decision.outcome(sim.spec.name)
        variants.append(VariantStep(sim.spec.name, sim.replicas, sim.ready, outcome.target, outcome.code))
        events.extend(_event(now, sim, given, outcome))
        sim.seen.append(sim.replicas)
        sim.last_target = outcome.target
        sim.apply(outcome.target, now, startup_delay)
    return Step(now, load, kv, queue, _saturated(load, kv, queue, ready, thresholds), tuple(variants))


def _event(now: float, sim: _Variant, given: VariantInput, outcome: VariantOutcome) -> list[ScaleEvent]:
    before = sim.last_target if sim.last_target is not None else given.current_replicas
    if outcome.target == before:
        return []
    return [ScaleEvent(now, sim.spec.name, before, outcome.target, outcome.code, outcome.message)]


def _totals(sim: _Variant, events: Sequence[ScaleEvent], step_seconds: float) -> VariantTotals:
    mine = [e for e in events if e.variant == sim.spec.name]
    hours = sum(sim.seen) * step_seconds / 3600.0
    return VariantTotals(
        variant=sim.spec.name,
        cost_per_hour=sim.spec.cost,
        replica_hours=hours,
        cost=hours * sim.spec.cost,
        scale_ups=sum(1 for e in mine if e.to_replicas > e.from_replicas),
        scale_downs=sum(1 for e in mine if e.to_replicas < e.from_replicas),
        min_replicas=min(sim.seen, default=sim.replicas),
        max_replicas=max(sim.seen, default=sim.replicas),
        final_replicas=sim.replicas,
    )
