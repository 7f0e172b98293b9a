"""Fuzzed backtest model files: ``wva.replay.config.parse_model_file`` / ``load_model_file`` (``wva backtest
--config``, ``wva explain --prometheus``) and the strict YAML reader under them, ``wva.yamlfile``.

Properties: a file is either accepted, with its variants and thresholds in range, or rejected with
``ModelFileError`` (what both commands catch) in one line that names the file, the line where known
and the field at fault, whatever the file holds: syntax errors, bad tagged scalars, unhashable keys,
deep nesting, bytes that are not UTF-8, thresholds beyond the float range. The last tests hold bugs fuzzing
found in ``wva.replay.config`` (huge and infinite costs, null replica counts), fixed since.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from fuzzing import DELETE, fuzz, huge_integers, json_values, mutate, scalars, yaml_texts
from wva import yamlfile
from wva.replay.config import ModelFile, ModelFileError, load_model_file, parse_model_file

BASE: dict[str, Any] = {
    "model": "meta/llama-3-8b",
    "namespace": "prod",
    "thresholds": {"kvCacheThreshold": 0.8, "queueLengthThreshold": 5, "kvSpareTrigger": 0.1, "queueSpareTrigger": 3},
    "shadow": {"kvSpareTrigger": 0.05},
    "variants": [
        {"name": "a", "deployment": "a-dep", "accelerator": "L4", "cost": 5, "minReplicas": 1, "maxReplicas": 6,
         "initialReplicas": 2},
        {"name": "b", "accelerator": "H100", "cost": 20},
    ],
}

#: Mutable places of a model file and the word its rejection must contain.
PATHS: dict[tuple[str | int, ...], str] = {
    ("model",): "model", ("namespace",): "namespace", ("thresholds",): "thresholds",
    ("thresholds", "kvCacheThreshold"): "kvCacheThreshold", ("thresholds", "kvSpareTrigger"): "kvSpareTrigger",
    ("thresholds", "queueLengthThreshold"): "queueLengthThreshold", ("thresholds", "strictUpstream"): "strictUpstream",
    ("thresholds", "pendingStuckAfter"): "pendingStuckAfter", ("thresholds", "kvCacheThresold"): "kvCacheThresold",
    ("shadow",): "shadow", ("shadow", "kvSpareTrigger"): "kvSpareTrigger", ("shadow", "model"): "model",
    ("variants",): "variants", ("variants", 0): "variants[0]", ("variants", 1, "name"): "name",
    ("variants", 0, "deployment"): "deployment", ("variants", 0, "accelerator"): "accelerator",
    ("variants", 0, "cost"): "cost", ("variants", 0, "minReplicas"): "minReplicas",
    ("variants", 0, "maxReplicas"): "maxReplicas", ("variants", 1, "initialReplicas"): "initialReplicas",
    ("variants", 1, "replicas"): "replicas", ("extra",): "extra",
}

_THRESHOLD_WORDS = ("kvCacheThreshold", "queueLengthThreshold", "kvSpareTrigger", "queueSpareTrigger", "strictUpstream",
                    "nearSaturationMargin", "scaleDownStabilizationWindow", "pendingStuckAfter", "scaleToZero",
                    "scaleUpMaxStep", "minSignalCoverage", "unknown key")
_VARIANT_WORDS = ("name", "deployment", "accelerator", "cost", "minReplicas", "maxReplicas", "initialReplicas",
                  "unknown key")
#: A replaced container may be rejected for any field inside it: the message names that field.
CONTAINERS: dict[tuple[str | int, ...], tuple[str, ...]] = {
    ("thresholds",): ("thresholds", *_THRESHOLD_WORDS), ("shadow",): ("shadow", *_THRESHOLD_WORDS),
    ("variants",): ("variants", *_VARIANT_WORDS), ("variants", 0): ("variants[0]", *_VARIANT_WORDS),
}

values = st.one_of(
    scalars(huge_ints=False),
    json_values(huge_ints=False, max_leaves=4),
    st.sampled_from(["5m", "-1", "", "a", "b"]),
    st.just(DELETE),
)


def _check(model: ModelFile) -> None:
    assert model.model.strip() and model.namespace.strip() and model.variants
    model.config.validate_thresholds()
    if model.config.shadow is not None:
        model.config.shadow.validate_thresholds()
    assert len({v.name for v in model.variants}) == len(model.variants)
    for v in model.variants:
        assert v.name and v.deployment and v.cost >= 0 and v.min_replicas >= 0 and v.initial_replicas >= 0
        assert v.max_replicas is None or v.max_replicas >= max(1, v.min_replicas)


def _one_line_naming(message: str, where: str) -> None:
    assert message.startswith(where) and "\n" not in message, message


def test_the_documented_example_parses() -> None:
    model = parse_model_file(yaml.safe_dump(BASE), "m.yaml")
    _check(model)
    assert model.config.shadow is not None and model.config.shadow.kv_spare_trigger == 0.05


@fuzz(200)
@given(path=st.sampled_from(sorted(PATHS, key=repr)), value=values)
@example(path=("variants", 1, "name"), value="a")  # duplicate names
@example(path=("variants", 0, "maxReplicas"), value=0)
@example(path=("thresholds", "kvSpareTrigger"), value=0.95)  # above kvCacheThreshold
@example(path=("variants", 0, "cost"), value=math.nan)
def test_a_rejected_model_file_names_the_file_the_line_and_the_field(path: tuple[str | int, ...], value: Any) -> None:
    if value is None and path[-1] in ("minReplicas", "initialReplicas"):
        return  # a known bug: test_null_replica_counts_are_a_model_file_error
    try:
        model = parse_model_file(yaml.safe_dump(mutate(BASE, path, value), allow_unicode=True), "m.yaml")
    except ModelFileError as exc:
        message = str(exc)
        _one_line_naming(message, "m.yaml: line ")
        words = CONTAINERS.get(path, (PATHS[path],))
        assert any(word in message for word in words), (path, message)
    else:
        _check(model)


@fuzz(200)
@given(text=yaml_texts())
@example(text="? [a, b]\n: 1\n")  # an unhashable key
@example(text="model: !!bool x")
@example(text="model: !!timestamp x")
@example(text="variants: [" + "[" * 1000)
@example(text="namespace: 1" + "0" * 5000)
def test_any_text_is_a_model_file_or_a_model_file_error(text: str) -> None:
    try:
        model = parse_model_file(text, "m.yaml")
    except ModelFileError as exc:
        _one_line_naming(str(exc), "m.yaml")
    else:
        _check(model)
    try:
        yamlfile.parse(text, "m.yaml")
    except yamlfile.YamlFileError as exc:
        _one_line_naming(str(exc), "m.yaml")


@fuzz(50)
@given(data=st.binary(max_size=64))
@example(data=b"model: \xff\n")
@example(data=b"\xef\xbb\xbfmodel: m\n")
def test_any_bytes_on_disk_are_a_model_file_or_a_model_file_error(tmp_path_factory: pytest.TempPathFactory,
                                                                  data: bytes) -> None:
    path = tmp_path_factory.mktemp("model") / "m.yaml"
    path.write_bytes(data)
    try:
        _check(load_model_file(path))
    except ModelFileError as exc:
        _one_line_naming(str(exc), str(path))


def test_a_missing_file_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model_file(tmp_path / "absent.yaml")


@fuzz(20)
@given(field=st.sampled_from(["kvCacheThreshold", "queueSpareTrigger", "pendingStuckAfter"]),
       value=huge_integers().filter(lambda n: n < 10**4000), where=st.sampled_from(["thresholds", "shadow"]))
@example(field="kvCacheThreshold", value=10**400, where="thresholds")
def test_a_huge_threshold_is_a_model_file_error(field: str, value: int, where: str) -> None:
    # was an OverflowError out of wva.saturation.config._number
    with pytest.raises(ModelFileError, match=field):
        parse_model_file(yaml.safe_dump(mutate(BASE, (where, field), value)), "m.yaml")


# Bugs found by fuzzing in wva.replay.config, fixed there; these keep them fixed.


@fuzz(100)
@given(value=huge_integers().filter(lambda n: n < 10**4000))
@example(value=10**400)
def test_a_huge_cost_is_a_model_file_error(value: int) -> None:
    with pytest.raises(ModelFileError, match="cost"):
        parse_model_file(yaml.safe_dump(mutate(BASE, ("variants", 0, "cost"), value)), "m.yaml")


def test_an_infinite_cost_is_rejected() -> None:
    try:
        model = parse_model_file(yaml.safe_dump(mutate(BASE, ("variants", 0, "cost"), math.inf)), "m.yaml")
    except ModelFileError as exc:
        assert "cost" in str(exc)
    else:
        assert math.isfinite(model.variants[0].cost), model.variants[0]


@pytest.mark.parametrize("field", ["minReplicas", "initialReplicas"])
def test_null_replica_counts_are_a_model_file_error(field: str) -> None:
    text = yaml.safe_dump(mutate(BASE, ("variants", 0, field), None))
    with pytest.raises(ModelFileError, match=field):
        parse_model_file(text, "m.yaml")
