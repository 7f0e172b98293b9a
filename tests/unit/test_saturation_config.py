"""Saturation thresholds: model, upstream validation, ConfigMap parsing, overrides and the live store."""

from __future__ import annotations

import threading

import pydantic
import pytest

from wva.saturation.config import (
    BUILTIN_DEFAULT,
    SaturationConfigStore,
    SaturationScalingConfig,
    parse_saturation_config_data,
)

SHIPPED_DEFAULT = """\
kvCacheThreshold: 0.80
queueLengthThreshold: 5
kvSpareTrigger: 0.1
queueSpareTrigger: 3
"""


def cfg(kv_t: float, q_t: float, kv_s: float, q_s: float) -> SaturationScalingConfig:
    return SaturationScalingConfig(
        kv_cache_threshold=kv_t, queue_length_threshold=q_t, kv_spare_trigger=kv_s, queue_spare_trigger=q_s
    )


def thresholds(config: SaturationScalingConfig) -> tuple[float, float, float, float]:
    return (
        config.kv_cache_threshold,
        config.queue_length_threshold,
        config.kv_spare_trigger,
        config.queue_spare_trigger,
    )


# --- the model and its validation ------------------------------------------------------------

VALIDATION_VECTORS = {
    "C1": ((0.80, 5, 0.10, 3), None),
    "C2": ((0.75, 10, 0.15, 5), None),
    "C3": ((1.5, 5, 0.1, 3), "kvCacheThreshold must be between 0 and 1, got 1.50"),
    "C4": ((-0.1, 5, 0.1, 3), "kvCacheThreshold must be between 0 and 1, got -0.10"),
    "C5": ((0.8, -1, 0.1, 3), "queueLengthThreshold must be >= 0, got -1.0"),
    "C6": ((0.8, 5, 1.5, 3), "kvSpareTrigger must be between 0 and 1, got 1.50"),
    "C7": ((0.8, 5, -0.1, 3), "kvSpareTrigger must be between 0 and 1, got -0.10"),
    "C8": ((0.8, 5, 0.1, -1), "queueSpareTrigger must be >= 0, got -1.0"),
    "C9": ((0.5, 5, 0.6, 3), "kvCacheThreshold (0.50) should be >= kvSpareTrigger (0.60)"),
    "C10": ((0, 0, 0, 0), None),
    "C11": ((1.0, 1000, 1.0, 1000), None),
}


@pytest.mark.parametrize(("values", "error"), VALIDATION_VECTORS.values(), ids=VALIDATION_VECTORS.keys())
def test_validation_vectors(values: tuple[float, float, float, float], error: str | None) -> None:
    config = cfg(*values)
    if error is None:
        config.validate_thresholds()
    else:
        with pytest.raises(ValueError) as excinfo:
            config.validate_thresholds()
        assert str(excinfo.value) == error


def test_validation_reports_the_first_failure_in_upstream_order() -> None:
    with pytest.raises(ValueError, match=r"^queueLengthThreshold must be >= 0, got -2.0$"):
        cfg(0.5, -2, 0.9, -1).validate_thresholds()


def test_defaults_are_the_shipped_values() -> None:
    assert thresholds(SaturationScalingConfig()) == (0.80, 5.0, 0.10, 3.0)
    assert SaturationScalingConfig() == BUILTIN_DEFAULT


def test_camel_case_mapping_ints_become_floats_and_unknown_keys_are_ignored() -> None:
    config = SaturationScalingConfig.from_mapping(
        {"kvCacheThreshold": 1, "queueLengthThreshold": 7, "somethingElse": "x", "model_id": "m"}
    )
    assert thresholds(config) == (1.0, 7.0, 0.1, 3.0)
    assert isinstance(config.queue_length_threshold, float)
    assert config.model_id == "m"
    assert config.thresholds_set() == {"kv_cache_threshold", "queue_length_threshold"}


@pytest.mark.parametrize("bad", ["abc", "0.8", True, [0.8], {"a": 1}, None, float("nan"), float("inf")])
def test_wrong_types_are_rejected_naming_key_and_value(bad: object) -> None:
    with pytest.raises(ValueError) as excinfo:
        SaturationScalingConfig.from_mapping({"kvSpareTrigger": bad})
    message = str(excinfo.value)
    assert message.startswith("kvSpareTrigger: expected a")
    assert repr(bad) in message


def test_keyword_construction_checks_types_too() -> None:
    with pytest.raises(pydantic.ValidationError, match="expected a number, got 'abc'"):
        SaturationScalingConfig(kv_cache_threshold="abc")


def test_config_is_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        BUILTIN_DEFAULT.kv_cache_threshold = 0.5  # type: ignore[misc]


# --- parsing a ConfigMap ---------------------------------------------------------------------


def test_shipped_default_parses_to_the_builtin_values() -> None:
    parsed = parse_saturation_config_data({"default": SHIPPED_DEFAULT})
    assert parsed.errors == {}
    assert thresholds(parsed.entries["default"]) == (0.80, 5.0, 0.10, 3.0)


def test_partial_default_inherits_builtin_values_not_zero() -> None:
    parsed = parse_saturation_config_data({"default": "kvCacheThreshold: 0.9\n"})
    assert thresholds(parsed.entries["default"]) == (0.9, 5.0, 0.1, 3.0)
    assert thresholds(parse_saturation_config_data({"default": ""}).entries["default"]) == (0.8, 5, 0.1, 3)


def test_override_merges_field_by_field_over_default() -> None:
    parsed = parse_saturation_config_data(
        {
            "default": "kvCacheThreshold: 0.7\nqueueLengthThreshold: 10\n",
            "llama": "model_id: meta/llama\nnamespace: prod\nkvSpareTrigger: 0.2\n",
        }
    )
    assert parsed.errors == {}
    llama = parsed.entries["llama"]
    assert thresholds(llama) == (0.7, 10.0, 0.2, 3.0)
    assert (llama.model_id, llama.namespace) == ("meta/llama", "prod")


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"x": "model_id: [unclosed"}, "x", "invalid YAML"),
        ({"x": "- 1\n- 2\n"}, "x", "expected a YAML mapping, got list"),
        ({"x": "just text"}, "x", "expected a YAML mapping, got str"),
        ({"default": "kvCacheThreshold: abc\n"}, "default", "kvCacheThreshold: expected a number, got 'abc'"),
        ({"default": "queueSpareTrigger: [1]\n"}, "default", "queueSpareTrigger: expected a number, got [1]"),
        ({"default": "kvCacheThreshold: 1.5\n"}, "default", "kvCacheThreshold must be between 0 and 1, got 1.50"),
        ({"x": "kvCacheThreshold: 0.5\n"}, "x", "must set model_id"),
        ({"x": "model_id: 42\n"}, "x", "model_id: expected a string, got 42"),
        # Valid on its own terms, invalid once merged over default (kvSpareTrigger 0.10).
        ({"x": "model_id: m\nkvCacheThreshold: 0.05\n"}, "x",
         "kvCacheThreshold (0.05) should be >= kvSpareTrigger (0.10)"),
    ],
)
def test_bad_entries_are_reported_and_do_not_affect_others(data: dict[str, str], key: str, fragment: str) -> None:
    full = {"default": SHIPPED_DEFAULT, "good": "model_id: ok\nkvCacheThreshold: 0.6\n", **data}
    parsed = parse_saturation_config_data(full)

    assert set(parsed.errors) == {key}
    assert parsed.errors[key].startswith(f"entry {key!r}: ")
    assert fragment in parsed.errors[key]
    assert key not in parsed.entries
    assert parsed.entries["good"].kv_cache_threshold == 0.6


def test_invalid_default_leaves_overrides_on_builtin_defaults() -> None:
    parsed = parse_saturation_config_data(
        {"default": "kvSpareTrigger: 2\n", "o": "model_id: m\nqueueSpareTrigger: 1\n"}
    )
    assert "default" in parsed.errors
    assert "default" not in parsed.entries
    assert parsed.default == BUILTIN_DEFAULT
    assert thresholds(parsed.entries["o"]) == (0.8, 5.0, 0.1, 1.0)


def test_duplicate_override_keeps_the_first_key() -> None:
    parsed = parse_saturation_config_data(
        {"b": "model_id: m\nnamespace: ns\nkvCacheThreshold: 0.5\n", "a": "model_id: m\nnamespace: ns\n"}
    )
    assert set(parsed.entries) == {"a"}
    assert "duplicates entry 'a'" in parsed.errors["b"]


# --- the live store --------------------------------------------------------------------------

OVERRIDES = {
    "default": "kvCacheThreshold: 0.7\n",
    "any-ns": "model_id: llama\nqueueLengthThreshold: 8\n",
    "prod-only": "model_id: llama\nnamespace: prod\nkvSpareTrigger: 0.3\n",
}


def test_store_uses_builtin_defaults_before_any_configmap() -> None:
    store = SaturationConfigStore()
    assert store.loaded is False
    assert store.version == 0
    assert store.get("any", "ns") == BUILTIN_DEFAULT
    assert store.snapshot() == {"default": BUILTIN_DEFAULT}


def test_store_namespace_specific_beats_namespace_less_beats_default() -> None:
    store = SaturationConfigStore()
    assert store.update(OVERRIDES) == {}

    assert thresholds(store.get("llama", "prod")) == (0.7, 5.0, 0.3, 3.0)
    assert thresholds(store.get("llama", "staging")) == (0.7, 8.0, 0.1, 3.0)
    assert thresholds(store.get("other", "prod")) == (0.7, 5.0, 0.1, 3.0)
    assert store.loaded is True
    assert set(store.snapshot()) == {"default", "any-ns", "prod-only"}


def test_store_hot_update_and_version_counts_only_effective_changes() -> None:
    store = SaturationConfigStore()
    store.update({"default": SHIPPED_DEFAULT})
    assert store.version == 1
    store.update({"default": SHIPPED_DEFAULT + "# a comment changes nothing\n"})
    assert store.version == 1

    store.update({"default": "kvCacheThreshold: 0.6\n"})
    assert store.version == 2
    assert store.get("m", "ns").kv_cache_threshold == 0.6


def test_store_keeps_last_good_entry_when_it_becomes_invalid() -> None:
    store = SaturationConfigStore()
    store.update(OVERRIDES)
    version = store.version

    errors = store.update({**OVERRIDES, "prod-only": "model_id: llama\nnamespace: prod\nkvSpareTrigger: x\n"})

    assert "kvSpareTrigger: expected a number, got 'x'" in errors["prod-only"]
    assert "last good version" in errors["prod-only"]
    assert store.errors == errors
    assert store.get("llama", "prod").kv_spare_trigger == 0.3
    assert store.version == version


def test_store_keeps_last_good_default_and_merges_overrides_onto_it() -> None:
    store = SaturationConfigStore()
    store.update(OVERRIDES)

    errors = store.update({**OVERRIDES, "default": "kvCacheThreshold: 7\n", "any-ns": "model_id: llama\n"})

    assert set(errors) == {"default"}
    assert store.get("other", "ns").kv_cache_threshold == 0.7
    # The edited override (now setting nothing) is merged onto the retained default.
    assert thresholds(store.get("llama", "staging")) == (0.7, 5.0, 0.1, 3.0)


def test_retained_override_is_re_merged_onto_a_new_default() -> None:
    store = SaturationConfigStore()
    store.update(OVERRIDES)

    store.update({**OVERRIDES, "default": "kvCacheThreshold: 0.9\n", "any-ns": "::: not yaml"})

    assert thresholds(store.get("llama", "staging")) == (0.9, 8.0, 0.1, 3.0)


def test_store_entry_never_valid_is_not_in_force() -> None:
    store = SaturationConfigStore()
    errors = store.update({"default": "kvCacheThreshold: 2\n"})
    assert set(errors) == {"default"}
    assert store.get("m", "ns") == BUILTIN_DEFAULT
    assert store.loaded is True


def test_store_removed_key_is_removed() -> None:
    store = SaturationConfigStore()
    store.update(OVERRIDES)
    store.update({"default": OVERRIDES["default"]})

    assert store.get("llama", "prod").kv_spare_trigger == 0.1
    assert set(store.snapshot()) == {"default"}
    # A removed key has no last good version any more: re-adding it broken gives nothing.
    errors = store.update({**OVERRIDES, "prod-only": "model_id: llama\nnamespace: prod\nkvSpareTrigger: x\n"})
    assert "last good" not in errors["prod-only"]
    assert store.get("llama", "prod").kv_spare_trigger == 0.1


def test_store_clear_source_keeps_the_last_config() -> None:
    store = SaturationConfigStore()
    store.update(OVERRIDES)
    version = store.version

    store.clear_source()

    assert store.source_present is False
    assert store.loaded is True
    assert store.version == version
    assert store.get("llama", "prod").kv_spare_trigger == 0.3


def test_store_readers_never_see_a_half_applied_update() -> None:
    store = SaturationConfigStore()
    first = {"default": "kvCacheThreshold: 0.6\n", "o": "model_id: m\nnamespace: ns\nkvSpareTrigger: 0.2\n"}
    second = {"default": "kvCacheThreshold: 0.9\n", "o": "model_id: m\nnamespace: ns\nkvSpareTrigger: 0.4\n"}
    allowed = {(0.6, 0.2), (0.9, 0.4)}
    store.update(first)
    seen: set[tuple[float, float]] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            config = store.get("m", "ns")
            seen.add((config.kv_cache_threshold, config.kv_spare_trigger))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for i in range(200):
        store.update(second if i % 2 == 0 else first)
    stop.set()
    for thread in readers:
        thread.join(timeout=5)

    assert seen
    assert seen <= allowed
    assert store.version == 201


def test_override_example_of_the_scaling_algorithm_doc() -> None:
    store = SaturationConfigStore()
    errors = store.update(
        {
            "default": SHIPPED_DEFAULT,
            "llama-prod": "model_id: meta/llama-3-8b\nnamespace: prod\nkvCacheThreshold: 0.70\n"
            "kvSpareTrigger: 0.15\n",
            "granite-everywhere": "model_id: ibm/granite-3-8b\nqueueLengthThreshold: 10\n",
        }
    )
    assert errors == {}
    assert thresholds(store.get("meta/llama-3-8b", "prod")) == (0.70, 5.0, 0.15, 3.0)
    assert thresholds(store.get("meta/llama-3-8b", "dev")) == (0.80, 5.0, 0.10, 3.0)
    assert thresholds(store.get("ibm/granite-3-8b", "anywhere")) == (0.80, 10.0, 0.10, 3.0)
