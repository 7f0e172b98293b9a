"""Recording rules for the batched cycle's optimizer ratios, and the engine's queries of their output.

At 1,000 VAs the batched cycle's queries select about 14,000 series every cycle, and most of them
(9 of every 12 per pod) feed only the five optimizer ratios: ``rate()`` of request, token and latency
counters, summed per model. Prometheus can pre-aggregate those once per rule interval with recording
rules, per ``(namespace, model_name)``; the engine's batch forms then read one recorded series per
model and metric instead of one raw series per pod.

This module is the single source of the rule expressions: :func:`rules_file_text` renders the plain
Prometheus rules file shipped as ``deploy/prometheus/wva-recording-rules.yaml`` (copied byte for byte
into the Helm chart's ``files/``); ``deploy/prometheus/build_recording_rules.py`` writes both and a
test fails when they differ from what this module renders. :data:`RECORDED_FORMS` gives the engine
the batch forms over the recorded series, :data:`PRESENCE_FORM` the cheap check of whether (and how
recently) the rules have produced them.

Each rule is exactly an inner expression of the raw batch forms
(:data:`wva.collector.v2.batching.BATCH_QUERIES`) with ``namespace`` kept in the grouping, so
``sum by (model_name) (<rule>{namespace="ns"})`` is the raw ``sum by (model_name) (rate(...{namespace="ns"}[1m]))``
as of the rule's last evaluation. The per-pod saturation maxima and the availability count are not
recorded: they select one series per pod in the rule as in the query, so a rule would only add its
own evaluation to the cost (see docs/performance.md, "Recording rules").

Names follow the Prometheus convention ``level:metric:operations``: the level is the labels kept
(``namespace_model``), the metric is vLLM's with its ``:`` made ``_`` and ``_total`` dropped, the
operation ``rate1m``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass

from wva.collector import promql
from wva.flags import flag_word

__all__ = [
    "DEFAULT_RULE_INTERVAL",
    "PRESENCE_FORM",
    "PRESENCE_RULE",
    "PRESENCE_TAG",
    "RECORDED_FORMS",
    "RECORDED_QUERIES",
    "RECORDING_RULES_ENV",
    "RULES",
    "RULE_GROUP",
    "RecordingMode",
    "RecordingRule",
    "fresh_models",
    "recording_mode",
    "recording_mode_from_env",
    "rule_name",
    "rules_document",
    "rules_file_text",
]

RECORDING_RULES_ENV = "WVA_RECORDING_RULES"
RULE_GROUP = "wva.recording"
DEFAULT_RULE_INTERVAL = "30s"
LEVEL = "namespace_model"
PRESENCE_TAG = "wva_recorded"
"""The ``wva_query`` tag of the presence branch in a combined batch query (not a query name)."""

_NS = "{{.namespace}}"


class RecordingMode(enum.Enum):
    """``WVA_RECORDING_RULES``: ``auto`` reads recorded series where they exist, ``true`` always tries
    them first, ``false`` never reads them."""

    AUTO = "auto"
    ON = "true"
    OFF = "false"


def recording_mode(value: str | None) -> RecordingMode:
    """Parse ``WVA_RECORDING_RULES``: unset or empty means ``auto``; ``auto``, true/1/yes/on and
    false/0/no/off in any case; anything else is a ValueError naming the variable and the value."""
    if value is None or not value.strip():
        return RecordingMode.AUTO
    if value.strip().lower() == "auto":
        return RecordingMode.AUTO
    enabled = flag_word(value)
    if enabled is not None:
        return RecordingMode.ON if enabled else RecordingMode.OFF
    raise ValueError(
        f"{RECORDING_RULES_ENV}={value!r} is not a recording-rules mode; use auto, true/1/yes/on or false/0/no/off"
    )


def recording_mode_from_env(env: Mapping[str, str] | None = None) -> RecordingMode:
    """``WVA_RECORDING_RULES`` from ``env`` (default: the process environment)."""
    return recording_mode((os.environ if env is None else env).get(RECORDING_RULES_ENV))


@dataclass(frozen=True, slots=True)
class RecordingRule:
    """One rule: the recorded series' name and the PromQL it records."""

    record: str
    expr: str


def rule_name(metric: str) -> str:
    """``vllm:request_success_total`` -> ``namespace_model:vllm_request_success:rate1m``."""
    name = metric.replace(":", "_").removesuffix("_total")
    return f"{LEVEL}:{name}:rate1m"


def _rate_rule(metric: str) -> RecordingRule:
    return RecordingRule(rule_name(metric), f"sum by (namespace, model_name) (rate({metric}[1m]))")


# query name -> the counters whose per-model rates it needs (numerator, then denominator)
_COUNTERS: dict[str, tuple[str, ...]] = {
    promql.Q_ARRIVAL_RATE: (promql.REQUEST_SUCCESS_TOTAL,),
    promql.Q_AVG_INPUT_TOKENS: (promql.PROMPT_TOKENS_SUM, promql.PROMPT_TOKENS_COUNT),
    promql.Q_AVG_OUTPUT_TOKENS: (promql.GENERATION_TOKENS_SUM, promql.GENERATION_TOKENS_COUNT),
    promql.Q_TTFT_AVERAGE: (promql.TTFT_SECONDS_SUM, promql.TTFT_SECONDS_COUNT),
    promql.Q_ITL_AVERAGE: (promql.TPOT_SECONDS_SUM, promql.TPOT_SECONDS_COUNT),
}

RULES: tuple[RecordingRule, ...] = tuple(_rate_rule(m) for counters in _COUNTERS.values() for m in counters)
"""Every recording rule wva ships, in file order."""

RECORDED_QUERIES: tuple[str, ...] = tuple(_COUNTERS)
"""The per-model queries whose batch forms can read recorded series."""


def _recorded_sum(metric: str) -> str:
    return f'sum by (model_name) ({rule_name(metric)}{{namespace="{_NS}"}})'


def _recorded_form(counters: tuple[str, ...]) -> str:
    return "/".join(_recorded_sum(m) for m in counters)


RECORDED_FORMS: dict[str, str] = {query: _recorded_form(counters) for query, counters in _COUNTERS.items()}
"""Query name -> its batch form over the recorded series (only ``{{.namespace}}`` to fill).

The same shape as the raw batch form (one series per ``model_name``), so the combined answer is split
per model unchanged.
"""

PRESENCE_RULE = rule_name(promql.REQUEST_SUCCESS_TOTAL)
PRESENCE_FORM = f'max by (model_name) (timestamp({PRESENCE_RULE}{{namespace="{_NS}"}}))'
"""Per model of a namespace, when the rules last recorded it (seconds since the epoch).

Every rule is in one group, evaluated at the same instant, so the arrival-rate series stands for all
of them. Its value is the recorded sample's own timestamp, so a stalled rule evaluation shows up as an
old value instead of a sample Prometheus keeps returning for 5 minutes.
"""


def fresh_models(stamps: Mapping[str, float], now: float, max_age: float) -> frozenset[str]:
    """The models whose recorded sample is at most ``max_age`` seconds older than ``now``.

    ``stamps``: model -> the presence branch's value (the recorded sample's timestamp). A timestamp in
    the future (clock skew between the operator and Prometheus) counts as fresh.
    """
    return frozenset(model for model, stamp in stamps.items() if now - stamp <= max_age)


def rules_document(interval: str = DEFAULT_RULE_INTERVAL) -> dict[str, object]:
    """The rules file as data: one group, evaluated every ``interval``."""
    return {
        "groups": [
            {
                "name": RULE_GROUP,
                "interval": interval,
                "rules": [{"record": rule.record, "expr": rule.expr} for rule in RULES],
            }
        ]
    }


_HEADER = """\
# wva recording rules: per (namespace, model_name), the rates behind the optimizer metrics (arrival
# rate, average prompt and generated tokens, TTFT, time per output token). With them loaded, wva's
# batched cycle reads one recorded series per model instead of one raw series per pod
# (WVA_RECORDING_RULES=auto, the default, uses them wherever they exist). See docs/performance.md,
# "Recording rules".
#
# Generated by deploy/prometheus/build_recording_rules.py from wva.collector.v2.recording; do not edit.
# The Helm chart renders the same rules as a PrometheusRule (recordingRules.enabled=true) from its copy
# files/wva-recording-rules.yaml, with the group's interval from recordingRules.interval.
# Keep the interval no shorter than wva's engine interval (GLOBAL_OPT_INTERVAL, 30s by default): a
# recorded sample is at most one interval old when wva reads it, and evaluating more often than wva
# reads only costs Prometheus CPU.
"""


def rules_file_text(interval: str = DEFAULT_RULE_INTERVAL) -> str:
    """The plain Prometheus rules file (``rule_files: [wva-recording-rules.yaml]``)."""
    lines = [_HEADER.rstrip("\n"), "groups:", f"  - name: {RULE_GROUP}", f"    interval: {interval}", "    rules:"]
    for rule in RULES:
        lines.append(f"      - record: {rule.record}")
        lines.append(f"        expr: {rule.expr}")
    return "\n".join(lines) + "\n"
