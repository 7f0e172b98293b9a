"""MeteredPrometheusConnect: queries as POST form bodies, GET fallback, the library's error format."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from wva.collector.v2.prometheus import _describe
from wva.promconnect import MeteredPrometheusConnect, build_prometheus_connect
from wva.settings import Settings

MAX_URL = 4096  # a typical proxy's request-line limit


class FakePrometheusHandler(BaseHTTPRequestHandler):
    """Answers /api/v1/query with one sample whose value is the query's length; rejects long URLs (414)
    like a proxy would; ``server.reject_post`` answers POST with that status instead."""

    server: FakeServer

    def log_message(self, *_args: object) -> None:
        pass

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _query(self, query: str) -> None:
        self.server.seen.append((self.command, len(query)))
        if query == "bad(":
            self._answer(400, {"status": "error", "errorType": "bad_data", "error": "parse error"})
            return
        self._answer(200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1.0, str(len(query))]}
        ]}})

    def do_GET(self) -> None:
        if len(self.path) > MAX_URL:
            self.server.seen.append(("GET", -1))
            self._answer(414, {"status": "error", "error": "URI too long"})
            return
        self._query(parse_qs(urlsplit(self.path).query).get("query", [""])[0])

    def do_POST(self) -> None:
        if self.server.reject_post:
            self.server.seen.append(("POST", -1))
            self._answer(self.server.reject_post, {"status": "error", "error": "method not allowed"})
            return
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        self._query(form.get("query", [""])[0])


class FakeServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakePrometheusHandler)
        self.seen: list[tuple[str, int]] = []
        self.reject_post = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def client(url: str, method: str) -> MeteredPrometheusConnect:
    return MeteredPrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=0), timeout=5, method=method)


LONG_QUERY = 'vllm:kv_cache_usage_perc{model_name="' + "m" * 10_000 + '"}'


def test_post_sends_a_long_query_in_the_body_where_get_hits_the_url_limit(server: FakeServer) -> None:
    post = client(server.url, "POST")
    assert post.custom_query(LONG_QUERY)[0]["value"][1] == str(len(LONG_QUERY))
    assert server.seen == [("POST", len(LONG_QUERY))]
    assert post.queries == 1

    with pytest.raises(PrometheusApiClientException, match="HTTP Status Code 414"):
        client(server.url, "GET").custom_query(LONG_QUERY)


@pytest.mark.parametrize("status", [405, 501])
def test_a_server_without_post_is_asked_with_get_from_then_on(
    server: FakeServer, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    server.reject_post = status
    prom = client(server.url, "POST")
    with caplog.at_level("WARNING", logger="wva.promconnect"):
        assert prom.custom_query("up")[0]["value"][1] == "2"
        assert prom.custom_query("vector(1)")[0]["value"][1] == "9"
    assert server.seen == [("POST", -1), ("GET", 2), ("GET", 9)]
    assert prom.post is False
    assert [r.getMessage() for r in caplog.records] == [
        f"Prometheus does not take POST queries, using GET from now on status={status}"
    ]


def test_post_errors_keep_the_library_format_the_collectors_parse(server: FakeServer) -> None:
    outcomes: list[str] = []
    prom = MeteredPrometheusConnect(
        url=server.url, disable_ssl=True, retry=Retry(total=0), method="POST",
        on_query=lambda outcome, _seconds: outcomes.append(outcome),
    )
    with pytest.raises(PrometheusApiClientException) as info:
        prom.custom_query("bad(")
    assert str(info.value).startswith("HTTP Status Code 400 (b'")
    assert _describe(info.value) == "HTTP Status Code 400: bad_data: parse error"
    assert outcomes == ["error"]


def test_the_operator_queries_with_post_unless_told_otherwise(server: FakeServer) -> None:
    build_prometheus_connect(Settings.from_env({"PROMETHEUS_BASE_URL": server.url})).custom_query("up")
    build_prometheus_connect(
        Settings.from_env({"PROMETHEUS_BASE_URL": server.url, "WVA_PROMETHEUS_QUERY_METHOD": "get"})
    ).custom_query("up")
    assert [method for method, _ in server.seen] == ["POST", "GET"]


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_each_answer_reports_its_series_and_bytes(server: FakeServer, method: str) -> None:
    answers: list[tuple[int, int | None]] = []
    prom = MeteredPrometheusConnect(
        url=server.url, disable_ssl=True, retry=Retry(total=0), method=method,
        on_answer=lambda series, size: answers.append((series, size)),
    )
    prom.custom_query("up")
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1.0, "2"]}
    ]}})
    # the body's size is known where wva reads it (POST); the library reads GET answers itself
    assert answers == [(1, len(body) if method == "POST" else None)]
    with pytest.raises(PrometheusApiClientException):
        prom.custom_query("bad(")
    assert len(answers) == 1  # a failed query has no answer to measure
