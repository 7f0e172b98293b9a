"""docs/demo.md against the demo's code: its options table, its --list-scenarios example and the
default scenario's length and load. The run itself is checked in tests/integration/test_demo_scenarios.py."""

from __future__ import annotations

import argparse

import pytest

import demo_doc
from wva.sim.demo_cli import add_demo_arguments, list_scenarios
from wva.sim.loadmodel import load_scenario


def test_option_defaults_are_the_parsers() -> None:
    parser = argparse.ArgumentParser()
    add_demo_arguments(parser)
    parsed = vars(parser.parse_args([]))
    documented = demo_doc.option_defaults()
    assert {"--scenario", "--collector", "--output"} <= set(documented)
    for option, default in documented.items():
        assert str(parsed[option.lstrip("-").replace("-", "_")]) == default, option


def test_list_scenarios_example_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert list_scenarios() == 0
    printed = {}
    for line in capsys.readouterr().out.splitlines():
        name, _, rest = line.partition(" ")
        printed[name] = rest.strip()
    example = demo_doc.list_scenarios_example()
    assert example and {name: printed.get(name) for name in example} == example


def test_default_walkthrough_describes_the_default_scenario() -> None:
    doc, scenario = demo_doc.default_walkthrough(), load_scenario("default")
    assert (doc.duration, doc.speed) == (scenario.duration, scenario.speed)
    levels = [rate for _t, rate in scenario.points]
    steps = iter(levels)
    assert all(any(rate == step for rate in steps) for step in doc.load_steps), (doc.load_steps, levels)
    cheap, premium = scenario.variants[0], scenario.variants[1]
    assert (doc.cheap_start, doc.cheap_peak) == (cheap.initial_replicas, cheap.max_replicas)
    assert doc.premium_start == premium.initial_replicas and doc.premium_peak <= premium.max_replicas
    assert doc.cheap_down == (cheap.max_replicas, cheap.min_replicas)
    assert doc.premium_down == (doc.premium_peak, premium.min_replicas)
