"""Fuzzed environment: every variable ``Settings.from_env`` reads, given random values.

Properties: the only error is ``SettingsError`` (a ValueError); it names the variable at fault and
its value; every problem of a combined environment is reported (none hides another); an accepted
environment holds values within the documented ranges. The duration and flag parsers underneath
get the same treatment.
"""

from __future__ import annotations

import inspect
import math
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzzing import AWKWARD_STRINGS, fuzz
from wva.collector import collector_v2_enabled
from wva.collector.v2.batching import batch_queries_enabled
from wva.durations import format_go_duration, parse_duration, parse_go_duration
from wva.flags import flag_word
from wva.settings import Settings, SettingsError

#: Every variable from_env reads, taken from its source so a new variable is fuzzed too.
VARIABLES = tuple(re.findall(r'take\("([A-Z0-9_]+)"', inspect.getsource(Settings.from_env)))

#: Problems that are about two variables together rather than one value.
CROSS_CHECKS = (" needs ", "must differ", "must be set together", "is required", "need WVA_EPP_NAMESPACE_LABEL")

_TOKENS = (
    "http://", "https://", "ftp://", "://", "prometheus", "[::1", "[::1]", ":", "9090", "/", "/metrics", "?", "#",
    "{", "}", "{ip}", "{port}", "{pod}", "{namespace}", "{port[0]}", "{ip.real}", "{ip!r}", "{ip:>9}", "{0}", "{}",
    "=", ",", " ", "\t", "ns", "ns-1", "s", "ms", "m", "h", "us", "µs", "1", "0", "-", "+", ".", "e", "5", "250",
    "9" * 400, "1e400", "nan", "inf", "true", "false", "yes", "off", "TRUE", "POST", "get", "pods", "auto",
    "prometheus", "direct", "hpa", "debug", "WARN", "a" * 70, "__x", "_x", "Ab", "\x00", "\n", "é", "ordinal",
)

values = st.one_of(
    st.sampled_from(AWKWARD_STRINGS),
    st.lists(st.sampled_from(_TOKENS), max_size=8).map("".join),
    st.text(max_size=30),
)


def _problems(env: dict[str, str]) -> list[str]:
    try:
        Settings.from_env(env)
    except SettingsError as exc:
        return exc.problems
    return []


def _check_ranges(s: Settings) -> None:
    for seconds in (s.prometheus_query_timeout, s.global_opt_interval, s.lease_duration, s.resync_interval,
                    s.pod_scrape_timeout):
        assert math.isfinite(seconds) and seconds > 0
    assert 0.01 <= s.scale_from_zero_interval <= 60
    assert 0 <= s.drain_timeout <= 600
    assert 1 <= s.decision_ring_size <= 1000
    assert 1 <= s.shards <= 1024 and 0 <= s.shard_index < s.shards
    assert 1 <= s.pod_metrics_port <= 65535
    assert s.pod_scrape_concurrency >= 1
    assert s.prometheus_query_method in ("GET", "POST")
    assert s.pod_metrics_scheme in ("http", "https")
    assert s.epp_model_label != s.epp_namespace_label
    if s.pod_metrics_url_template is not None:  # renders at every scrape without an error
        s.pod_metrics_url_template.format(namespace="n", pod="p", ip="10.0.0.1", port=1)


def test_every_variable_is_fuzzed() -> None:
    assert len(VARIABLES) >= 45 and len(set(VARIABLES)) == len(VARIABLES)
    assert {"PROMETHEUS_BASE_URL", "GLOBAL_OPT_INTERVAL", "WVA_DRAIN_TIMEOUT", "WVA_POD_METRICS_URL_TEMPLATE"} <= set(
        VARIABLES
    )


@fuzz(200)
@given(var=st.sampled_from(VARIABLES), value=values)
@example(var="WVA_POD_METRICS_URL_TEMPLATE", value="http://{ip}:{port[0]}/metrics")  # was a TypeError
@example(var="WVA_POD_METRICS_URL_TEMPLATE", value="http://{ip.real}/metrics")  # was an AttributeError
@example(var="WVA_POD_METRICS_URL_TEMPLATE", value="http://{ip:>999999999}/")  # a 1 GB URL on every scrape
@example(var="GLOBAL_OPT_INTERVAL", value="9" * 400 + "h")
@example(var="WVA_POD_SCRAPE_CONCURRENCY", value="9" * 5000)
@example(var="WVA_EPP_METRICS_SOURCE", value="PROMETHEUS")  # valid, but needs PROMETHEUS_BASE_URL
def test_one_variable_fails_only_with_settings_error_naming_it(var: str, value: str) -> None:
    try:
        s = Settings.from_env({var: value})
    except SettingsError as exc:
        assert exc.problems
        assert var in str(exc)
        for problem in exc.problems:
            assert any(name in problem for name in VARIABLES), problem
        for problem in exc.problems:  # the variable's own problem quotes the value; else a named cross-check
            if not problem.startswith(f"{var}={value!r}: "):
                assert any(phrase in problem for phrase in CROSS_CHECKS), problem
    else:
        _check_ranges(s)


@fuzz(75)
@given(env=st.dictionaries(st.sampled_from(VARIABLES), values, max_size=8))
def test_every_problem_of_an_environment_is_reported(env: dict[str, str]) -> None:
    combined = _problems(env)
    for var, value in env.items():
        for problem in _problems({var: value}):
            if problem.startswith(f"{var}={value!r}: "):  # the variable's own problem, not a cross-check
                assert problem in combined
    if not combined:
        _check_ranges(Settings.from_env(env))


@fuzz(50)
@given(var=st.sampled_from(VARIABLES), value=values, pad=st.sampled_from([" ", "\t", "  \n"]))
def test_surrounding_whitespace_never_changes_the_outcome(var: str, value: str, pad: str) -> None:
    def outcome(v: str) -> object:
        try:
            return Settings.from_env({var: v}).model_dump()
        except SettingsError as exc:
            return len(exc.problems)

    assert outcome(pad + value + pad) == outcome(value)


@fuzz(150)
@given(st.one_of(values, st.floats().map(repr), st.integers().map(str)))
@example("1e400")
@example("nan")
@example("9" * 400 + "s")
@example("-0s")
def test_durations_are_finite_non_negative_or_a_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert repr(text) in str(exc)
    else:
        assert math.isfinite(seconds) and seconds >= 0
    try:
        go = parse_go_duration(text)
    except ValueError:
        pass
    else:
        assert math.isfinite(go)


@fuzz(50)
@given(st.floats(min_value=0, max_value=1e7))
def test_go_durations_round_trip(seconds: float) -> None:
    assert parse_go_duration(format_go_duration(seconds)) == pytest.approx(seconds, abs=1e-3)


@fuzz(100)
@given(values)
def test_flag_parsers_accept_exactly_the_flag_words(text: str) -> None:
    word = flag_word(text)
    assert word is None or text.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off")
    for parse in (collector_v2_enabled, batch_queries_enabled):
        try:
            enabled = parse(text)
        except ValueError as exc:
            assert word is None and text.strip()
            assert repr(text) in str(exc)
        else:
            assert (word is None and not text.strip()) or enabled is word

