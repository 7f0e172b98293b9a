"""QueryList / QueryTemplate: registration, rendering, escaping (with PromQL-level property tests)."""

from __future__ import annotations

import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wva.collector import promql
from wva.collector.v2 import (
    QueryList,
    QueryTemplate,
    QueryType,
    escape_promql_value,
    register_default_queries,
)

NS_TEMPLATE = 'up{namespace="{{.namespace}}"}'


def make_list(*templates: QueryTemplate) -> QueryList:
    ql = QueryList()
    for t in templates:
        ql.register(t)
    return ql


def t(name: str, template: str, params: tuple[str, ...] = ("namespace",)) -> QueryTemplate:
    return QueryTemplate(name=name, type=QueryType.PROMQL, template=template, params=params)


# --- a small PromQL label-matcher parser ---------------------------------------------------------

_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = ("=~", "!~", "!=", "=")

Matcher = tuple[str, str, str]


def parse_selectors(query: str) -> tuple[str, list[list[Matcher]]]:
    """Split a query into its skeleton (each ``{...}`` matcher block replaced by ``{}``) and blocks.

    Strings are decoded the way PromQL does for the escapes we emit; anything else inside a matcher
    block (a stray quote, an unknown escape, a raw newline) fails the parse.
    """
    skeleton: list[str] = []
    blocks: list[list[Matcher]] = []
    i = 0
    while i < len(query):
        ch = query[i]
        if ch == '"':
            raise AssertionError(f"string literal outside a matcher block at {i}: {query!r}")
        if ch != "{":
            skeleton.append(ch)
            i += 1
            continue
        i += 1
        block: list[Matcher] = []
        while True:
            m = _LABEL.match(query, i)
            assert m, f"label name expected at {i}: {query!r}"
            name, i = m.group(0), m.end()
            op = next(o for o in _OPS if query.startswith(o, i))
            i += len(op)
            assert query[i] == '"', f"opening quote expected at {i}: {query!r}"
            i += 1
            value: list[str] = []
            while query[i] != '"':
                c = query[i]
                assert c != "\n", "raw newline inside a PromQL string"
                if c == "\\":
                    value.append(_UNESCAPE[query[i + 1]])
                    i += 2
                else:
                    value.append(c)
                    i += 1
            i += 1
            block.append((name, op, "".join(value)))
            if query[i] == ",":
                i += 1
                continue
            assert query[i] == "}", f"',' or '}}' expected at {i}: {query!r}"
            i += 1
            break
        blocks.append(block)
        skeleton.append("{}")
    return "".join(skeleton), blocks


def test_parser_sanity() -> None:
    skeleton, blocks = parse_selectors('sum(m{a="x\\"y",b!~"z"})/n{c="\\\\"}')
    assert skeleton == "sum(m{})/n{}"
    assert blocks == [[("a", "=", 'x"y'), ("b", "!~", "z")], [("c", "=", "\\")]]


_SENTINEL = {promql.PARAM_MODEL_ID: "SENTINEL_MODEL", promql.PARAM_NAMESPACE: "SENTINEL_NS"}


def _default_list() -> QueryList:
    ql = QueryList()
    register_default_queries(ql)
    return ql


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(promql.QUERY_TEMPLATES)),
    model=st.text(min_size=1),
    namespace=st.text(min_size=1),
)
def test_rendered_query_has_exactly_one_matcher_per_placeholder(
    name: str, model: str, namespace: str
) -> None:
    ql = _default_list()
    params = {promql.PARAM_MODEL_ID: model, promql.PARAM_NAMESPACE: namespace}
    skeleton, blocks = parse_selectors(ql.build(name, params))
    expected_skeleton, expected_blocks = parse_selectors(ql.build(name, _SENTINEL))
    back = {v: params[k] for k, v in _SENTINEL.items()}
    assert skeleton == expected_skeleton
    # Same matchers in the same places; each placeholder's value decodes back to the original string.
    assert blocks == [[(lbl, op, back.get(val, val)) for lbl, op, val in blk] for blk in expected_blocks]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_escape_round_trips_through_promql_string_syntax(value: str) -> None:
    _, blocks = parse_selectors('m{l="' + escape_promql_value(value) + '"}')
    assert blocks == [[("l", "=", value)]]


def test_escape_is_the_shared_implementation() -> None:
    assert escape_promql_value is promql.escape_promql_value
    assert escape_promql_value('a\\b"c\nd\re\tf') == 'a\\\\b\\"c\\nd\\re\\tf'


def test_default_queries_render_upstream_text_for_plain_values() -> None:
    ql = _default_list()
    assert ql.build(promql.Q_KV_CACHE_USAGE, {"namespace": "llm", "modelID": "meta/llama"}) == (
        'max by (pod) (max_over_time(vllm:kv_cache_usage_perc{namespace="llm",model_name="meta/llama"}[1m]))'
    )
    assert ql.build(promql.Q_ARRIVAL_RATE, {"namespace": "llm", "modelID": "m"}) == (
        'sum(rate(vllm:request_success_total{model_name="m",namespace="llm"}[1m]))'
    )


# --- registration --------------------------------------------------------------------------------


def test_register_rejects_empty_name_empty_template_and_duplicates() -> None:
    ql = make_list(t("a", NS_TEMPLATE))
    with pytest.raises(ValueError, match="name is required"):
        ql.register(t("", NS_TEMPLATE))
    with pytest.raises(ValueError, match="template is required"):
        ql.register(t("b", ""))
    with pytest.raises(ValueError, match="already registered"):
        ql.register(t("a", "other"))
    assert ql.get("a") == t("a", NS_TEMPLATE)


def test_get_and_sorted_names() -> None:
    ql = make_list(t("zeta", NS_TEMPLATE), t("alpha", NS_TEMPLATE), t("mid", NS_TEMPLATE))
    assert ql.names() == ["alpha", "mid", "zeta"]
    assert ql.get("missing") is None
    assert "alpha" in ql and "missing" not in ql


def test_template_normalises_params_and_type() -> None:
    tpl = QueryTemplate("q", "promql", "x", ["a", "b"], "d")  # type: ignore[arg-type]
    assert tpl.type is QueryType.PROMQL and tpl.params == ("a", "b")
    assert (QueryType.METRIC_NAME.value, QueryType.PROMQL.value) == ("metric", "promql")
    assert str(QueryType.PROMQL) == "promql"
    with pytest.raises(ValueError):
        QueryTemplate("q", "sql", "x")  # type: ignore[arg-type]


def test_concurrent_registration_is_safe() -> None:
    ql = QueryList()
    wins: list[str] = []
    barrier = threading.Barrier(16)

    def worker(i: int) -> None:
        barrier.wait()
        ql.register(t(f"q{i}", NS_TEMPLATE))
        try:
            ql.register(t("shared", NS_TEMPLATE))
            wins.append(f"q{i}")
        except ValueError:
            pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(wins) == 1
    assert ql.names() == sorted([f"q{i}" for i in range(16)] + ["shared"])


# --- build ---------------------------------------------------------------------------------------


def test_build_errors() -> None:
    ql = make_list(t("q", 'm{namespace="{{.namespace}}",x="{{.other}}"}'))
    with pytest.raises(LookupError, match="not found"):
        ql.build("nope", {"namespace": "a"})
    with pytest.raises(ValueError, match="missing required parameter 'namespace'"):
        ql.build("q", {"other": "o"})
    with pytest.raises(ValueError, match="empty required parameter 'namespace'"):
        ql.build("q", {"namespace": "", "other": "o"})
    with pytest.raises(ValueError, match="unfilled placeholder"):
        ql.build("q", {"namespace": "a"})  # {{.other}} is not required but has no value
    assert ql.build("q", {"namespace": "a", "other": ""}) == 'm{namespace="a",x=""}'


def test_build_accepts_spaces_inside_braces_and_rejects_malformed_placeholders() -> None:
    ql = make_list(
        t("spaced", 'm{namespace="{{ .namespace }}",b="{{.namespace  }}"}'),
        t("bad", 'm{namespace="{{ namespace }}"}'),
    )
    assert ql.build("spaced", {"namespace": "ns"}) == 'm{namespace="ns",b="ns"}'
    with pytest.raises(ValueError, match="malformed placeholder"):
        ql.build("bad", {"namespace": "ns"})


def test_values_are_escaped_and_never_rendered_again() -> None:
    ql = make_list(
        t("q", 'm{namespace="{{.namespace}}",model_name="{{.modelID}}"}', ("namespace", "modelID"))
    )
    out = ql.build("q", {"namespace": "{{.modelID}}", "modelID": 'x"}or vector(1)#'})
    assert out == 'm{namespace="{{.modelID}}",model_name="x\\"}or vector(1)#"}'
    assert parse_selectors(out)[1] == [
        [("namespace", "=", "{{.modelID}}"), ("model_name", "=", 'x"}or vector(1)#')]
    ]


def test_extra_params_are_ignored_and_params_default_to_none() -> None:
    ql = make_list(t("static", "up", ()), t("q", NS_TEMPLATE))
    assert ql.build("static") == "up"
    assert ql.build("q", {"namespace": "n", "unused": "u"}) == 'up{namespace="n"}'
