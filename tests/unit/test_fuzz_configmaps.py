"""Fuzzed ConfigMaps: the saturation-scaling ConfigMap (one YAML document per key) and the main
ConfigMap (collector v1's ``PROMETHEUS_METRICS_CACHE_*`` keys).

Saturation ConfigMap properties: an entry fails only with ValueError, and its message names the entry
and the field at fault; through :class:`SaturationConfigStore` one bad entry leaves every other entry
and the bad entry's last good version in force (nothing half-applied, the version unchanged).

Main ConfigMap properties: any data loads without an exception; each bad key keeps its default with
a warning naming the key and the value; a bad key never changes another key's value.

The tests after the saturation properties pin what fuzzing found in ``wva.saturation.config``
(bugs, fixed): each names the input that used to escape as another exception or an unbounded message.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import assume, example, given
from hypothesis import strategies as st

from fuzzing import fuzz, fuzz_known_bug, huge_integers, json_values, mutate, scalars, yaml_texts
from wva.collector.legacy.config import (
    KEY_CLEANUP_INTERVAL,
    KEY_ENABLED,
    KEY_FETCH_INTERVAL,
    KEY_FRESH_THRESHOLD,
    KEY_STALE_THRESHOLD,
    KEY_TTL,
    KEY_UNAVAILABLE_THRESHOLD,
    CacheConfig,
    load_cache_config,
)
from wva.durations import parse_go_duration
from wva.saturation.config import (
    DEFAULT_ENTRY_KEY,
    TUNABLE_FIELDS,
    SaturationConfigStore,
    SaturationScalingConfig,
    parse_saturation_config_data,
    parse_saturation_config_entry,
)

# --- the saturation ConfigMap ----------------------------------------------------------------------

#: Every tunable field at its built-in default, under its ConfigMap name: a valid entry.
DEFAULT_DOC: dict[str, Any] = {
    camel: value
    for camel, value in SaturationScalingConfig().model_dump(by_alias=True).items()
    if camel in TUNABLE_FIELDS.values() and value is not None
}
FIELDS = sorted(TUNABLE_FIELDS.values())
NUMERIC_FIELDS = sorted(k for k, v in DEFAULT_DOC.items() if isinstance(v, float))

entry_keys = st.sampled_from([DEFAULT_ENTRY_KEY, "llama", "model-b", "x.y_z"])
field_values = st.one_of(
    scalars(huge_ints=False),
    st.sampled_from(["5m", "300s", "1h30m", "-5s", "0", "1e400", "nan", "true", "0.5", "abc"]),
    json_values(huge_ints=False, max_leaves=4),
)


def _entry_doc(key: str, model: str = "meta/llama") -> dict[str, Any]:
    doc = dict(DEFAULT_DOC)
    if key != DEFAULT_ENTRY_KEY:
        doc["model_id"] = model
    return doc


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True)


@fuzz(400)
@given(key=entry_keys, text=yaml_texts(tags=False))
@example(key="default", text="kvCacheThreshold: [1, 2]")
@example(key="llama", text="- a\n- b")
@example(key="llama", text="!!python/object:os.system {}")
def test_an_entry_fails_only_with_value_error_naming_the_entry(key: str, text: str) -> None:
    try:
        parse_saturation_config_entry(key, text)
    except ValueError as exc:
        assert repr(key) in str(exc)
    parsed = parse_saturation_config_data({key: text})
    assert set(parsed.entries) | set(parsed.errors) == {key}
    if key in parsed.errors:
        assert repr(key) in parsed.errors[key]
        assert key not in parsed.entries  # nothing to fall back to: the entry is simply not in force


@fuzz(400)
@given(key=entry_keys, field=st.sampled_from([*FIELDS, "model_id", "namespace"]), value=field_values)
@example(key="default", field="kvSpareTrigger", value=0.95)  # above kvCacheThreshold
@example(key="llama", field="model_id", value="")
@example(key="llama", field="model_id", value=7)
@example(key="default", field="pendingStuckAfter", value="-5s")
def test_a_rejected_field_is_named(key: str, field: str, value: Any) -> None:
    doc = mutate(_entry_doc(key), (field,), value)
    parsed = parse_saturation_config_data({key: _dump(doc)})
    if key in parsed.errors:
        message = parsed.errors[key]
        assert repr(key) in message and field in message, message
    else:
        effective = parsed.entries[key]
        effective.validate_thresholds()


def _stored(store: SaturationConfigStore) -> dict[str, dict[str, Any]]:
    return {k: v.model_dump() for k, v in store.snapshot().items()}


entries = st.dictionaries(
    st.sampled_from(["m1", "m2", "m3"]),
    st.fixed_dictionaries({"kvCacheThreshold": st.sampled_from([0.6, 0.7, 0.9]),
                           "queueLengthThreshold": st.sampled_from([2, 5, 9])}),
    max_size=3,
)


@fuzz(250)
@given(
    default=st.fixed_dictionaries({"kvSpareTrigger": st.sampled_from([0.05, 0.1, 0.2])}),
    overrides=entries,
    victim=st.sampled_from([DEFAULT_ENTRY_KEY, "m1", "m2", "m3"]),
    bad=st.one_of(yaml_texts(tags=False), field_values.map(lambda v: _dump({"kvCacheThreshold": v}))),
)
@example(default={"kvSpareTrigger": 0.1}, overrides={"m1": {"kvCacheThreshold": 0.7, "queueLengthThreshold": 2}},
         victim="m1", bad="kvCacheThreshold: 7")
@example(default={"kvSpareTrigger": 0.1}, overrides={"m1": {"kvCacheThreshold": 0.7, "queueLengthThreshold": 2}},
         victim="default", bad="kvSpareTrigger: [")
def test_one_bad_entry_leaves_every_other_entry_and_its_last_good_version(
    default: dict[str, Any], overrides: dict[str, dict[str, Any]], victim: str, bad: str
) -> None:
    good = {DEFAULT_ENTRY_KEY: _dump(default)}
    good |= {key: _dump({"model_id": f"model/{key}", **doc}) for key, doc in overrides.items()}
    store = SaturationConfigStore()
    assert store.update(good) == {}
    before, version = _stored(store), store.version

    errors = store.update({**good, victim: bad})
    if victim not in errors:
        return  # the replacement is itself a valid entry
    assert set(errors) == {victim} and repr(victim) in errors[victim]
    after = _stored(store)
    if victim in good:
        assert after == before and store.version == version  # the last good version stays in force
    else:
        assert after == before
    for key in overrides:
        model = f"model/{key}"
        assert store.get(model, "any").model_dump() == before[key]


# What fuzzing found in wva.saturation.config (each was a bug, now fixed): PyYAML's plain errors for bad or
# huge scalars and deep nesting, integers beyond the float range, unnamed shadow fields, alias bombs.


@fuzz_known_bug(200)
@given(key=entry_keys, text=yaml_texts(tags=True))
@example(key="default", text="kvCacheThreshold: !!bool x")
@example(key="default", text="kvCacheThreshold: !!timestamp x")
@example(key="llama", text="model_id: m\nkvCacheThreshold: !!int ::")
@example(key="default", text="kvCacheThreshold: 2026-99-99")
def test_any_yaml_scalar_is_rejected_naming_the_entry(key: str, text: str) -> None:
    store = SaturationConfigStore()
    store.update({DEFAULT_ENTRY_KEY: "kvCacheThreshold: 0.7\n", "other": "model_id: o\nkvSpareTrigger: 0.2\n"})
    before = _stored(store)
    errors = store.update({DEFAULT_ENTRY_KEY: "kvCacheThreshold: 0.7\n", "other": "model_id: o\nkvSpareTrigger: 0.2\n",
                           key: text})
    if key in errors:
        assert repr(key) in errors[key], errors[key]
    if key == DEFAULT_ENTRY_KEY and key in errors:
        assert _stored(store) == before


@fuzz_known_bug(30)
@given(key=entry_keys, field=st.sampled_from(NUMERIC_FIELDS), value=huge_integers().filter(lambda n: n < 10**4000))
def test_numbers_beyond_the_float_range_are_rejected_naming_the_field(key: str, field: str, value: int) -> None:
    doc = mutate(_entry_doc(key), (field,), value)
    with pytest.raises(ValueError, match=field):
        parse_saturation_config_entry(key, _dump(doc))


def test_an_overflowing_entry_does_not_stop_the_others() -> None:
    store = SaturationConfigStore()
    data = {DEFAULT_ENTRY_KEY: "kvCacheThreshold: 0.7\n", "bad": "model_id: m\nkvCacheThreshold: 1" + "0" * 400}
    errors = store.update(data)
    assert set(errors) == {"bad"} and "kvCacheThreshold" in errors["bad"]
    assert store.get("other", "ns").kv_cache_threshold == 0.7


@fuzz_known_bug(10)
@given(key=entry_keys, field=st.sampled_from(NUMERIC_FIELDS), digits=st.integers(4301, 4400))
def test_integers_too_long_for_text_are_rejected_naming_the_entry(key: str, field: str, digits: int) -> None:
    text = _dump(_entry_doc(key)) + f"{field}: 1{'0' * digits}\n"
    with pytest.raises(ValueError) as caught:
        parse_saturation_config_entry(key, text.replace(f"{field}: {DEFAULT_DOC[field]}\n", ""))
    assert repr(key) in str(caught.value)


@fuzz(3)  # PyYAML takes about a second per document this deep; the deep profile tries 150
@given(key=entry_keys, depth=st.integers(1000, 3000), as_value=st.booleans(), closed=st.booleans())
@example(key="default", depth=1000, as_value=True, closed=True)
def test_deeply_nested_entries_are_rejected_with_value_error(
    key: str, depth: int, as_value: bool, closed: bool
) -> None:
    body = "[" * depth + ("]" * depth if closed else "")
    with pytest.raises(ValueError, match=repr(key)):
        parse_saturation_config_entry(key, f"kvCacheThreshold: {body}" if as_value else body)


@fuzz_known_bug(50)
@given(key=entry_keys, field=st.sampled_from(NUMERIC_FIELDS),
       value=st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2), st.booleans()))
def test_a_rejected_shadow_field_is_named(key: str, field: str, value: Any) -> None:
    assume(not isinstance(value, str) or not value.strip() or value.strip()[0].isalpha())
    doc = {**_entry_doc(key), "shadow": {field: value}}
    parsed = parse_saturation_config_data({key: _dump(doc)})
    assert key in parsed.errors
    assert f"shadow.{field}" in parsed.errors[key] or f"shadow: {field}" in parsed.errors[key], parsed.errors[key]


def _alias_bomb(levels: int, field: str) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join([*lines, f"{field}: *a{levels}"]) + "\n"


@pytest.mark.parametrize("field", ["kvCacheThreshold", "model_id"])
def test_an_alias_bomb_is_rejected_with_a_short_message(field: str) -> None:
    text = _alias_bomb(5, field)
    assert len(text) < 1024
    with pytest.raises(ValueError) as caught:
        parse_saturation_config_entry("llama", "model_id: m\n" + text if field != "model_id" else text)
    assert len(str(caught.value)) < 10_000


# --- the main ConfigMap ----------------------------------------------------------------------------

DURATION_KEYS = {
    KEY_TTL: ("ttl", False),
    KEY_CLEANUP_INTERVAL: ("cleanup_interval", True),
    KEY_FETCH_INTERVAL: ("fetch_interval", True),
    KEY_FRESH_THRESHOLD: ("freshness.fresh", True),
    KEY_STALE_THRESHOLD: ("freshness.stale", True),
    KEY_UNAVAILABLE_THRESHOLD: ("freshness.unavailable", True),
}
MAIN_KEYS = [KEY_ENABLED, *DURATION_KEYS]

main_values = st.one_of(
    st.sampled_from(["30s", "1m", "1h30m", "500ms", "0", "0s", "-5s", "+1m", "1.5m", "5", "1e3s", "9" * 400 + "h",
                     "9" * 300 + "s", "µs", "1us", "true", "TRUE", "no", "off", "", " ", "\x00", "1m30"]),
    st.lists(st.sampled_from(["1", "0", ".", "5", "h", "m", "s", "ms", "us", "-", "+", " "]), max_size=6)
    .map("".join),
    st.text(max_size=12),
)


def _get(config: CacheConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


@fuzz(400)
@given(data=st.dictionaries(st.one_of(st.sampled_from(MAIN_KEYS), st.text(max_size=8)), main_values, max_size=8))
def test_the_main_configmap_always_loads_naming_every_bad_key(data: dict[str, str]) -> None:
    config, warnings = load_cache_config(data)
    defaults = CacheConfig()
    ordering_reset = any(w.startswith("freshness thresholds must satisfy") for w in warnings)
    for warning in warnings:
        assert any(key in warning for key in MAIN_KEYS), warning
    for key, (path, allow_zero) in DURATION_KEYS.items():
        raw = data.get(key)
        named = [w for w in warnings if f"{key}=" in w and not w.startswith("freshness thresholds must")]
        if raw is None or not raw.strip():
            assert not named
            if not (ordering_reset and path.startswith("freshness")):
                assert _get(config, path) == _get(defaults, path)
            continue
        try:
            parsed: float | None = parse_go_duration(raw)
        except ValueError:
            parsed = None
        good = parsed is not None and (parsed > 0 or (allow_zero and parsed == 0))
        if good:
            assert not named
            if not (ordering_reset and path.startswith("freshness")):
                assert _get(config, path) == parsed  # another key's problem never changes this one
        else:
            assert len(named) == 1 and repr(raw) in named[0]
            assert _get(config, path) == _get(defaults, path)
    fresh = config.freshness
    assert fresh.fresh <= fresh.stale <= fresh.unavailable


@fuzz(100)
@given(st.one_of(main_values, st.sampled_from(["true", "1", "yes", "YES", " true ", "false", "0", "no"])))
def test_the_cache_flag_warns_for_anything_but_the_flag_words(raw: str) -> None:
    config, warnings = load_cache_config({KEY_ENABLED: raw})
    word = raw.strip().lower()
    assert config.enabled is (word in ("true", "1", "yes") or not word)
    if word in ("true", "1", "yes", "false", "0", "no", ""):
        assert warnings == []
    else:
        assert len(warnings) == 1 and KEY_ENABLED in warnings[0] and repr(raw) in warnings[0]

