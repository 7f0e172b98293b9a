"""Saturation-scaling thresholds: the model, its validation, ConfigMap parsing and the live store.

The ConfigMap (default name ``saturation-scaling-config``) holds one YAML document per data key::

    default: |
      kvCacheThreshold: 0.80
      queueLengthThreshold: 5
      kvSpareTrigger: 0.10
      queueSpareTrigger: 3
    llama-prod: |
      model_id: meta/llama-3-8b
      namespace: prod
      kvCacheThreshold: 0.70

Layering (our deliberate difference from upstream, which used 0 for unset fields and ignored
overrides): built-in defaults 0.80 / 5 / 0.10 / 3, then the fields ``default`` sets, then the
fields an override sets. A field an entry does not mention is inherited, never zero: an all-zero
config marks every replica saturated and silently disables scaling, which is a trap.

Parsing is pure (no I/O, no logging); :class:`SaturationConfigStore` adds the locking and the
"last good version stays in force" memory the engine needs between ConfigMap events.
"""

from __future__ import annotations

import math
import reprlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "BUILTIN_DEFAULT",
    "DEFAULT_ENTRY_KEY",
    "RULE_FIELDS",
    "THRESHOLD_FIELDS",
    "TUNABLE_FIELDS",
    "ParsedSaturationConfig",
    "SaturationConfigStore",
    "SaturationScalingConfig",
    "ScaleToZeroOverride",
    "merge_override",
    "parse_saturation_config_data",
    "parse_saturation_config_entry",
    "with_variant_overrides",
]

DEFAULT_ENTRY_KEY: Final = "default"

#: Snake-case field name -> the camelCase key used in the ConfigMap YAML.
THRESHOLD_FIELDS: Final[Mapping[str, str]] = {
    "kv_cache_threshold": "kvCacheThreshold",
    "queue_length_threshold": "queueLengthThreshold",
    "kv_spare_trigger": "kvSpareTrigger",
    "queue_spare_trigger": "queueSpareTrigger",
}

#: wva's own rules beyond upstream's four thresholds (snake-case -> ConfigMap key); merged like them.
RULE_FIELDS: Final[Mapping[str, str]] = {
    "strict_upstream": "strictUpstream",
    "near_saturation_margin": "nearSaturationMargin",
    "scale_down_stabilization_window": "scaleDownStabilizationWindow",
    "pending_stuck_after": "pendingStuckAfter",
    "scale_to_zero": "scaleToZero",
    "scale_to_zero_retention": "scaleToZeroRetention",
    "scale_up_max_step": "scaleUpMaxStep",
    "min_signal_coverage": "minSignalCoverage",
}

TUNABLE_FIELDS: Final[Mapping[str, str]] = {**THRESHOLD_FIELDS, **RULE_FIELDS}


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 60, 60, 40
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 6


def _short(value: Any) -> str:
    """A rejected value as messages show it: bounded, however large or deep (YAML aliases multiply)."""
    return _REPR.repr(value)


def _number(value: Any) -> Any:
    """Accept real numbers only: ints become floats; bools, strings, lists, NaN and ±Inf are rejected.

    Upstream decodes these fields into float64 through JSON, so a quoted ``"0.8"`` is an error
    there too. NaN is rejected because every range check is false for it and it would pass
    validation while disabling all comparisons in the analyzer.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_short(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"expected a finite number, got {_short(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {_short(value)}")
    return number


def _optional_text(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_short(value)}")
    return value.strip() or None


class SaturationScalingConfig(BaseModel):
    """Thresholds of the saturation analyzer for one model (or the global default).

    Construct with snake_case keywords in code, or validate the ConfigMap's camelCase mapping with
    :meth:`from_mapping`. Construction checks types only; :meth:`validate_thresholds` checks ranges
    with upstream's exact messages, so an out-of-range object can be built and then reported.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    kv_cache_threshold: float = Field(default=0.8, alias="kvCacheThreshold")
    queue_length_threshold: float = Field(default=5.0, alias="queueLengthThreshold")
    kv_spare_trigger: float = Field(default=0.1, alias="kvSpareTrigger")
    queue_spare_trigger: float = Field(default=3.0, alias="queueSpareTrigger")
    # beyond upstream (docs/scaling-algorithm.md): strictUpstream turns wva's extra guards off;
    # a spare-capacity scale-up while the load falls needs a pod within nearSaturationMargin of a
    # threshold; a scale-down waits until the lower count has held for the window (None: 300 s with
    # direct actuation, 0 on the HPA/KEDA path, whose own window applies)
    strict_upstream: bool = Field(default=False, alias="strictUpstream")
    near_saturation_margin: float = Field(default=0.05, alias="nearSaturationMargin")
    scale_down_stabilization_window: float | None = Field(default=None, alias="scaleDownStabilizationWindow")
    # replicas pending longer than this are stuck (no GPU, say): the next variant by cost is tried
    pending_stuck_after: float = Field(default=600.0, alias="pendingStuckAfter")
    # a model that served no request for the whole retention window goes to 0 on every variant
    scale_to_zero: bool = Field(default=False, alias="scaleToZero")
    scale_to_zero_retention: float = Field(default=600.0, alias="scaleToZeroRetention")
    # a scale-up adds up to this many replicas at once when the load needs them (1: upstream's +1)
    scale_up_max_step: int = Field(default=1, alias="scaleUpMaxStep")
    # below this share of serving replicas reporting both signals, no scale-down (and never to zero)
    min_signal_coverage: float = Field(default=1.0, alias="minSignalCoverage")
    model_id: str | None = None
    namespace: str | None = None
    # a candidate configuration evaluated next to this one and never acted on (shadow mode)
    shadow: SaturationScalingConfig | None = None

    @field_validator(*THRESHOLD_FIELDS, mode="before")
    @classmethod
    def _check_number(cls, value: Any) -> Any:
        return _number(value)

    @field_validator("strict_upstream", "scale_to_zero", mode="before")
    @classmethod
    def _check_bool(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_short(value)}")
        return value

    @field_validator("near_saturation_margin", "min_signal_coverage", mode="before")
    @classmethod
    def _check_margin(cls, value: Any) -> Any:
        number = _number(value)
        if not 0 <= number <= 1:
            raise ValueError(f"must be between 0 and 1, got {_short(value)}")
        return number

    @field_validator("scale_down_stabilization_window", "pending_stuck_after", "scale_to_zero_retention",
                     mode="before")
    @classmethod
    def _check_window(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):  # a Go duration ("5m") or a number of seconds
            from wva.durations import parse_duration

            return parse_duration(value)
        number = _number(value)
        if number < 0:
            raise ValueError(f"must be a duration >= 0 (e.g. 300s or 5m), got {_short(value)}")
        return number

    @field_validator("scale_up_max_step", mode="before")
    @classmethod
    def _check_step(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise ValueError(f"must be a whole number from 1 to 1000, got {_short(value)}")
        return value

    @field_validator("model_id", "namespace", mode="before")
    @classmethod
    def _check_text(cls, value: Any) -> Any:
        return _optional_text(value)

    @field_validator("shadow", mode="before")
    @classmethod
    def _check_shadow(cls, value: Any) -> Any:
        if value is None or isinstance(value, SaturationScalingConfig):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping of thresholds, got {_short(value)}")
        extra = sorted(str(k) for k in value if str(k) not in TUNABLE_FIELDS.values() and k not in TUNABLE_FIELDS)
        if extra:
            raise ValueError(f"a shadow holds thresholds only, not {', '.join(extra)}")
        return value

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SaturationScalingConfig:
        """Build from a ConfigMap entry's mapping (camelCase keys); unknown keys are ignored.

        Raises ``ValueError`` naming the offending key and value.
        """
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ValueError(_describe_validation_error(exc, data)) from None

    def thresholds_set(self) -> frozenset[str]:
        """Snake-case names of the tunable fields (thresholds and rules) this object was given explicitly."""
        return frozenset(self.model_fields_set & TUNABLE_FIELDS.keys())

    def rules(self) -> dict[str, Any]:
        """wva's own rule settings under their ConfigMap names (None: the actuation mode's default)."""
        return {camel: getattr(self, name) for name, camel in RULE_FIELDS.items()}

    def validate_thresholds(self) -> None:
        """Raise ``ValueError`` with upstream's message for the first failing check (upstream order)."""
        kv_t = self.kv_cache_threshold
        q_t = self.queue_length_threshold
        kv_s = self.kv_spare_trigger
        q_s = self.queue_spare_trigger
        if kv_t < 0 or kv_t > 1:
            raise ValueError(f"kvCacheThreshold must be between 0 and 1, got {kv_t:.2f}")
        if q_t < 0:
            raise ValueError(f"queueLengthThreshold must be >= 0, got {q_t:.1f}")
        if kv_s < 0 or kv_s > 1:
            raise ValueError(f"kvSpareTrigger must be between 0 and 1, got {kv_s:.2f}")
        if q_s < 0:
            raise ValueError(f"queueSpareTrigger must be >= 0, got {q_s:.1f}")
        if kv_t < kv_s:
            raise ValueError(f"kvCacheThreshold ({kv_t:.2f}) should be >= kvSpareTrigger ({kv_s:.2f})")

    def thresholds(self) -> dict[str, float]:
        """The four thresholds under their ConfigMap (camelCase) names, for docs and debugging."""
        return {camel: float(getattr(self, name)) for name, camel in THRESHOLD_FIELDS.items()}


def _describe_validation_error(exc: ValidationError, data: Mapping[str, Any]) -> str:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        key = loc[0] if loc else "?"
        where = ".".join(loc) if loc else "?"
        message = str(err["msg"]).removeprefix("Value error, ")
        if "got " not in message and key in data:
            message = f"{message}, got {_short(data[key])}"
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


#: What applies when no ConfigMap (or no ``default`` entry) exists: the shipped upstream defaults.
BUILTIN_DEFAULT: Final = SaturationScalingConfig()


def merge_override(
    base: SaturationScalingConfig, override: SaturationScalingConfig
) -> SaturationScalingConfig:
    """``base`` with the thresholds ``override`` sets replaced; model_id/namespace come from ``override``.

    The result carries no shadow: a shadow is resolved per entry (:func:`_resolve`).
    """
    values = base.model_dump(exclude={"shadow"})
    values.update({name: getattr(override, name) for name in override.thresholds_set()})
    values["model_id"] = override.model_id
    values["namespace"] = override.namespace
    return SaturationScalingConfig.model_validate(values)


@dataclass(frozen=True, slots=True)
class ScaleToZeroOverride:
    """One VariantAutoscaling's ``spec.scaleToZero`` (None: not set there)."""

    enabled: bool | None = None
    retention: float | None = None  # seconds


def with_variant_overrides(
    config: SaturationScalingConfig, overrides: Iterable[ScaleToZeroOverride]
) -> SaturationScalingConfig:
    """The model's configuration with its variants' ``spec.scaleToZero`` applied over the ConfigMap's.

    A variant is more specific than the ConfigMap, so its word wins; between variants the safe side
    wins: one that disables scale-to-zero keeps the model above zero, and the longest retention set
    applies (a shorter one would take the longer one's idle replicas away early).
    """
    enabled: set[bool] = set()
    retentions: list[float] = []
    for o in overrides:
        if o.enabled is not None:
            enabled.add(o.enabled)
        if o.retention is not None:
            retentions.append(o.retention)
    if not enabled and not retentions:
        return config
    update: dict[str, Any] = {}
    if enabled:
        update["scale_to_zero"] = False not in enabled
    if retentions:
        update["scale_to_zero_retention"] = max(retentions)
    return config.model_copy(update=update)


def parse_saturation_config_entry(key: str, text: str) -> SaturationScalingConfig:
    """Parse one data value (a YAML document) into an unmerged, type-checked entry.

    An empty document is an empty mapping. Raises ``ValueError`` with a message naming ``key``.
    """
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"entry {key!r}: invalid YAML: {detail[:500]}") from None
    except RecursionError:
        raise ValueError(f"entry {key!r}: invalid YAML: nested too deeply") from None
    except Exception as exc:  # PyYAML's constructors raise plain errors for bad scalars ('!!bool x', huge ints)
        detail = " ".join(str(exc).split())
        raise ValueError(f"entry {key!r}: invalid YAML value: {type(exc).__name__}: {detail[:300]}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, Mapping):
        raise ValueError(f"entry {key!r}: expected a YAML mapping, got {type(loaded).__name__} {_short(loaded)}")
    try:
        entry = SaturationScalingConfig.from_mapping({str(k): v for k, v in loaded.items()})
    except ValueError as exc:
        raise ValueError(f"entry {key!r}: {exc}") from None
    if key != DEFAULT_ENTRY_KEY and entry.model_id is None:
        raise ValueError(
            f"entry {key!r}: an entry other than {DEFAULT_ENTRY_KEY!r} must set model_id "
            "(and optionally namespace); without it the entry would never apply"
        )
    return entry


@dataclass(frozen=True, slots=True)
class ParsedSaturationConfig:
    """Outcome of parsing a ConfigMap's data.

    ``entries``: key -> effective (merged, validated) config of every entry in force.
    ``errors``: key -> human-readable problem; a key may be in both when its last good version was kept.
    ``raw``: key -> the unmerged entry in force (what to pass back as ``last_good`` next time).
    """

    entries: dict[str, SaturationScalingConfig] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    raw: dict[str, SaturationScalingConfig] = field(default_factory=dict)

    @property
    def default(self) -> SaturationScalingConfig:
        return self.entries.get(DEFAULT_ENTRY_KEY, BUILTIN_DEFAULT)

    def entry_key(self, model_id: str, namespace: str) -> str:
        """The key of the entry that applies to a model, in :meth:`SaturationConfigStore.get`'s order:
        the namespace-specific override, else the namespace-less one, else ``default``."""
        for wanted in (namespace, None):
            for key, cfg in sorted(self.entries.items()):
                if key != DEFAULT_ENTRY_KEY and (cfg.model_id, cfg.namespace) == (model_id, wanted):
                    return key
        return DEFAULT_ENTRY_KEY


def _resolve(
    key: str, raw: SaturationScalingConfig, base: SaturationScalingConfig
) -> SaturationScalingConfig:
    merged = merge_override(base, raw)
    if key == DEFAULT_ENTRY_KEY:
        # A model_id on ``default`` means nothing: it applies to every model.
        merged = merged.model_copy(update={"model_id": None, "namespace": None})
    try:
        merged.validate_thresholds()
    except ValueError as exc:
        raise ValueError(f"entry {key!r}: {exc}") from None
    if raw.shadow is not None:
        # the candidate is this entry's effective configuration with the shadow's thresholds replaced
        candidate = merge_override(merged, raw.shadow.model_copy(update={"model_id": merged.model_id,
                                                                        "namespace": merged.namespace}))
        try:
            candidate.validate_thresholds()
        except ValueError as exc:
            raise ValueError(f"entry {key!r}: shadow: {exc}") from None
        merged = merged.model_copy(update={"shadow": candidate})
    return merged


_KEPT = "; the last good version of this entry stays in force"


def parse_saturation_config_data(
    data: Mapping[str, str],
    *,
    last_good: Mapping[str, SaturationScalingConfig] | None = None,
) -> ParsedSaturationConfig:
    """Parse every entry of a ConfigMap's ``data``; one bad entry never affects the others.

    ``last_good`` holds the previous ``raw`` entries: an entry that is now invalid falls back to
    its last good version (re-merged onto the current ``default``) and still reports its error. A
    key absent from ``data`` is gone, whatever ``last_good`` says.
    """
    previous = last_good or {}
    errors: dict[str, str] = {}
    candidates: dict[str, SaturationScalingConfig] = {}
    for key in sorted(data):
        try:
            candidates[key] = parse_saturation_config_entry(key, data[key])
        except ValueError as exc:
            errors[key] = str(exc)

    def settle(
        key: str, base: SaturationScalingConfig
    ) -> tuple[SaturationScalingConfig, SaturationScalingConfig]:
        """(raw, effective) for ``key``, else its last good version; ValueError if neither works."""
        candidate = candidates.get(key)
        if candidate is not None:
            try:
                return candidate, _resolve(key, candidate, base)
            except ValueError as exc:
                errors[key] = str(exc)
        fallback = previous.get(key)
        if fallback is not None:
            try:
                effective = _resolve(key, fallback, base)
            except ValueError:
                pass
            else:
                errors[key] += _KEPT
                return fallback, effective
        raise ValueError(errors[key])

    entries: dict[str, SaturationScalingConfig] = {}
    raw: dict[str, SaturationScalingConfig] = {}
    base = BUILTIN_DEFAULT
    if DEFAULT_ENTRY_KEY in data:
        try:
            raw[DEFAULT_ENTRY_KEY], base = settle(DEFAULT_ENTRY_KEY, BUILTIN_DEFAULT)
            entries[DEFAULT_ENTRY_KEY] = base
        except ValueError:
            base = BUILTIN_DEFAULT

    owners: dict[tuple[str, str | None], str] = {}
    for key in sorted(data):
        if key == DEFAULT_ENTRY_KEY:
            continue
        try:
            entry_raw, effective = settle(key, base)
        except ValueError:
            continue
        assert effective.model_id is not None  # guaranteed by parse_saturation_config_entry
        target = (effective.model_id, effective.namespace)
        owner = owners.get(target)
        if owner is not None:
            where = f"namespace {target[1]!r}" if target[1] else "every namespace"
            errors[key] = (
                f"entry {key!r}: duplicates entry {owner!r} for model {target[0]!r} in {where}; "
                f"entry {owner!r} applies"
            )
            continue
        owners[target] = key
        raw[key] = entry_raw
        entries[key] = effective
    return ParsedSaturationConfig(entries=entries, errors=errors, raw=raw)


def _same_entries(a: Mapping[str, SaturationScalingConfig], b: Mapping[str, SaturationScalingConfig]) -> bool:
    return a.keys() == b.keys() and all(a[k].model_dump() == b[k].model_dump() for k in a)


class SaturationConfigStore:
    """The thresholds in force, shared between the ConfigMap handlers and the engine.

    Thread-safe: writers (ConfigMap events) rebuild a lookup index under a lock; readers
    (:meth:`get`, once per model per cycle) do two dict lookups under the same lock.
    Before any ConfigMap was seen, every model gets :data:`BUILTIN_DEFAULT`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded = False
        self._source_present = False
        self._version = 0
        self._raw: dict[str, SaturationScalingConfig] = {}
        self._entries: dict[str, SaturationScalingConfig] = {}
        self._errors: dict[str, str] = {}
        self._default = BUILTIN_DEFAULT
        self._by_model: dict[tuple[str, str | None], SaturationScalingConfig] = {}
        self._any_scale_to_zero = False

    @property
    def loaded(self) -> bool:
        """True once a ConfigMap has been seen (it stays true after the ConfigMap is deleted)."""
        with self._lock:
            return self._loaded

    @property
    def source_present(self) -> bool:
        """True while the ConfigMap exists, as far as the last event told us."""
        with self._lock:
            return self._source_present

    @property
    def version(self) -> int:
        """Incremented each time the configuration in force actually changes."""
        with self._lock:
            return self._version

    @property
    def errors(self) -> dict[str, str]:
        """Errors of the last :meth:`update` (key -> message)."""
        with self._lock:
            return dict(self._errors)

    def update(self, data: Mapping[str, str]) -> dict[str, str]:
        """Replace the configuration from a ConfigMap's ``data``; return the per-entry errors."""
        with self._lock:
            parsed = parse_saturation_config_data(data, last_good=self._raw)
            changed = not _same_entries(parsed.entries, self._entries)
            self._loaded = True
            self._source_present = True
            self._errors = dict(parsed.errors)
            self._raw = parsed.raw
            if changed:
                self._entries = parsed.entries
                self._default = parsed.default
                self._by_model = {
                    (cfg.model_id, cfg.namespace): cfg
                    for key, cfg in parsed.entries.items()
                    if key != DEFAULT_ENTRY_KEY and cfg.model_id is not None
                }
                self._any_scale_to_zero = self._default.scale_to_zero or any(
                    cfg.scale_to_zero for cfg in self._by_model.values()
                )
                self._version += 1
            return dict(parsed.errors)

    def clear_source(self) -> None:
        """The ConfigMap was deleted: keep the last configuration in force (as upstream does)."""
        with self._lock:
            self._source_present = False

    @property
    def any_scale_to_zero(self) -> bool:
        """Whether any configuration in force turns scale-to-zero on (the poller's cheap early exit)."""
        with self._lock:
            return self._any_scale_to_zero

    def get(self, model_id: str, namespace: str) -> SaturationScalingConfig:
        """Effective thresholds: namespace-specific override, else namespace-less one, else ``default``."""
        with self._lock:
            found = self._by_model.get((model_id, namespace))
            if found is None:
                found = self._by_model.get((model_id, None), self._default)
            return found

    def snapshot(self) -> dict[str, SaturationScalingConfig]:
        """The effective entries in force, always including ``default`` (built-in when not configured)."""
        with self._lock:
            result = dict(self._entries)
            result.setdefault(DEFAULT_ENTRY_KEY, self._default)
            return result
