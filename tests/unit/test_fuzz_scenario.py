"""Fuzzed demo scenarios: ``wva.sim.loadmodel.parse_scenario`` and ``load_scenario`` (``wva demo --scenario``).

Properties: a scenario file is either accepted, with finite numbers in their ranges, or rejected with
``ScenarioError`` (the only error the demo catches) in one line that names the file, the line and the
field at fault, whatever the file holds (syntax errors, bad tagged scalars, deep nesting). The last
tests hold bugs fuzzing found in ``wva.sim.loadmodel`` (huge integers), fixed since.
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
from wva.sim.loadmodel import Scenario, ScenarioError, builtin_scenarios, load_scenario, parse_scenario

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "operator" / "wva" / "sim" / "scenarios"
BASE: dict[str, Any] = yaml.safe_load((SCENARIO_DIR / "default.yaml").read_text())

#: Mutable places of a scenario and the word its rejection must contain.
PATHS: dict[tuple[str | int, ...], str] = {
    ("load",): "load", ("load", 0): "load", ("load", 1, 0): "load", ("load", 1, 1): "load", ("load", 2, 0): "load",
    ("load", 2, 1): "load",
    ("variants",): "variants", ("variants", 0): "variant", ("variants", 1, "name"): "name",
    ("variants", 0, "cost"): "cost", ("variants", 0, "capacity"): "capacity",
    ("variants", 1, "minReplicas"): "minReplicas", ("variants", 0, "maxReplicas"): "maxReplicas",
    ("variants", 1, "replicas"): "replicas",
    ("queueModel",): "queueModel", ("queueModel", "kvPerRho"): "kvPerRho", ("queueModel", "kvMax"): "kvMax",
    ("queueModel", "queuePerOverload"): "queuePerOverload", ("queueModel", "noise"): "noise",
    ("queueModel", "seed"): "seed",
    ("duration",): "duration", ("speed",): "speed", ("interval",): "interval", ("coldStart",): "coldStart",
    ("scaleToZero",): "scaleToZero", ("name",): "name", ("namespace",): "namespace", ("model",): "model",
    ("description",): "description", ("variants", 0, "accelerator"): "accelerator",
}

values = st.one_of(
    scalars(huge_ints=False),
    json_values(huge_ints=False, max_leaves=4),
    st.sampled_from(["fast", "", "-1", "1e3"]),
    st.just(DELETE),
)


def _parse_text(text: str) -> Scenario:
    return parse_scenario(yamlfile.parse(text, "s.yaml"), where="s.yaml")


def _check(scenario: Scenario) -> None:
    numbers = [scenario.duration, scenario.speed, scenario.interval, scenario.cold_start]
    numbers += [x for point in scenario.points for x in point]
    numbers += [x for v in scenario.variants for x in (v.cost, v.capacity)]
    numbers += [scenario.queue.noise, scenario.queue.kv_max, scenario.queue.kv_per_rho]
    assert all(math.isfinite(x) for x in numbers)
    assert scenario.duration > 0 and scenario.speed > 0 and scenario.interval > 0
    assert all(t >= 0 and load >= 0 for t, load in scenario.points)
    assert [t for t, _ in scenario.points] == sorted(t for t, _ in scenario.points)
    for v in scenario.variants:
        assert v.capacity > 0 and v.cost >= 0 and 1 <= v.initial_replicas <= v.max_replicas
    assert len({v.name for v in scenario.variants}) == len(scenario.variants)


def test_the_builtin_scenarios_parse() -> None:
    assert {"default", "spike"} <= set(builtin_scenarios())
    for name in builtin_scenarios():
        _check(load_scenario(name))


@fuzz(150)
@given(json_values(huge_ints=False))
def test_any_document_is_a_scenario_or_a_scenario_error(data: Any) -> None:
    try:
        scenario = parse_scenario(data)
    except ScenarioError as exc:
        assert str(exc).startswith("<scenario>")
    else:
        _check(scenario)


@fuzz(200)
@given(path=st.sampled_from(sorted(PATHS, key=repr)), value=values)
@example(path=("variants", 1, "name"), value=BASE["variants"][0]["name"])  # duplicate names
@example(path=("variants", 1, "replicas"), value=7)  # above maxReplicas
@example(path=("load", 2, 0), value=1)  # out of time order
@example(path=("scaleToZero",), value={"retention": 5, "other": 1})
@example(path=("speed",), value=math.nan)
@example(path=("load", 1, 1), value=math.inf)
def test_a_rejected_scenario_names_the_file_the_line_and_the_field(path: tuple[str | int, ...], value: Any) -> None:
    text = yaml.safe_dump(mutate(BASE, path, value), allow_unicode=True)
    try:
        scenario = _parse_text(text)
    except ScenarioError as exc:
        message = str(exc)
        assert message.startswith("s.yaml: line ") and "\n" not in message, message
        assert PATHS[path] in message, (path, message)
    else:
        _check(scenario)


@fuzz(150)
@given(text=yaml_texts())
@example(text="load: [")
@example(text="variants: !!bool x")  # was a KeyError out of PyYAML
@example(text="duration: !!timestamp x")  # was an AttributeError
@example(text="speed: 2026-99-99")  # was a ValueError (an implicit date)
@example(text="speed: 1" + "0" * 5000)  # was a ValueError (an int too long to convert)
@example(text="load: " + "[" * 1000)  # was a RecursionError
def test_a_scenario_file_is_a_scenario_or_a_scenario_error(tmp_path_factory: pytest.TempPathFactory,
                                                           text: str) -> None:
    path = tmp_path_factory.mktemp("scenario") / "s.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        scenario = load_scenario(str(path))
    except ScenarioError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
    else:
        _check(scenario)


# Bugs found by fuzzing in wva.sim.loadmodel, fixed there; these keep them fixed.

NUMBER_PATHS = [("speed",), ("duration",), ("interval",), ("coldStart",), ("variants", 0, "cost"),
                ("variants", 0, "capacity"), ("queueModel", "noise"), ("queueModel", "kvMax"), ("load", 1, 1),
                ("load", 1, 0), ("scaleToZero",)]


@fuzz(150)
@given(path=st.sampled_from(NUMBER_PATHS), value=huge_integers().filter(lambda n: abs(n) < 10**4000))
@example(path=("speed",), value=10**400)
def test_huge_integers_are_a_scenario_error(path: tuple[str | int, ...], value: int) -> None:
    if path == ("scaleToZero",):
        path, value = ("scaleToZero",), {"retention": value}  # type: ignore[assignment]
    try:
        _check(_parse_text(yaml.safe_dump(mutate(BASE, path, value))))
    except ScenarioError as exc:
        assert str(exc).startswith("s.yaml: line ")
