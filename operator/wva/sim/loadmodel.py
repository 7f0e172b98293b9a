"""Scenarios and the queueing model behind ``wva demo``: offered load in, KV-cache usage and queue out.

The model is deliberately simple, deterministic and documented (docs/demo.md):

- A scenario is a piecewise-linear offered load ``L(t)`` in requests per second over simulated time.
- A load-aware router spreads the load over every ready replica of the model in proportion to its
  capacity ``mu`` (requests per second one replica serves), so every replica runs at the same
  utilisation ``rho = L / sum(mu_i)``.
- KV-cache usage grows with the number of requests in flight: ``kv = min(kv_max, kv_per_rho * rho)``.
- Work beyond capacity waits: ``queue = max(0, (rho - 1) * queue_per_overload)`` requests per replica.
- Optional noise (seeded, so a run is reproducible) perturbs KV usage by at most ``noise``.

Nothing here does I/O except :func:`load_scenario`, which reads a YAML file (strictly, with
:mod:`wva.yamlfile`: every problem names the file and the line).
"""

from __future__ import annotations

import difflib
import itertools
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from wva import yamlfile


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
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise ScenarioError(f"--duration must be positive (simulated seconds > 0), got {duration:g}")
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ScenarioError(f"--speed must be positive (simulated seconds per real second > 0), got {speed:g}")
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
# Scenario files are strict (docs/demo.md): an unknown key, a value out of its range or a YAML syntax
# error is a ScenarioError naming the file and the line, raised before anything starts.
TOP_KEYS = ("name", "description", "model", "namespace", "interval", "speed", "duration", "coldStart",
            "load", "variants", "queueModel", "scaleToZero")
VARIANT_KEYS = ("name", "accelerator", "cost", "capacity", "replicas", "minReplicas", "maxReplicas")
QUEUE_MODEL_KEYS = ("kvPerRho", "kvMax", "queuePerOverload", "noise", "seed")
SCALE_TO_ZERO_KEYS = ("retention",)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


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
            data = yamlfile.read(path)
        except yamlfile.YamlFileError as exc:
            raise ScenarioError(str(exc).replace(": cannot read:", ": cannot read scenario file:", 1)) from None
        return parse_scenario(data, default_name=path.stem, where=name_or_path)
    resource = _builtin_dir().joinpath(f"{name_or_path}.yaml")
    if not resource.is_file():
        names = builtin_scenarios()
        near = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ScenarioError(
            f"unknown scenario {name_or_path!r}{hint}: built-ins are {', '.join(names)} "
            "(wva demo --list-scenarios), or give a YAML file"
        )
    where = str(resource)
    try:
        data = yamlfile.parse(resource.read_text(encoding="utf-8"), where)
    except yamlfile.YamlFileError as exc:
        raise ScenarioError(str(exc)) from None
    return parse_scenario(data, default_name=name_or_path, where=where)


def describe_builtin_scenarios() -> list[tuple[str, str]]:
    """``(name, one line)`` per built-in scenario: its length and speed and its description's first sentence.

    A built-in file that does not validate raises :class:`ScenarioError`, like any scenario.
    """
    result = []
    for name in builtin_scenarios():
        s = load_scenario(name)
        summary = _first_sentence(s.description) or _first_comment(_builtin_dir().joinpath(f"{name}.yaml"))
        minutes = s.duration / s.speed / 60
        length = f"{s.duration:g} s simulated at {s.speed:g}x, about {max(1, round(minutes))} min"
        result.append((name, f"{summary} ({length})" if summary else length))
    return result


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    return re.split(r"(?<=[.!?])\s+", text, maxsplit=1)[0] if text else ""


def _first_comment(resource: Any) -> str:
    for line in resource.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return _first_sentence(line.lstrip("#").strip())
    return ""


class _Reader:
    """Reads values out of one scenario file's data; every problem names the file, the line and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, node: Any, key: Any, message: str) -> NoReturn:
        raise ScenarioError(f"{yamlfile.at(self.where, node, key)}: {message}")

    def keys(self, data: Mapping[str, Any], allowed: Sequence[str], context: str = "") -> None:
        try:
            yamlfile.check_keys(data, allowed, self.where, context)
        except yamlfile.YamlFileError as exc:
            raise ScenarioError(str(exc)) from None

    def mapping(self, parent: Any, key: str, context: str = "") -> Mapping[str, Any]:
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(parent, key, f"{context}{key} must be a mapping, got {value!r}")
        return value

    def number(
        self, data: Mapping[str, Any], key: str, default: float | None, *, low: float = 0.0,
        high: float = math.inf, low_open: bool = False, context: str = "",
    ) -> float:
        value = data.get(key, default)
        if value is None:
            self.fail(data, key, f"{context}{key} is required (a number {_range(low, high, low_open)})")
        in_range = (
            yamlfile.finite_number(value) and (value > low if low_open else value >= low) and value <= high
        )
        if not in_range:
            self.fail(data, key, f"{context}{key} must be a number {_range(low, high, low_open)}, got {value!r}")
        return float(value)

    def integer(
        self, data: Mapping[str, Any], key: str, default: int, *, low: int = 0, high: int | None = None,
        context: str = "", bounds: str = "",
    ) -> int:
        """An integer in ``low..high``; ``bounds`` says where the bounds come from (``1..maxReplicas``)."""
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            allowed = f">= {low}" if high is None else f"in {low}..{high}"
            self.fail(data, key, f"{context}{key} must be an integer {allowed}{bounds}, got {value!r}")
        return value

    def text(self, data: Mapping[str, Any], key: str, default: str | None, context: str = "") -> str:
        value = data.get(key, default)
        if value is None:
            self.fail(data, None, f"{context}{key} is required")
        if not isinstance(value, str) or (default is None and not value.strip()):
            self.fail(data, key, f"{context}{key} must be a non-empty string, got {value!r}")
        return value.strip()

    def dns_label(self, data: Mapping[str, Any], key: str, default: str | None, context: str = "") -> str:
        value = self.text(data, key, default, context)
        if not _DNS_LABEL.fullmatch(value):
            self.fail(data, key, f"{context}{key} must be a Kubernetes name (at most 63 lower-case letters, digits "
                                 f"and '-', starting and ending with a letter or digit), got {value!r}")
        return value


def _range(low: float, high: float, low_open: bool) -> str:
    if math.isinf(high):
        return f"> {low:g}" if low_open else f">= {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}]"


def parse_scenario(data: Any, default_name: str = "custom", where: str = "<scenario>") -> Scenario:
    """A :class:`Scenario` from a scenario file's data (:func:`wva.yamlfile.parse` keeps the lines for messages)."""
    r = _Reader(where)
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: a scenario must be a YAML mapping (name, load, variants, ...)")
    r.keys(data, TOP_KEYS)
    points = _load_points(r, data)
    variants = _variants(r, data)
    q = r.mapping(data, "queueModel")
    r.keys(q, QUEUE_MODEL_KEYS, "queueModel.")
    queue = QueueModel(
        kv_per_rho=r.number(q, "kvPerRho", 0.8, low_open=True, context="queueModel."),
        kv_max=r.number(q, "kvMax", 0.99, high=1.0, low_open=True, context="queueModel."),
        queue_per_overload=r.number(q, "queuePerOverload", 20.0, context="queueModel."),
        noise=r.number(q, "noise", 0.0, high=1.0, context="queueModel."),
        seed=r.integer(q, "seed", 0, context="queueModel."),
    )
    return Scenario(
        name=r.text(data, "name", default_name),
        description=r.text(data, "description", ""),
        model=r.text(data, "model", "demo/llama-3-8b"),
        namespace=r.dns_label(data, "namespace", "wva-demo"),
        points=points,
        duration=r.number(data, "duration", points[-1][0] or 60.0, low_open=True),
        speed=r.number(data, "speed", 20.0, low_open=True),
        interval=r.number(data, "interval", 30.0, low_open=True),
        variants=variants,
        queue=queue,
        scale_to_zero_retention=_scale_to_zero(r, data),
        cold_start=r.number(data, "coldStart", 0.0),
    )


def _load_points(r: _Reader, data: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    raw = data.get("load")
    if not isinstance(raw, list) or not raw:
        r.fail(data, "load" if "load" in data else None,
               f"load must be a non-empty list of [seconds, requests_per_second] pairs, got {raw!r}")
    points: list[tuple[float, float]] = []
    for i, item in enumerate(raw):
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or any(not yamlfile.finite_number(x) or x < 0 for x in item)
        ):
            r.fail(raw, i, f"load[{i}] must be [seconds, requests_per_second], both numbers >= 0, got {item!r}")
        if points and item[0] < points[-1][0]:
            r.fail(raw, i, f"load points must be in time order: load[{i}] at t={item[0]:g} comes after "
                           f"t={points[-1][0]:g}")
        points.append((float(item[0]), float(item[1])))
    return tuple(points)


def _variants(r: _Reader, data: Mapping[str, Any]) -> tuple[VariantSpec, ...]:
    raw_variants = data.get("variants")
    if not isinstance(raw_variants, list) or not raw_variants:
        r.fail(data, "variants" if "variants" in data else None,
               f"variants must be a non-empty list of variants (name, accelerator, cost, capacity, ...), "
               f"got {raw_variants!r}")
    variants: list[VariantSpec] = []
    for i, raw in enumerate(raw_variants):
        at = f"variants[{i}]."
        if not isinstance(raw, dict):
            r.fail(raw_variants, i, f"variants[{i}] must be a mapping (name, accelerator, cost, capacity, ...), "
                                    f"got {raw!r}")
        r.keys(raw, VARIANT_KEYS, at)
        name = r.dns_label(raw, "name", None, at)
        minimum = r.integer(raw, "minReplicas", 1, context=at)
        maximum = r.integer(raw, "maxReplicas", 4, low=max(1, minimum), context=at,
                            bounds=" (at least 1 and at least minReplicas)")
        initial = r.integer(raw, "replicas", 1, low=1, high=maximum, context=at, bounds=" (1..maxReplicas)")
        variants.append(VariantSpec(
            name=name,
            accelerator=r.text(raw, "accelerator", None, at),
            cost=r.number(raw, "cost", 10.0, context=at),
            capacity=r.number(raw, "capacity", None, low_open=True, context=at),
            min_replicas=minimum,
            max_replicas=maximum,
            initial_replicas=initial,
        ))
        first = next(j for j, v in enumerate(variants) if v.name == name)
        if first != i:
            r.fail(raw, "name", f"variant names must be unique: {name!r} is also variants[{first}]")
    return tuple(variants)


def _scale_to_zero(r: _Reader, data: Mapping[str, Any]) -> float | None:
    """``scaleToZero: {retention: 600}`` (simulated seconds) turns scale to zero on; absent: off."""
    if data.get("scaleToZero") is None:
        return None
    raw = r.mapping(data, "scaleToZero")
    r.keys(raw, SCALE_TO_ZERO_KEYS, "scaleToZero.")
    return r.number(raw, "retention", 600.0, low_open=True, context="scaleToZero.")
