"""The files a user hands wva are read strictly: scenario files (``wva demo``) and model files
(``wva backtest`` / ``wva explain``). A typo, a YAML syntax error or a value out of range is one
line on stderr naming the file, the line and what is allowed, exit code 2, and nothing starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wva import yamlfile
from wva.cli import main
from wva.replay.config import ModelFileError, parse_model_file
from wva.sim.loadmodel import (
    QUEUE_MODEL_KEYS,
    TOP_KEYS,
    VARIANT_KEYS,
    ScenarioError,
    builtin_scenarios,
    load_scenario,
)

GOOD = """\
name: mine
description: A small ramp.
speed: 10
load:
  - [0, 2]
  - [300, 8]
variants:
  - name: cheap
    accelerator: L4
    cost: 5
    capacity: 4
    maxReplicas: 3
queueModel:
  kvMax: 0.99
"""


def write(tmp_path: Path, text: str, name: str = "scenario.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def demo(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["demo", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("wva demo: "), err
    assert "Traceback" not in err
    return lines[0]


# --- the reusable reader ------------------------------------------------------------------------
def test_yaml_reader_keeps_the_line_of_every_key_and_item() -> None:
    data = yamlfile.parse("a: 1\nlist:\n  - x\n  - {b: 2}\n", "f.yaml")
    assert data == {"a": 1, "list": ["x", {"b": 2}]}
    assert yamlfile.line_of(data, "list") == 2
    assert yamlfile.line_of(data["list"], 1) == 4
    assert yamlfile.at("f.yaml", data["list"][1], "b") == "f.yaml: line 4"
    assert yamlfile.at("f.yaml", {"plain": "dict"}, "plain") == "f.yaml"  # no line known: just the file


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a: 1\na: 2\n", "f.yaml: line 2: invalid YAML: duplicate key 'a' (first on line 1)"),
        ("a: 1\n b: 2\n", "f.yaml: line 2: invalid YAML: mapping values are not allowed here"),
        ("a: [1, 2\nb: 3\n", "f.yaml: line 2: invalid YAML: expected ',' or ']'"),
        ("a: 1\nb: \x07\n", "f.yaml: line 2: invalid YAML: unacceptable character #x0007"),
        ("a: 1\n---\nb: 2\n", "f.yaml: line 2: invalid YAML: "),
    ],
)
def test_yaml_errors_name_the_file_and_line(text: str, says: str) -> None:
    with pytest.raises(yamlfile.YamlFileError) as info:
        yamlfile.parse(text, "f.yaml")
    assert str(info.value).startswith(says), info.value
    assert "<unicode string>" not in str(info.value) and "\n" not in str(info.value)


def test_merge_keys_may_be_overridden_but_explicit_keys_not_repeated() -> None:
    data = yamlfile.parse("base: &b {x: 1, y: 2}\nthing:\n  <<: *b\n  x: 3\n", "f.yaml")
    assert data["thing"] == {"x": 3, "y": 2}


def test_check_keys_suggests_the_nearest_key_or_lists_them() -> None:
    data = yamlfile.parse("load: []\nvariants: []\nloda: 1\n", "f.yaml")
    with pytest.raises(yamlfile.YamlFileError) as info:
        yamlfile.check_keys(data, TOP_KEYS, "f.yaml")
    assert str(info.value) == "f.yaml: line 3: unknown key 'loda' (did you mean 'load'?)"
    with pytest.raises(yamlfile.YamlFileError, match=r"unknown key 'x.colour' \(valid keys: load, variants\)"):
        yamlfile.check_keys(yamlfile.parse("colour: red\n", "f.yaml"), ("load", "variants"), "f.yaml", "x.")


def test_reading_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(yamlfile.YamlFileError, match=r"missing\.yaml: cannot read"):
        yamlfile.read(tmp_path / "missing.yaml")


# --- scenario files -----------------------------------------------------------------------------
def test_the_good_scenario_loads(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD))
    assert (s.name, s.speed, s.variant("cheap").max_replicas, s.queue.kv_max) == ("mine", 10.0, 3, 0.99)


@pytest.mark.parametrize(
    ("old", "new", "line", "says"),
    [
        ("load:", "loda:", 4, "unknown key 'loda' (did you mean 'load'?)"),
        ("    cost: 5", "    colour: red", 10, "unknown key 'variants[0].colour' (valid keys: name, accelerator"),
        ("    maxReplicas: 3", "    maxReplica: 3", 12,
         "unknown key 'variants[0].maxReplica' (did you mean 'maxReplicas'?)"),
        ("  kvMax: 0.99", "  kvmax: 0.99", 14, "unknown key 'queueModel.kvmax' (did you mean 'kvMax'?)"),
    ],
)
def test_a_typo_key_names_file_line_and_the_nearest_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, line: int, says: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    code, out, err = demo(["--scenario", path, "--output", str(tmp_path / "out")], capsys)
    assert code == 2 and out == ""
    assert one_error(err).startswith(f"wva demo: {path}: line {line}: {says}"), err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


@pytest.mark.parametrize(
    ("old", "new", "line", "says"),
    [
        ("speed: 10", "speed: 0", 3, "speed must be a number > 0, got 0"),
        ("  kvMax: 0.99", "  kvMax: 1.5", 14, "queueModel.kvMax must be a number in (0, 1], got 1.5"),
        ("    capacity: 4", "    capacity: -4", 11, "variants[0].capacity must be a number > 0, got -4"),
        ("    cost: 5", "    cost: .nan", 10, "variants[0].cost must be a number >= 0, got nan"),
        ("    maxReplicas: 3", "    maxReplicas: 3\n    replicas: 7", 13,
         "variants[0].replicas must be an integer in 1..3 (1..maxReplicas), got 7"),
        ("    maxReplicas: 3", "    maxReplicas: 3\n    minReplicas: 4", 12,
         "variants[0].maxReplicas must be an integer >= 4 (at least 1 and at least minReplicas), got 3"),
        ("  - [300, 8]", "  - [300, 8]\n  - [100, 1]", 7, "load points must be in time order: load[2] at t=100"),
        ("  - [300, 8]", "  - [300, -8]", 6, "load[1] must be [seconds, requests_per_second], both numbers >= 0"),
        ("  - name: cheap", "  - name: Cheap_One", 8, "variants[0].name must be a Kubernetes name"),
        ("    accelerator: L4\n", "", 8, "variants[0].accelerator is required"),
    ],
)
def test_out_of_range_values_say_the_allowed_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, line: int, says: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    code, _out, err = demo(["--scenario", path], capsys)
    assert code == 2
    message = one_error(err)
    assert message.startswith(f"wva demo: {path}: line {line}: "), message
    assert says in message


def test_a_yaml_syntax_error_names_file_and_line_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  - [300, 8]", "  - [300, 8\n  - [400, 2]"))
    run = subprocess.run(
        [sys.executable, "-m", "wva.cli", "demo", "--scenario", path, "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 2 and run.stdout == ""
    message = one_error(run.stderr)
    assert message.startswith(f"wva demo: {path}: line 7: invalid YAML: "), message
    assert "<unicode string>" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_built_in_suggests_the_nearest(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = demo(["--scenario", "spiky"], capsys)
    assert code == 2
    assert "unknown scenario 'spiky' (did you mean 'spike'?)" in one_error(err)


@pytest.mark.parametrize(("flag", "value"), [("--speed", "0"), ("--speed", "nan"), ("--duration", "-5")])
def test_bad_overrides_are_clean_errors(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = demo(["--scenario", "steady", flag, value], capsys)
    assert code == 2
    assert f"{flag} must be positive" in one_error(err)


def test_every_bundled_scenario_validates_and_uses_only_known_keys() -> None:
    names = builtin_scenarios()
    assert {"default", "spike", "steady", "scale-to-zero", "cold-start"} <= set(names)
    for name in names:
        s = load_scenario(name)
        assert s.description, f"{name}: the bundled scenarios describe themselves (--list-scenarios)"
    assert {"cost", "capacity", "replicas"} <= set(VARIANT_KEYS) and "seed" in QUEUE_MODEL_KEYS


def test_list_scenarios_lists_every_bundled_file_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = demo(["--list-scenarios"], capsys)
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == builtin_scenarios()
    default = next(line for line in lines if line.startswith("default "))
    assert "Ramp up, spike, ramp down." in default and "2400 s simulated at 20x" in default


def test_a_scenario_error_is_a_value_error_with_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, "just a string\n")
    with pytest.raises(ScenarioError, match=rf"^{path}: a scenario must be a YAML mapping"):
        load_scenario(path)


# --- model files (wva backtest, wva explain --prometheus) ------------------------------------------
MODEL = "model: m\nnamespace: ns\nthresholds:\n  kvCacheThreshold: 0.8\nvariants:\n  - name: a\n    cost: 5\n"


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("  kvCacheThreshold", "  kvCacheTreshold", "m.yaml: line 4: unknown key 'thresholds.kvCacheTreshold' "
                                                    "(did you mean 'kvCacheThreshold'?)"),
        ("    cost: 5", "    cots: 5", "m.yaml: line 7: unknown key 'variants[0].cots' (did you mean 'cost'?)"),
        ("    cost: 5", "    cost: -5", "m.yaml: line 7: 'cost' must be a number >= 0, got -5"),
        ("    cost: 5", "    cost: [5", "m.yaml: line 8: invalid YAML: "),
        ("    cost: 5", "    cost: 5\n  - name: a", "m.yaml: line 8: variant name 'a' appears twice"),
    ],
)
def test_model_file_errors_name_file_and_line(old: str, new: str, says: str) -> None:
    with pytest.raises(ModelFileError) as info:
        parse_model_file(MODEL.replace(old, new), "m.yaml")
    assert str(info.value).startswith(says), info.value


def test_a_good_model_file_carries_no_line_bookkeeping() -> None:
    model = parse_model_file(MODEL, "m.yaml")
    assert model.config.kv_cache_threshold == 0.8 and [v.name for v in model.variants] == ["a"]
