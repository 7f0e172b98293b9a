"""The demo runs the operator with the operator's defaults, except where docs/configuration.md says
otherwise ("The demo's departures"); this compares that table with what the demo's code sets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from wva import settings as wva_settings
from wva.collector.legacy.config import CacheConfig, load_cache_config
from wva.saturation.config import BUILTIN_DEFAULT, SaturationScalingConfig, parse_saturation_config_entry
from wva.sim.demo import DEMO_MAIN_CONFIG, DemoOptions, demo_environment, demo_rules
from wva.sim.demo_cli import add_demo_arguments
from wva.sim.loadmodel import Scenario, builtin_scenarios, load_scenario, parse_scenario

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# Where the demo's parts are, not how the operator behaves.
WHERE = {"WVA_KUBE_API_URL", "POD_NAMESPACE", "POD_NAME", "PROMETHEUS_BASE_URL", "WVA_EPP_METRICS_URLS"}


def documented_departures() -> set[str]:
    text = DOC.read_text()
    match = re.search(r"^### The demo's departures\n(.*?)(?=^#|\Z)", text, re.S | re.M)
    assert match, "docs/configuration.md has no section \"### The demo's departures\""
    rows = [line for line in match.group(1).splitlines() if line.startswith("| `")]
    names: set[str] = set()
    for row in rows:
        names |= set(re.findall(r"`([^`]+)`", row.split("|")[1]))
    assert names, "the departures table lists nothing"
    return names


def _scenarios() -> list[Scenario]:
    # a scenario file may pick its own engine interval; the built-in ones keep the operator's
    custom = parse_scenario({
        "name": "custom", "interval": 15, "load": [[0, 4], [600, 8]],
        "variants": [{"name": "a", "accelerator": "L4", "capacity": 4}],
    })
    return [load_scenario(name) for name in builtin_scenarios()] + [custom]


def _settings_departures(env: dict[str, str]) -> set[str]:
    """The keys of ``env`` that change a setting, each set alone over the demo's addresses."""
    where = {key: value for key, value in env.items() if key in WHERE}
    baseline = wva_settings.Settings.from_env(where)
    return {
        key for key, value in env.items()
        if key not in WHERE and wva_settings.Settings.from_env({**where, key: value}) != baseline
    }


def _rules_departures(scenario: Scenario) -> set[str]:
    text = "".join(f"{k}: {v}\n" for k, v in demo_rules(scenario).items())
    entry = parse_saturation_config_entry("default", text)
    aliases = {name: field.alias or name for name, field in SaturationScalingConfig.model_fields.items()}
    return {aliases[name] for name in entry.model_fields_set if getattr(entry, name) != getattr(BUILTIN_DEFAULT, name)}


def _main_config_departures() -> set[str]:
    assert load_cache_config(DEMO_MAIN_CONFIG)[1] == []
    return {key for key, value in DEMO_MAIN_CONFIG.items() if load_cache_config({key: value})[0] != CacheConfig()}


def actual_departures() -> set[str]:
    found = _main_config_departures()
    for scenario in _scenarios():
        for source in ("prometheus", "pods"):
            env = demo_environment(
                scenario, source, DemoOptions(scenario).collector, "http://127.0.0.1:1",
                prometheus_url="http://127.0.0.1:2" if source == "prometheus" else None,
                epp_url="http://127.0.0.1:3/metrics" if scenario.scale_to_zero_retention is not None else None,
            )
            found |= _settings_departures(env) | _rules_departures(scenario)
    return found


def test_the_demo_departs_from_the_defaults_exactly_where_the_docs_say() -> None:
    documented, actual = documented_departures(), actual_departures()
    unexplained, stale = actual - documented, documented - actual
    assert unexplained == set(), f"the demo sets these without docs/configuration.md saying why: {unexplained}"
    assert stale == set(), f"docs/configuration.md lists departures the demo no longer makes: {stale}"


def test_the_demo_collector_is_the_operators_default() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_demo_arguments(parser)
    collector = parser.parse_args([]).collector
    assert DemoOptions(load_scenario("default")).collector == collector
    env = demo_environment(load_scenario("default"), "prometheus", collector, "http://127.0.0.1:1")
    assert wva_settings.Settings.from_env(env).collector_v2 is wva_settings.Settings.from_env({}).collector_v2


@pytest.mark.parametrize("extra", [{"COLLECTOR_V2": "true"}, {"LOG_LEVEL": "debug"}])
def test_an_undocumented_departure_is_seen(extra: dict[str, Any]) -> None:
    """The comparison can fail: a setting the demo added without a row in the table shows up."""
    env = {**demo_environment(load_scenario("default"), "prometheus", "v1", "http://127.0.0.1:1"), **extra}
    assert set(extra) <= _settings_departures(env) - documented_departures()
