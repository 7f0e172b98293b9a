"""The model file ``wva explain --prometheus`` and ``wva backtest`` read: one model, its variants, its thresholds.

Strict: an unknown key is an error naming the file, the line and the nearest valid key; a YAML
syntax error names the file and line; nothing is half-read. Thresholds use the ConfigMap's
names and rules (:class:`wva.saturation.config.SaturationScalingConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wva import yamlfile
from wva.collector.types import DEFAULT_VARIANT_COST
from wva.decisions.record import VariantInput
from wva.saturation.config import TUNABLE_FIELDS, SaturationScalingConfig

__all__ = ["ModelFile", "ModelFileError", "VariantSpec", "load_model_file", "parse_model_file"]

_TOP_KEYS = ("model", "namespace", "thresholds", "shadow", "variants")
_VARIANT_KEYS = ("name", "deployment", "accelerator", "cost", "minReplicas", "maxReplicas", "initialReplicas")


class ModelFileError(ValueError):
    """A problem with a model file; the message names the file and, where known, the line."""


@dataclass(frozen=True, slots=True)
class VariantSpec:
    name: str
    deployment: str
    accelerator: str
    cost: float
    min_replicas: int
    max_replicas: int | None
    initial_replicas: int

    def input(
        self, current: int, previous_desired: int = 0, pods: tuple[str, ...] = (), ready: int | None = None
    ) -> VariantInput:
        return VariantInput(
            name=self.name, accelerator=self.accelerator, cost=self.cost, current_replicas=current,
            previous_desired=previous_desired, min_replicas=self.min_replicas, max_replicas=self.max_replicas,
            pods=pods, ready_replicas=ready,
        )


@dataclass(frozen=True, slots=True)
class ModelFile:
    path: str
    model: str
    namespace: str
    config: SaturationScalingConfig
    variants: tuple[VariantSpec, ...]

    def variant_for_pod(self, pod: str) -> VariantSpec | None:
        """The variant whose Deployment owns ``pod``, by name (``<deployment>-<hash>-<suffix>``); longest wins."""
        best: VariantSpec | None = None
        for v in self.variants:
            if pod.startswith(v.deployment + "-") and (best is None or len(v.deployment) > len(best.deployment)):
                best = v
        return best


def load_model_file(path: str | Path) -> ModelFile:
    try:
        data = yamlfile.read(path)
    except yamlfile.YamlFileError as exc:
        raise ModelFileError(str(exc)) from None
    return _model_file(data, str(path))


def parse_model_file(text: str, where: str = "<model file>") -> ModelFile:
    try:
        data = yamlfile.parse(text, where)
    except yamlfile.YamlFileError as exc:
        raise ModelFileError(str(exc)) from None
    return _model_file(data, where)


def _model_file(data: Any, where: str) -> ModelFile:
    try:
        return _parse(data, where)
    except yamlfile.YamlFileError as exc:
        raise ModelFileError(str(exc)) from None


def _parse(data: Any, where: str) -> ModelFile:
    if not isinstance(data, dict):
        raise ModelFileError(f"{where}: expected a mapping with model, namespace and variants")
    yamlfile.check_keys(data, _TOP_KEYS, where)
    model = _text(data, "model", where, required=True)
    namespace = _text(data, "namespace", where, required=True)
    config = _thresholds(data.get("thresholds"), where, data, "thresholds")
    shadow_raw = data.get("shadow")
    if shadow_raw is not None:
        shadow = _thresholds(shadow_raw, where, data, "shadow", base=config)
        config = config.model_copy(update={"shadow": shadow})
    raw_variants = data.get("variants")
    if not isinstance(raw_variants, list) or not raw_variants:
        raise ModelFileError(f"{_at(where, data, 'variants')}: 'variants' must be a non-empty list")
    variants = tuple(_variant(v, where, raw_variants, i) for i, v in enumerate(raw_variants))
    names = [v.name for v in variants]
    duplicate = next((i for i, n in enumerate(names) if names.index(n) != i), None)
    if duplicate is not None:
        raise ModelFileError(f"{_at(where, raw_variants, duplicate)}: variant name {names[duplicate]!r} appears twice")
    return ModelFile(path=where, model=model, namespace=namespace, config=config, variants=variants)


def _at(where: str, node: Any, key: Any) -> str:
    return yamlfile.at(where, node, key)


def _text(data: Mapping[str, Any], key: str, where: str, *, required: bool) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ModelFileError(f"{_at(where, data, key)}: {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _thresholds(
    raw: Any, where: str, parent: Mapping[str, Any], key: str, base: SaturationScalingConfig | None = None
) -> SaturationScalingConfig:
    if raw is None:
        return base or SaturationScalingConfig()
    if not isinstance(raw, dict):
        raise ModelFileError(f"{_at(where, parent, key)}: {key!r} must be a mapping of thresholds")
    yamlfile.check_keys(raw, TUNABLE_FIELDS.values(), where, f"{key}.")
    values = dict(raw)
    try:
        config = SaturationScalingConfig.from_mapping(values)
        if base is not None:
            merged = base.model_dump(exclude={"shadow"})
            merged.update({n: getattr(config, n) for n in config.thresholds_set()})
            config = SaturationScalingConfig.model_validate(merged)
        config.validate_thresholds()
    except ValueError as exc:
        raise ModelFileError(f"{_at(where, parent, key)}: {key}: {exc}") from None
    return config


def _int(raw: Mapping[str, Any], key: str, where: str, default: int | None, minimum: int) -> int | None:
    value = raw.get(key, default)
    if value is None and default is None:
        return None  # absent or null where "none" is allowed (maxReplicas: unbounded)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelFileError(f"{_at(where, raw, key)}: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _variant(raw: Any, where: str, parent: Any, index: int) -> VariantSpec:
    if not isinstance(raw, dict):
        raise ModelFileError(f"{_at(where, parent, index)}: variants[{index}] must be a mapping, got {raw!r}")
    yamlfile.check_keys(raw, _VARIANT_KEYS, where, f"variants[{index}].")
    name = _text(raw, "name", where, required=True)
    deployment = _text(raw, "deployment", where, required=False) or name
    accelerator = _text(raw, "accelerator", where, required=False)
    cost = raw.get("cost", DEFAULT_VARIANT_COST)
    if not yamlfile.finite_number(cost) or cost < 0:
        shown = cost if not isinstance(cost, int) or cost < 10**20 else f"an integer of {len(str(cost))} digits"
        raise ModelFileError(f"{_at(where, raw, 'cost')}: 'cost' must be a number >= 0, got {shown!r}")
    minimum = _int(raw, "minReplicas", where, 1, 0)
    maximum = _int(raw, "maxReplicas", where, None, 1)
    if minimum is None:  # cannot happen: the default is 1 and null is refused
        raise ModelFileError(f"{_at(where, raw, 'minReplicas')}: 'minReplicas' must be an integer >= 0")
    if maximum is not None and maximum < minimum:
        raise ModelFileError(
            f"{_at(where, raw, 'maxReplicas')}: variants[{index}]: maxReplicas {maximum} < minReplicas {minimum}"
        )
    initial = _int(raw, "initialReplicas", where, max(1, minimum), 0)
    if initial is None:  # cannot happen: the default is set and null is refused
        raise ModelFileError(f"{_at(where, raw, 'initialReplicas')}: 'initialReplicas' must be an integer >= 0")
    return VariantSpec(name, deployment, accelerator, float(cost), minimum, maximum, initial)
