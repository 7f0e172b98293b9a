"""Scenarios and the queueing model behind ``wva demo``: offered load in, KV-cache usage and queue out.

The model is deliberately simple, deterministic and documented (docs/demo.md):

- A scenario is a piecewise-linear offered load ``L(t)`` in requests per second over simulated time.
- A load-aware router spreads the load over every ready replica of the model in proportion to its
  capacity ``mu`` (requests per second one replica serves), so every replica runs at the same
  utilisation ``rho = L / sum(mu_i)``.
- KV-cache usage grows with the number of requests in flight: ``kv = min(kv_max, kv_per_rho * rho)``.
- Work beyond capacity waits: ``queue = max(0, (rho - 1) * queue_per_overload)`` requests per replica.
- Optional noise (seeded, so a run is reproducible) perturbs KV usage by at most ``noise``.

Nothing here does I/O except :func:`load_scenario`, which reads a YAML file.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ScenarioError(ValueError):
    """A scenario file or name that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class VariantSpec:
    """One variant of the demo model: a Deployment plus its VariantAutoscaling."""

    name: str
    accelerator: str
    cost: float
    capacity: float  # requests per second one replica serves at rho = 1
    min_replicas: int = 1
    max_replicas: int = 4
    initial_replicas: int = 1


@dataclass(frozen=True)
class QueueModel:
    kv_per_rho: float = 0.8
    kv_max: float = 0.99
    queue_per_overload: float = 20.0
    noise: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class PodLoad:
    """What every replica of one variant reports at one instant."""

    rho: float
    requests_per_second: float
    kv_cache_usage: float
    queue_length: int


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    model: str
    namespace: str
    points: tuple[tuple[float, float], ...]  # (simulated seconds, offered requests/s), time ascending
    duration: float
    speed: float
    interval: float
    variants: tuple[VariantSpec, ...]
    queue: QueueModel = field(default_factory=QueueModel)
    # scale to zero (simulated seconds of idleness before the model goes to 0); None: off
    scale_to_zero_retention: float | None = None
    cold_start: float = 0.0  # simulated seconds from a pod's creation to Ready (model loading)

    def with_overrides(self, duration: float | None = None, speed: float | None = None) -> Scenario:
        if duration is not None and duration <= 0:
            raise ScenarioError(f"--duration must be positive, got {duration}")
        if speed is not None and speed <= 0:
            raise ScenarioError(f"--speed must be positive, got {speed}")
        return replace(self, duration=duration or self.duration, speed=speed or self.speed)

    def offered_load(self, t: float) -> float:
        return offered_load(self.points, t)

    def variant(self, name: str) -> VariantSpec:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


def offered_load(points: Sequence[tuple[float, float]], t: float) -> float:
    """Linear interpolation of the load curve; constant before the first and after the last point."""
    if not points:
        return 0.0
    if t <= points[0][0]:
        return points[0][1]
    for (t0, l0), (t1, l1) in itertools.pairwise(points):
        if t <= t1:
            if t1 == t0:
                return l1
            return l0 + (l1 - l0) * (t - t0) / (t1 - t0)
    return points[-1][1]


class LoadModel:
    """Turns offered load and replica counts into per-variant pod values (seeded noise only)."""

    def __init__(self, variants: Sequence[VariantSpec], queue: QueueModel) -> None:
        self.variants = list(variants)
        self.queue = queue
        self._rng = random.Random(queue.seed)

    def utilisation(self, load: float, replicas: Mapping[str, int]) -> float:
        capacity = sum(v.capacity * max(0, replicas.get(v.name, 0)) for v in self.variants)
        if capacity <= 0:
            return math.inf if load > 0 else 0.0
        return load / capacity

    def pod_loads(self, load: float, replicas: Mapping[str, int]) -> dict[str, PodLoad]:
        rho = self.utilisation(load, replicas)
        q = self.queue
        result: dict[str, PodLoad] = {}
        for v in self.variants:
            finite_rho = rho if math.isfinite(rho) else 10.0
            kv = min(q.kv_max, q.kv_per_rho * finite_rho)
            if q.noise > 0:
                kv = min(q.kv_max, max(0.0, kv + self._rng.uniform(-q.noise, q.noise)))
            queue = max(0, round((finite_rho - 1.0) * q.queue_per_overload))
            result[v.name] = PodLoad(
                rho=finite_rho,
                requests_per_second=finite_rho * v.capacity,
                kv_cache_usage=round(kv, 4),
                queue_length=int(queue),
            )
        return result


# --- scenario files ------------------------------------------------------------------------------
def _builtin_dir() -> Any:
    return resources.files("wva").joinpath("sim", "scenarios")


def builtin_scenarios() -> list[str]:
    files = _builtin_dir()
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name (``default``, ``spike``, ...) or a YAML file by path."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file():
        try:
            text = path.read_text()
        except OSError as exc:
            raise ScenarioError(f"cannot read scenario file {name_or_path}: {exc}") from exc
        return parse_scenario(yaml.safe_load(text), default_name=path.stem)
    resource = _builtin_dir().joinpath(f"{name_or_path}.yaml")
    if not resource.is_file():
        raise ScenarioError(
            f"unknown scenario {name_or_path!r}: built-ins are {', '.join(builtin_scenarios())}, or give a YAML file"
        )
    return parse_scenario(yaml.safe_load(resource.read_text()), default_name=name_or_path)


def _num(data: Mapping[str, Any], key: str, default: float | None = None, *, positive: bool = False) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{key} must be a number, got {value!r}")
    if positive and value <= 0:
        raise ScenarioError(f"{key} must be positive, got {value!r}")
    if value < 0:
        raise ScenarioError(f"{key} must not be negative, got {value!r}")
    return float(value)


def _int(data: Mapping[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScenarioError(f"{key} must be a non-negative integer, got {value!r}")
    return value


def parse_scenario(data: Any, default_name: str = "custom") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError("a scenario must be a YAML mapping")
    raw_points = data.get("load")
    if not isinstance(raw_points, list) or not raw_points:
        raise ScenarioError("load must be a non-empty list of [seconds, requests_per_second] pairs")
    points: list[tuple[float, float]] = []
    for item in raw_points:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or any(isinstance(x, bool) or not isinstance(x, int | float) or x < 0 for x in item)
        ):
            raise ScenarioError(f"load point {item!r} must be [seconds, requests_per_second], both >= 0")
        if points and item[0] < points[-1][0]:
            raise ScenarioError(f"load points must be in time order: {item!r} comes after t={points[-1][0]}")
        points.append((float(item[0]), float(item[1])))
    raw_variants = data.get("variants")
    if not isinstance(raw_variants, list) or not raw_variants:
        raise ScenarioError("variants must be a non-empty list")
    variants: list[VariantSpec] = []
    for raw in raw_variants:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise ScenarioError(f"every variant needs a name: {raw!r}")
        variant = VariantSpec(
            name=raw["name"],
            accelerator=str(raw.get("accelerator", "")),
            cost=_num(raw, "cost", 10.0),
            capacity=_num(raw, "capacity", None, positive=True),
            min_replicas=_int(raw, "minReplicas", 1),
            max_replicas=_int(raw, "maxReplicas", 4),
            initial_replicas=_int(raw, "replicas", 1),
        )
        if variant.max_replicas < max(1, variant.min_replicas):
            raise ScenarioError(f"variant {variant.name}: maxReplicas must be >= max(1, minReplicas)")
        if not 1 <= variant.initial_replicas <= variant.max_replicas:
            raise ScenarioError(f"variant {variant.name}: replicas must be within 1..maxReplicas")
        variants.append(variant)
    if len({v.name for v in variants}) != len(variants):
        raise ScenarioError("variant names must be unique")
    q = data.get("queueModel") or {}
    if not isinstance(q, dict):
        raise ScenarioError("queueModel must be a mapping")
    queue = QueueModel(
        kv_per_rho=_num(q, "kvPerRho", 0.8, positive=True),
        kv_max=min(1.0, _num(q, "kvMax", 0.99, positive=True)),
        queue_per_overload=_num(q, "queuePerOverload", 20.0),
        noise=_num(q, "noise", 0.0),
        seed=_int(q, "seed", 0),
    )
    return Scenario(
        name=str(data.get("name", default_name)),
        description=str(data.get("description", "")).strip(),
        model=str(data.get("model", "demo/llama-3-8b")),
        namespace=str(data.get("namespace", "wva-demo")),
        points=tuple(points),
        duration=_num(data, "duration", points[-1][0] or 60.0, positive=True),
        speed=_num(data, "speed", 20.0, positive=True),
        interval=_num(data, "interval", 30.0, positive=True),
        variants=tuple(variants),
        queue=queue,
        scale_to_zero_retention=_scale_to_zero(data.get("scaleToZero")),
        cold_start=_num(data, "coldStart", 0.0),
    )


def _scale_to_zero(raw: Any) -> float | None:
    """``scaleToZero: {retention: 600}`` (simulated seconds) turns scale to zero on; absent: off."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"retention"}:
        raise ScenarioError(f"scaleToZero must be a mapping with one key, retention (seconds), got {raw!r}")
    return _num(raw, "retention", 600.0, positive=True)
