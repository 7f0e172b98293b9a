"""vLLM metric names, PromQL query text and label-value escaping, shared by both collectors.

The query text is upstream's (the Workload-Variant-Autoscaler), byte for byte. Templates use
``{{.name}}`` placeholders; both collectors substitute *escaped* values only.
"""

from __future__ import annotations

# --- vLLM metric names -------------------------------------------------------------------------
NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE_PERC = "vllm:kv_cache_usage_perc"
REQUEST_SUCCESS_TOTAL = "vllm:request_success_total"
PROMPT_TOKENS_SUM = "vllm:request_prompt_tokens_sum"
PROMPT_TOKENS_COUNT = "vllm:request_prompt_tokens_count"
GENERATION_TOKENS_SUM = "vllm:request_generation_tokens_sum"
GENERATION_TOKENS_COUNT = "vllm:request_generation_tokens_count"
TTFT_SECONDS_SUM = "vllm:time_to_first_token_seconds_sum"
TTFT_SECONDS_COUNT = "vllm:time_to_first_token_seconds_count"
TPOT_SECONDS_SUM = "vllm:time_per_output_token_seconds_sum"
TPOT_SECONDS_COUNT = "vllm:time_per_output_token_seconds_count"
CACHE_CONFIG_INFO = "vllm:cache_config_info"
KUBE_POD_INFO = "kube_pod_info"

LABEL_MODEL_NAME = "model_name"
LABEL_NAMESPACE = "namespace"
LABEL_POD = "pod"
LABEL_POD_FALLBACK = "pod_name"

PARAM_NAMESPACE = "namespace"
PARAM_MODEL_ID = "modelID"

# --- query names (v2 registry names; v1 uses the same text) -------------------------------------
Q_KV_CACHE_USAGE = "kv_cache_usage"
Q_QUEUE_LENGTH = "queue_length"
Q_ARRIVAL_RATE = "arrival_rate"
Q_AVG_INPUT_TOKENS = "avg_input_tokens"
Q_AVG_OUTPUT_TOKENS = "avg_output_tokens"
Q_TTFT_AVERAGE = "ttft_average"
Q_ITL_AVERAGE = "itl_average"
Q_METRICS_AVAILABILITY = "metrics_availability"
Q_METRICS_AVAILABILITY_ANY_NAMESPACE = "metrics_availability_any_namespace"

_M = '{{.modelID}}'
_NS = '{{.namespace}}'


def _opt_selector(metric: str) -> str:
    # upstream's optimizer queries put model_name first
    return f'{metric}{{model_name="{_M}",namespace="{_NS}"}}'


def _rate_ratio(num: str, den: str) -> str:
    return f"sum(rate({_opt_selector(num)}[1m]))/sum(rate({_opt_selector(den)}[1m]))"


# name -> (template, required params, description)
QUERY_TEMPLATES: dict[str, tuple[str, tuple[str, ...], str]] = {
    Q_KV_CACHE_USAGE: (
        f'max by (pod) (max_over_time({KV_CACHE_USAGE_PERC}{{namespace="{_NS}",model_name="{_M}"}}[1m]))',
        (PARAM_NAMESPACE, PARAM_MODEL_ID),
        "Peak KV cache utilization per pod (0.0-1.0) over last minute",
    ),
    Q_QUEUE_LENGTH: (
        f'max by (pod) (max_over_time({NUM_REQUESTS_WAITING}{{namespace="{_NS}",model_name="{_M}"}}[1m]))',
        (PARAM_NAMESPACE, PARAM_MODEL_ID),
        "Peak queue length per pod over last minute",
    ),
    Q_ARRIVAL_RATE: (
        f"sum(rate({_opt_selector(REQUEST_SUCCESS_TOTAL)}[1m]))",
        (PARAM_NAMESPACE, PARAM_MODEL_ID),
        "Request arrival rate of the model in requests per second (x60 for per minute)",
    ),
    Q_AVG_INPUT_TOKENS: (
        _rate_ratio(PROMPT_TOKENS_SUM, PROMPT_TOKENS_COUNT),
        (PARAM_NAMESPACE, PARAM_MODEL_ID),
        "Average prompt tokens per request",
    ),
    Q_AVG_OUTPUT_TOKENS: (
        _rate_ratio(GENERATION_TOKENS_SUM, GENERATION_TOKENS_COUNT),
        (PARAM_NAMESPACE, PARAM_MODEL_ID),
        "Average generated tokens per request",
    ),
    Q_TTFT_AVERAGE: (
        _rate_ratio(TTFT_SECONDS_SUM, TTFT_SECONDS_COUNT),
        (PARAM_NAMESPACE, PARAM_MODEL_ID),
        "Average time to first token in seconds",
    ),
    Q_ITL_AVERAGE: (
        _rate_ratio(TPOT_SECONDS_SUM, TPOT_SECONDS_COUNT),
        (PARAM_NAMESPACE, PARAM_MODEL_ID),
        "Average inter-token latency (time per output token) in seconds",
    ),
    Q_METRICS_AVAILABILITY: (
        f'{NUM_REQUESTS_RUNNING}{{model_name="{_M}",namespace="{_NS}"}}',
        (PARAM_NAMESPACE, PARAM_MODEL_ID),
        "Presence and freshness of the model's vLLM metrics in the namespace",
    ),
    Q_METRICS_AVAILABILITY_ANY_NAMESPACE: (
        f'{NUM_REQUESTS_RUNNING}{{model_name="{_M}"}}',
        (PARAM_MODEL_ID,),
        "Presence of the model's vLLM metrics in any namespace (emulators without a namespace label)",
    ),
}

OPTIMIZER_QUERIES: tuple[str, ...] = (
    Q_ARRIVAL_RATE,
    Q_AVG_INPUT_TOKENS,
    Q_AVG_OUTPUT_TOKENS,
    Q_TTFT_AVERAGE,
    Q_ITL_AVERAGE,
)
SATURATION_QUERIES: tuple[str, ...] = (Q_KV_CACHE_USAGE, Q_QUEUE_LENGTH)


def escape_promql_value(value: str) -> str:
    """Escape a string for use inside a double-quoted PromQL label matcher value.

    Backslash first, then double quote, newline, carriage return and tab, so that no value can close
    the string literal or break the query onto another line.
    """
    return (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
