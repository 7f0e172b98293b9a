"""Recording rules (wva.collector.v2.recording) and the batched cycle reading them.

The rules and the engine's queries of their output come from one module; the shipped rules files are
generated from it. The batcher's behaviour is checked over a fake Prometheus that answers the raw
forms, the recorded forms and the presence branch from one dataset, so the recorded path can be
compared with the raw path call for call.
"""

from __future__ import annotations

import logging
import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_batching import NOW, OPTIMIZER_VALUES, TRICKY_MODELS, FakePrometheus, _Holder, dataset, one_cycle, variants

from binaries import assert_rules_check_passes, require_promtool, run_promtool
from fakes import FakeClock
from wva.collector import promql
from wva.collector.v2 import (
    PodVAMapper,
    PrometheusSource,
    PrometheusSourceConfig,
    QueryList,
    SourceRegistry,
    V2MetricsCollector,
)
from wva.collector.v2.batching import (
    BATCH_QUERIES,
    BATCH_TAG_LABEL,
    RAW_EMPTY_RECHECK,
    QueryBatcher,
    combined_batch_query,
)
from wva.collector.v2.recording import (
    PRESENCE_FORM,
    PRESENCE_TAG,
    RECORDED_FORMS,
    RECORDED_QUERIES,
    RULES,
    RecordingMode,
    fresh_models,
    recording_mode,
    recording_mode_from_env,
    rule_name,
    rules_document,
    rules_file_text,
)
from wva.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]
PLAIN = REPO / "deploy" / "prometheus" / "wva-recording-rules.yaml"
CHART_COPY = REPO / "charts" / "workload-variant-autoscaler" / "files" / "wva-recording-rules.yaml"
GENERATOR = REPO / "deploy" / "prometheus" / "build_recording_rules.py"
_RATE = re.compile(r'rate\(([a-z_:]+)\{namespace="\{\{\.namespace\}\}"\}\[1m\]\)')


# --- the setting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mode"),
    [(None, RecordingMode.AUTO), ("", RecordingMode.AUTO), (" Auto ", RecordingMode.AUTO),
     ("true", RecordingMode.ON), ("ON", RecordingMode.ON), ("1", RecordingMode.ON),
     ("false", RecordingMode.OFF), (" no ", RecordingMode.OFF), ("0", RecordingMode.OFF)],
)
def test_mode_parsing(value: str | None, mode: RecordingMode) -> None:
    assert recording_mode(value) is mode


def test_a_bad_mode_is_an_error_naming_the_variable_and_the_value() -> None:
    with pytest.raises(ValueError, match="WVA_RECORDING_RULES='sometimes'"):
        recording_mode("sometimes")
    assert recording_mode_from_env({}) is RecordingMode.AUTO
    assert recording_mode_from_env({"WVA_RECORDING_RULES": "off"}) is RecordingMode.OFF
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"WVA_RECORDING_RULES": "sometimes"})
    assert err.value.problems == [
        "WVA_RECORDING_RULES='sometimes': not a recording-rules mode; use auto, true/1/yes/on or false/0/no/off"
    ]
    assert Settings.from_env({}).recording_rules == "auto"
    assert Settings.from_env({"WVA_RECORDING_RULES": "YES"}).recording_rules == "true"


# --- the rules ----------------------------------------------------------------------------------


def test_each_rule_is_an_inner_expression_of_the_raw_batch_forms() -> None:
    by_record = {rule.record: rule.expr for rule in RULES}
    covered: list[str] = []
    for query in RECORDED_QUERIES:
        metrics = _RATE.findall(BATCH_QUERIES[query])
        assert metrics, query
        # the raw form is sum by (model_name) (rate(<m>{namespace}[1m])) per counter, divided in order
        assert BATCH_QUERIES[query] == "/".join(
            f'sum by (model_name) (rate({m}{{namespace="{{{{.namespace}}}}"}}[1m]))' for m in metrics
        )
        for metric in metrics:
            assert by_record[rule_name(metric)] == f"sum by (namespace, model_name) (rate({metric}[1m]))"
            covered.append(rule_name(metric))
        # and its recorded form divides the same recorded sums in the same order
        assert RECORDED_FORMS[query] == "/".join(
            f'sum by (model_name) ({rule_name(m)}{{namespace="{{{{.namespace}}}}"}})' for m in metrics
        )
    assert covered == [rule.record for rule in RULES]  # nothing recorded that the engine does not read
    assert set(RECORDED_QUERIES) == set(promql.OPTIMIZER_QUERIES)


def test_rule_names_follow_the_level_metric_operations_convention() -> None:
    names = [rule.record for rule in RULES]
    assert len(set(names)) == len(names)
    for name in names:
        level, metric, operation = name.split(":")
        assert (level, operation) == ("namespace_model", "rate1m")
        assert re.fullmatch(r"vllm_[a-z_]+", metric) and not metric.endswith("_total"), name
    assert rule_name(promql.REQUEST_SUCCESS_TOTAL) == "namespace_model:vllm_request_success:rate1m"
    assert PRESENCE_FORM == (
        'max by (model_name) (timestamp(namespace_model:vllm_request_success:rate1m{namespace="{{.namespace}}"}))'
    )


def test_the_shipped_files_are_what_the_module_generates() -> None:
    text = rules_file_text()
    assert PLAIN.read_text(encoding="utf-8") == text, "run: python deploy/prometheus/build_recording_rules.py"
    assert CHART_COPY.read_bytes() == PLAIN.read_bytes(), "run: make sync-monitoring"
    assert yaml.safe_load(text) == rules_document()
    (group,) = rules_document("1m")["groups"]  # type: ignore[misc]
    assert group["interval"] == "1m" and group["name"] == "wva.recording"


def test_the_generator_check_mode_reports_a_hand_edited_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = runpy.run_path(str(GENERATOR))
    main = namespace["main"]
    assert main(["--check"]) == 0
    edited = tmp_path / "wva-recording-rules.yaml"
    edited.write_text(rules_file_text().replace("rate1m", "rate5m", 1), encoding="utf-8")
    main.__globals__["OUTPUTS"] = (edited,)
    main.__globals__["REPO"] = tmp_path
    assert main(["--check"]) == 1
    assert "wva-recording-rules.yaml differs" in capsys.readouterr().out
    assert main([]) == 0 and edited.read_text(encoding="utf-8") == rules_file_text()


def test_recorded_forms_escape_a_hostile_namespace() -> None:
    holder = _Holder(QueryList())
    batcher = QueryBatcher()
    batcher._register(holder)
    text = holder.queries.build(batcher._recorded_name, {"namespace": 'x"} or vector(1) #'})
    assert text.count('namespace="x\\"} or vector(1) #"') == text.count("namespace=")


def test_fresh_models() -> None:
    stamps = {"a": 100.0, "b": 10.0, "c": 130.0}
    assert fresh_models(stamps, now=120.0, max_age=30.0) == {"a", "c"}  # c: Prometheus' clock is ahead


# --- the batcher over recorded series -----------------------------------------------------------


@dataclass
class RecordingPrometheus(FakePrometheus):
    """FakePrometheus plus wva's recording rules: ``recorded`` maps (namespace, model) to the age of its
    recorded samples (absent: not recorded). The recorded forms answer ``recorded_values`` (default:
    the raw values, as the rules would). ``failing`` holds batch query names answered with an error."""

    recorded: dict[tuple[str, str], float] = field(default_factory=dict)
    recorded_values: dict[str, float] = field(default_factory=lambda: dict(OPTIMIZER_VALUES))
    failing: set[str] = field(default_factory=set)

    def texts(self) -> tuple[QueryList, QueryBatcher]:
        holder = _Holder(QueryList())
        batcher = QueryBatcher(recording=RecordingMode.ON)
        batcher._register(holder)
        return holder.queries, batcher

    def answers(self) -> dict[str, list[dict[str, Any]]]:
        out = super().answers()
        queries, batcher = self.texts()
        self.names: dict[str, str] = {}
        for ns in sorted({p.namespace for p in self.pods}):
            params = {promql.PARAM_NAMESPACE: ns}
            raw_combined = queries.build(batcher._combined_name, params)
            assert raw_combined in out  # the fake's own combined text carries the presence branch
            presence = [
                {"metric": {"model_name": model, BATCH_TAG_LABEL: PRESENCE_TAG}, "value": [NOW, repr(NOW - age)]}
                for (n, model), age in sorted(self.recorded.items()) if n == ns
            ]
            recorded_models = {model for (n, model) in self.recorded if n == ns}
            out[raw_combined] = out[raw_combined] + presence
            raw_optimizer = [r for r in out[raw_combined] if r["metric"].get(BATCH_TAG_LABEL) in RECORDED_QUERIES]
            rest = [r for r in out[raw_combined] if r["metric"].get(BATCH_TAG_LABEL) not in RECORDED_QUERIES]
            recorded_rows = [
                {"metric": r["metric"], "value": [NOW, repr(self.recorded_values[r["metric"][BATCH_TAG_LABEL]])]}
                for r in raw_optimizer if r["metric"]["model_name"] in recorded_models
            ]
            for name, rows in (
                (batcher._recorded_name, rest + recorded_rows),
                (batcher._fallback_name, raw_optimizer),
            ):
                text = queries.build(name, params)
                out[text] = rows
                self.names[text] = name
            self.names[raw_combined] = batcher._combined_name
        return out

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> Any:
        self.answers()  # names the batch texts
        if self.names.get(query) in self.failing:
            with self.lock:
                self.queries.append(query)
            raise RuntimeError('HTTP Status Code 400 (b\'{"errorType": "bad_data", "error": "nope"}\')')
        return super().custom_query(query, params)

    def sent(self) -> list[str]:
        """The batch queries sent, by name (per-model queries as 'per-model')."""
        self.answers()
        return [self.names[q].split(":")[1] if q in self.names else "per-model" for q in self.queries]


def build(
    prom: FakePrometheus, refs: Any, *, recording: RecordingMode, batch: bool = True
) -> V2MetricsCollector:
    mapper = PodVAMapper()
    for group in refs.values():
        for ref in group:
            mapper.register(ref.name, ref.namespace, ref.deployment_name)
    registry = SourceRegistry()
    registry.register("prometheus", PrometheusSource(prom, PrometheusSourceConfig(query_timeout=2.0,
                                                                                   retry_max_attempts=1)))
    return V2MetricsCollector(registry, mapper, clock=FakeClock(NOW), batch_queries=batch, recording_rules=recording)


NAMESPACES = ["ns-a", "ns-b"]


async def _raw_answers(refs: Any, models: list[str] = TRICKY_MODELS, namespaces: list[str] = NAMESPACES) -> list[Any]:
    """What per-model collection (the ground truth batching must equal) answers for the dataset."""
    prom = FakePrometheus(dataset(models, namespaces))
    return await one_cycle(build(prom, refs, recording=RecordingMode.OFF, batch=False), refs)


def _all_recorded(age: float = 10.0) -> dict[tuple[str, str], float]:
    return {(ns, m): age for ns in NAMESPACES for m in TRICKY_MODELS}


async def test_off_sends_the_raw_combined_query_without_presence_branch() -> None:
    refs = variants(TRICKY_MODELS, NAMESPACES)
    prom = FakePrometheus(dataset(TRICKY_MODELS, NAMESPACES))
    collector = build(prom, refs, recording=RecordingMode.OFF)
    await collector.begin_cycle(sorted(refs))
    assert len(prom.queries) == len(NAMESPACES)
    assert all(PRESENCE_TAG not in q and "namespace_model:" not in q for q in prom.queries)
    holder = _Holder(QueryList())
    QueryBatcher(recording=RecordingMode.OFF)._register(holder)
    assert holder.queries.get(collector.batcher._combined_name).template == combined_batch_query(  # type: ignore[union-attr]
        list(BATCH_QUERIES)
    )


async def test_auto_without_rules_stays_on_raw_queries_one_per_namespace() -> None:
    refs = variants(TRICKY_MODELS, NAMESPACES)
    want = await _raw_answers(refs)
    prom = RecordingPrometheus(dataset(TRICKY_MODELS, NAMESPACES))
    collector = build(prom, refs, recording=RecordingMode.AUTO)
    for _ in range(3):
        prom.queries.clear()
        assert await one_cycle(collector, refs) == want
        assert prom.sent() == ["combined"] * len(NAMESPACES)  # the presence branch rides in the one query
    assert collector.batcher.stats.recorded_prefetches == 0


async def test_auto_reads_recorded_series_from_the_cycle_after_they_appear() -> None:
    refs = variants(TRICKY_MODELS, NAMESPACES)
    want = await _raw_answers(refs)
    prom = RecordingPrometheus(dataset(TRICKY_MODELS, NAMESPACES), recorded=_all_recorded())
    collector = build(prom, refs, recording=RecordingMode.AUTO)

    assert await one_cycle(collector, refs) == want
    assert prom.sent() == ["combined"] * 2
    for _ in range(2):
        prom.queries.clear()
        assert await one_cycle(collector, refs) == want  # the same ReplicaMetrics and OptimizerMetrics
        assert prom.sent() == ["combined-recorded"] * 2  # still one query per namespace
    assert collector.batcher.stats.per_model_queries == 0
    assert collector.batcher.stats.recorded_fallbacks == 0


async def test_the_recorded_values_are_the_ones_served() -> None:
    refs = variants(["m"], ["ns"])
    prom = RecordingPrometheus(dataset(["m"], ["ns"]), recorded={("ns", "m"): 5.0},
                               recorded_values={**OPTIMIZER_VALUES, promql.Q_ARRIVAL_RATE: 7.0})
    collector = build(prom, refs, recording=RecordingMode.ON)
    await collector.begin_cycle([("m", "ns")])
    metrics = await collector.collect_optimizer_metrics("m", "ns", "va0")
    assert metrics.arrival_rate == pytest.approx(7.0 * 60)  # requests per minute
    assert prom.sent() == ["combined-recorded"]


async def test_a_new_model_without_recorded_series_reads_raw_in_the_same_cycle() -> None:
    refs = variants(TRICKY_MODELS, NAMESPACES)
    want = await _raw_answers(refs)
    recorded = _all_recorded()
    del recorded[("ns-a", 'quo"te')], recorded[("ns-a", "new\nline")]  # the rules have not seen them yet
    prom = RecordingPrometheus(dataset(TRICKY_MODELS, NAMESPACES), recorded=recorded,
                               recorded_values={q: v + 1000.0 for q, v in OPTIMIZER_VALUES.items()})
    collector = build(prom, refs, recording=RecordingMode.ON)

    got = await one_cycle(collector, refs)
    # the two new models got the raw values, every other model the recorded ones
    for (model, ns), index in zip(sorted(refs), range(0, len(got), 3), strict=True):
        optimizer = got[index + 1]
        raw = want[index + 1]
        if (ns, model) in recorded:
            assert optimizer.avg_input_tokens == pytest.approx(raw.avg_input_tokens + 1000.0)
        else:
            assert optimizer == raw, (model, ns)
        assert got[index + 2] == want[index + 2]  # replica metrics always raw
    assert sorted(prom.sent()) == ["combined-raw", "combined-recorded", "combined-recorded"]
    assert collector.batcher.stats.per_model_queries == 0


async def test_stale_recorded_samples_count_as_missing() -> None:
    refs = variants(["fresh", "stale"], ["ns"])
    prom = RecordingPrometheus(dataset(["fresh", "stale"], ["ns"]), recorded={("ns", "fresh"): 30.0,
                                                                              ("ns", "stale"): 600.0},
                               recorded_values={q: v + 1000.0 for q, v in OPTIMIZER_VALUES.items()})
    collector = build(prom, refs, recording=RecordingMode.ON)
    await collector.begin_cycle(sorted(refs))
    stale = await collector.collect_optimizer_metrics("stale", "ns", "va1")
    fresh = await collector.collect_optimizer_metrics("fresh", "ns", "va0")
    assert stale.avg_input_tokens == OPTIMIZER_VALUES[promql.Q_AVG_INPUT_TOKENS]
    assert fresh.avg_input_tokens == OPTIMIZER_VALUES[promql.Q_AVG_INPUT_TOKENS] + 1000.0
    assert prom.sent() == ["combined-recorded", "combined-raw"]


async def test_when_the_rules_vanish_auto_reads_raw_in_that_cycle_and_goes_back_to_raw() -> None:
    refs = variants(TRICKY_MODELS, NAMESPACES)
    want = await _raw_answers(refs)
    prom = RecordingPrometheus(dataset(TRICKY_MODELS, NAMESPACES), recorded=_all_recorded())
    collector = build(prom, refs, recording=RecordingMode.AUTO)
    await one_cycle(collector, refs)
    prom.recorded.clear()
    prom.queries.clear()
    assert await one_cycle(collector, refs) == want  # never "no data"
    assert sorted(prom.sent()) == ["combined-raw", "combined-raw", "combined-recorded", "combined-recorded"]
    prom.queries.clear()
    assert await one_cycle(collector, refs) == want
    assert prom.sent() == ["combined", "combined"]


async def test_a_model_with_no_raw_series_either_is_not_looked_up_every_cycle() -> None:
    # "idle" has vLLM series (availability) but no counters yet: raw and recorded are both empty
    refs = variants(["busy", "idle"], ["ns"])
    prom = RecordingPrometheus(dataset(["busy", "idle"], ["ns"]), recorded={("ns", "busy"): 5.0})
    original = prom.answers

    def without_idle_counters() -> dict[str, list[dict[str, Any]]]:
        out = original()
        return {
            text: [r for r in rows if not (r["metric"].get("model_name") == "idle"
                                           and r["metric"].get(BATCH_TAG_LABEL) in RECORDED_QUERIES)]
            for text, rows in out.items()
        }

    prom.answers = without_idle_counters  # type: ignore[method-assign]
    collector = build(prom, refs, recording=RecordingMode.ON)
    sent: list[list[str]] = []
    for _ in range(RAW_EMPTY_RECHECK + 2):
        prom.queries.clear()
        await collector.begin_cycle(sorted(refs))
        idle = await collector.collect_optimizer_metrics("idle", "ns", "va1")
        assert idle.arrival_rate == 0.0
        collector.batcher.release()
        sent.append(prom.sent())
    assert sent[0] == ["combined-recorded", "combined-raw"]
    assert sent[1:RAW_EMPTY_RECHECK + 1] == [["combined-recorded"]] * RAW_EMPTY_RECHECK
    assert sent[RAW_EMPTY_RECHECK + 1] == ["combined-recorded", "combined-raw"]  # looked for again


async def test_a_failed_raw_fallback_queries_only_the_missing_models_per_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    models = ["old-1", "old-2", "new"]
    refs = variants(models, ["ns"])
    prom = RecordingPrometheus(dataset(models, ["ns"]), recorded={("ns", "old-1"): 5.0, ("ns", "old-2"): 5.0})
    want = await _raw_answers(refs, models, ["ns"])
    collector = build(prom, refs, recording=RecordingMode.ON)
    prom.failing.add(collector.batcher._fallback_name)
    with caplog.at_level(logging.WARNING, logger="wva.collector.v2.batching"):
        assert await one_cycle(collector, refs) == want
    assert "Raw query for models without recorded series failed" in caplog.text
    assert collector.batcher.stats.per_model_queries == len(RECORDED_QUERIES)  # "new"'s five, nothing else
    assert prom.sent() == ["combined-recorded", "combined-raw"] + ["per-model"] * len(RECORDED_QUERIES)


async def test_true_without_rules_warns_and_still_answers_from_raw(caplog: pytest.LogCaptureFixture) -> None:
    refs = variants(TRICKY_MODELS, NAMESPACES)
    want = await _raw_answers(refs)
    prom = RecordingPrometheus(dataset(TRICKY_MODELS, NAMESPACES))
    collector = build(prom, refs, recording=RecordingMode.ON)
    with caplog.at_level(logging.WARNING, logger="wva.collector.v2.batching"):
        assert await one_cycle(collector, refs) == want
    assert "Recorded series absent, reading raw series: namespace=ns-a mode=true" in caplog.text
    assert sorted(prom.sent()) == ["combined-raw", "combined-raw", "combined-recorded", "combined-recorded"]


async def test_recording_needs_the_combined_query() -> None:
    assert QueryBatcher(combine=False).recording is RecordingMode.OFF
    assert QueryBatcher(queries=[promql.Q_KV_CACHE_USAGE, promql.Q_QUEUE_LENGTH]).recording is RecordingMode.OFF
    assert QueryBatcher(queries=[promql.Q_ARRIVAL_RATE, promql.Q_KV_CACHE_USAGE]).recording is RecordingMode.OFF
    assert QueryBatcher().recording is RecordingMode.AUTO
    with pytest.raises(ValueError, match="recorded_max_age"):
        QueryBatcher(recorded_max_age=0)


# --- promtool: the rules evaluated by Prometheus' own engine -------------------------------------

PROMTOOL_MODELS = ["llama", 'quo"te', "a|b.*"]
PROMTOOL_NAMESPACES = ["ns-a", "ns-b"]
STEP = 15  # seconds between input samples


def _promtool_case(rules: Path) -> dict[str, Any]:
    """A promtool unit test: counters of 2 pods per (namespace, model) growing at known rates, and
    for each recorded query its recorded form and its raw form, both expected to give the known ratio."""
    esc = promql.escape_promql_value
    series: list[dict[str, str]] = []
    expected: dict[tuple[str, str], dict[str, float]] = {}
    for n, ns in enumerate(PROMTOOL_NAMESPACES):
        for i, model in enumerate(PROMTOOL_MODELS):
            tokens_in, tokens_out, ttft, tpot = 100.0 * (i + 1) + n, 32.0 * (i + 1), 0.25 * (i + 1), 0.125
            counters = {
                promql.REQUEST_SUCCESS_TOTAL: 1.0,
                promql.PROMPT_TOKENS_SUM: tokens_in, promql.PROMPT_TOKENS_COUNT: 1.0,
                promql.GENERATION_TOKENS_SUM: tokens_out, promql.GENERATION_TOKENS_COUNT: 1.0,
                promql.TTFT_SECONDS_SUM: ttft, promql.TTFT_SECONDS_COUNT: 1.0,
                promql.TPOT_SECONDS_SUM: tpot, promql.TPOT_SECONDS_COUNT: 1.0,
            }
            for j in range(2):
                requests = 0.5 * (i + 1) * (j + 1)  # per second
                for metric, per_request in counters.items():
                    labels = f'namespace="{ns}",model_name="{esc(model)}",pod="p{i}-{j}"'
                    series.append({"series": f"{metric}{{{labels}}}",
                                   "values": f"0+{requests * per_request * STEP}x40"})
            expected[(ns, model)] = {
                promql.Q_ARRIVAL_RATE: 1.5 * (i + 1), promql.Q_AVG_INPUT_TOKENS: tokens_in,
                promql.Q_AVG_OUTPUT_TOKENS: tokens_out, promql.Q_TTFT_AVERAGE: ttft, promql.Q_ITL_AVERAGE: tpot,
            }
    tests = []
    for ns in PROMTOOL_NAMESPACES:
        for query in RECORDED_QUERIES:
            samples = [{"labels": f'{{model_name="{esc(m)}"}}', "value": expected[(ns, m)][query]}
                       for m in PROMTOOL_MODELS]
            for form in (RECORDED_FORMS[query], BATCH_QUERIES[query]):
                tests.append({"expr": form.replace("{{.namespace}}", ns), "eval_time": "5m", "exp_samples": samples})
        tests.append({
            "expr": PRESENCE_FORM.replace("{{.namespace}}", ns), "eval_time": "5m",
            "exp_samples": [{"labels": f'{{model_name="{esc(m)}"}}', "value": 300} for m in PROMTOOL_MODELS],
        })
    return {
        "rule_files": [str(rules)],
        "evaluation_interval": "30s",
        "tests": [{"interval": f"{STEP}s", "input_series": series, "promql_expr_test": tests}],
    }


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_promtool()


def test_promtool_checks_both_shipped_copies(promtool: str) -> None:
    assert_rules_check_passes(promtool, (PLAIN, CHART_COPY), len(RULES))


def test_promtool_recorded_forms_equal_the_raw_forms(promtool: str, tmp_path: Path) -> None:
    case = tmp_path / "test.yaml"
    case.write_text(yaml.safe_dump(_promtool_case(PLAIN)), encoding="utf-8")
    result = run_promtool(promtool, "test", "rules", case)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_catches_a_wrong_rule(promtool: str, tmp_path: Path) -> None:
    wrong = tmp_path / "rules.yaml"
    wrong.write_text(PLAIN.read_text(encoding="utf-8").replace(
        "rate(vllm:request_prompt_tokens_count[1m])", "rate(vllm:request_prompt_tokens_count[1m]) * 2"
    ), encoding="utf-8")
    case = tmp_path / "test.yaml"
    case.write_text(yaml.safe_dump(_promtool_case(wrong)), encoding="utf-8")
    result = run_promtool(promtool, "test", "rules", case)
    assert result.returncode != 0
    assert "namespace_model:vllm_request_prompt_tokens_count:rate1m" in result.stdout + result.stderr


def test_the_setting_and_the_rules_are_documented() -> None:
    configuration = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "| `WVA_RECORDING_RULES` | `auto` |" in configuration
    performance = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    assert "\n## Recording rules\n" in performance
    for rule in RULES[:1]:
        assert rule.record in performance
