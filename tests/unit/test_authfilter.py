"""wva.authfilter without an API server: a fake reviewer stands in for TokenReview and
SubjectAccessReview, so the filter's decisions, its cache, its bounds and what it logs are tested
alone. The real API server's answers are tested in tests/controlplane/test_cp_metrics_auth.py."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from wva.actuator.metrics import MetricsEmitter
from wva.authfilter import AuthFilter, KubeReviewer, Outcome, ReviewUnavailable, UserInfo, bearer_token
from wva.kube import KubeError
from wva.server import OperatorServer
from wva.servingcerts import ServingCertificate

TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl-s3cr3t"
PROMETHEUS = UserInfo("system:serviceaccount:monitoring:prometheus", uid="u-1",
                      groups=("system:serviceaccounts", "system:authenticated"),
                      extra=(("authentication.kubernetes.io/pod-name", ("prometheus-0",)),))


class FakeReviewer:
    """Tokens it knows, (username, path) pairs it allows; counts every review; can fail or hang."""

    def __init__(self) -> None:
        self.tokens: dict[str, UserInfo] = {TOKEN: PROMETHEUS}
        self.allowed: set[tuple[str, str]] = {(PROMETHEUS.username, "/metrics")}
        self.authentications = 0
        self.authorizations: list[tuple[UserInfo, str, str]] = []
        self.fail: str | None = None
        self.hang = asyncio.Event()
        self.hang.set()
        self.running = 0
        self.most_running = 0

    async def _enter(self) -> None:
        if self.fail:
            raise ReviewUnavailable("TokenReview", self.fail)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.hang.wait()
        finally:
            self.running -= 1

    async def authenticate(self, token: str) -> tuple[UserInfo | None, str]:
        self.authentications += 1
        await self._enter()
        user = self.tokens.get(token)
        return (user, "") if user else (None, "invalid bearer token")

    async def authorize(self, user: UserInfo, path: str, verb: str) -> tuple[bool, str]:
        self.authorizations.append((user, path, verb))
        await self._enter()
        allowed = (user.username, path) in self.allowed
        return allowed, "RBAC: allowed" if allowed else ""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def reviewer() -> FakeReviewer:
    return FakeReviewer()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def auth(reviewer: FakeReviewer, clock: Clock) -> AuthFilter:
    return AuthFilter(reviewer, ttl=10.0, timeout=1.0, max_concurrency=2, clock=clock)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None), ("", None), ("Bearer", None), ("Bearer ", None), ("Basic dXNlcjpwdw==", None),
        (f"Bearer {TOKEN}", TOKEN), (f"bearer  {TOKEN} ", TOKEN), (f"BEARER {TOKEN}", TOKEN),
        ("Bearer two words", None),
    ],
)
def test_bearer_token_is_taken_from_the_authorization_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


async def test_no_token_bad_token_denied_and_allowed(auth: AuthFilter, reviewer: FakeReviewer) -> None:
    none = await auth.check(None, "/metrics")
    assert (none.outcome, none.status, reviewer.authentications) == (Outcome.UNAUTHENTICATED, 401, 0)
    bad = await auth.check("Bearer not-a-token", "/metrics")
    assert (bad.outcome, bad.status, bad.reason) == (Outcome.UNAUTHENTICATED, 401, "invalid bearer token")
    assert reviewer.authorizations == []  # an unauthenticated token is never authorized
    denied = await auth.check(f"Bearer {TOKEN}", "/debug/decisions")
    assert (denied.outcome, denied.status, denied.user) == (Outcome.FORBIDDEN, 403, PROMETHEUS.username)
    allowed = await auth.check(f"Bearer {TOKEN}", "/metrics")
    assert (allowed.outcome, allowed.status) == (Outcome.ALLOWED, 200)
    # the SubjectAccessReview carries the request path, verb get and the whole identity
    assert reviewer.authorizations == [(PROMETHEUS, "/debug/decisions", "get"), (PROMETHEUS, "/metrics", "get")]


async def test_answers_are_cached_for_the_ttl_then_asked_again(
    auth: AuthFilter, reviewer: FakeReviewer, clock: Clock
) -> None:
    for _ in range(5):
        assert (await auth.check(f"Bearer {TOKEN}", "/metrics")).outcome is Outcome.ALLOWED
        assert (await auth.check("Bearer not-a-token", "/metrics")).outcome is Outcome.UNAUTHENTICATED
        assert (await auth.check(f"Bearer {TOKEN}", "/debug/decisions")).outcome is Outcome.FORBIDDEN
    assert reviewer.authentications == 2 and len(reviewer.authorizations) == 2
    cached = await auth.check(f"Bearer {TOKEN}", "/metrics")
    assert cached.cached
    # the token is revoked (its ServiceAccount deleted): it keeps working until the answer expires, no longer
    del reviewer.tokens[TOKEN]
    clock.now += 9.9
    assert (await auth.check(f"Bearer {TOKEN}", "/metrics")).outcome is Outcome.ALLOWED
    clock.now += 0.2
    revoked = await auth.check(f"Bearer {TOKEN}", "/metrics")
    assert (revoked.outcome, revoked.cached) == (Outcome.UNAUTHENTICATED, False)
    assert reviewer.authentications == 3


async def test_an_unavailable_api_server_answers_503_and_is_not_cached(
    auth: AuthFilter, reviewer: FakeReviewer
) -> None:
    reviewer.fail = "create tokenreviews: 500 Internal Server Error"
    for expected_calls in (1, 2):
        result = await auth.check(f"Bearer {TOKEN}", "/metrics")
        assert (result.outcome, result.status) == (Outcome.UNAVAILABLE, 503)
        assert "500 Internal Server Error" in result.reason
        assert reviewer.authentications == expected_calls  # asked again: an error is never cached
    reviewer.fail = None
    assert (await auth.check(f"Bearer {TOKEN}", "/metrics")).outcome is Outcome.ALLOWED


async def test_a_review_that_does_not_answer_times_out(reviewer: FakeReviewer, clock: Clock) -> None:
    auth = AuthFilter(reviewer, timeout=0.05, clock=clock)
    reviewer.hang.clear()
    result = await auth.check(f"Bearer {TOKEN}", "/metrics")
    assert result.outcome is Outcome.UNAVAILABLE and "within 0.05s" in result.reason
    reviewer.hang.set()
    assert (await auth.check(f"Bearer {TOKEN}", "/metrics")).outcome is Outcome.ALLOWED


async def test_concurrent_requests_share_one_review_and_reviews_are_bounded(
    auth: AuthFilter, reviewer: FakeReviewer
) -> None:
    reviewer.hang.clear()
    reviewer.tokens.update({f"token-{i}": UserInfo(f"user-{i}") for i in range(6)})
    same = [asyncio.create_task(auth.check(f"Bearer {TOKEN}", "/metrics")) for _ in range(20)]
    distinct = [asyncio.create_task(auth.check(f"Bearer token-{i}", "/metrics")) for i in range(6)]
    await asyncio.sleep(0.05)
    assert reviewer.running == 2  # max_concurrency
    reviewer.hang.set()
    results = await asyncio.gather(*same, *distinct)
    assert [r.outcome for r in results[:20]] == [Outcome.ALLOWED] * 20
    assert [r.outcome for r in results[20:]] == [Outcome.FORBIDDEN] * 6
    assert reviewer.most_running == 2
    assert reviewer.authentications == 1 + 6  # the twenty identical requests made one TokenReview


async def test_the_token_is_never_kept_logged_or_shown(
    auth: AuthFilter, reviewer: FakeReviewer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with _server(auth) as url, aiohttp.ClientSession() as session:
        for token, path in ((TOKEN, "/metrics"), (TOKEN, "/debug/decisions"), ("forged-" + TOKEN, "/metrics")):
            async with session.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, ssl=False) as r:
                await r.read()
    text = caplog.text
    assert "Metrics request allowed" in text and "Metrics request forbidden" in text
    assert "Metrics request unauthenticated" in text
    assert TOKEN not in text
    assert TOKEN not in repr(auth) and TOKEN not in repr(auth.__dict__)
    keys = [*auth._tokens, *(k[0] for k in auth._access)]
    assert all(not isinstance(k, str) for k in keys)
    assert hashlib.sha256(TOKEN.encode()).digest() not in keys  # keyed: not even the plain digest
    assert auth.token_key(TOKEN) in keys


# --- the filter on the real HTTPS server ---------------------------------------------------------
class _Ready:
    def __call__(self) -> tuple[bool, str]:
        return True, "ready"


@pytest_asyncio.fixture()
async def operator_server(auth: AuthFilter) -> AsyncIterator[OperatorServer]:
    server = OperatorServer(MetricsEmitter(), _Ready(), host="127.0.0.1", metrics_port=0, probe_port=0,
                            tls=ServingCertificate.self_signed(["wva-test"]), auth=auth)
    await server.start()  # metrics and probes both on port 0: two different free ports
    try:
        yield server
    finally:
        await server.stop()


class _server:
    """The filter in front of a trivial aiohttp app over HTTPS."""

    def __init__(self, auth: AuthFilter) -> None:
        self.auth = auth
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> str:
        async def ok(_request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application(middlewares=[self.auth.middleware])
        app.router.add_get("/{tail:.*}", ok)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0,
                           ssl_context=ServingCertificate.self_signed(["wva-test"]).server_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"https://127.0.0.1:{port}"

    async def __aexit__(self, *_: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_operator_server_answers_401_403_503_and_200_over_https(
    operator_server: OperatorServer, reviewer: FakeReviewer
) -> None:
    base = f"https://127.0.0.1:{operator_server.bound_ports['metrics']}"
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    reviewer.allowed.add((PROMETHEUS.username, "/debug/decisions"))

    async with aiohttp.ClientSession() as session:
        async def get(path: str, token: str | None = None) -> tuple[int, str, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with session.get(base + path, headers=headers, ssl=context) as resp:
                return resp.status, await resp.text(), resp.headers

        status, body, headers = await get("/metrics")
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="wva"'
        assert (await get("/metrics", "nope"))[0] == 401
        status, body, _ = await get("/debug/decisions/llm/llama", TOKEN)  # the path as requested, not granted
        assert status == 403 and "/debug/decisions/llm/llama" in body and PROMETHEUS.username in body
        assert (await get("/no-such-path", TOKEN))[0] == 403  # unknown paths are not revealed before authz
        status, body, headers = await get("/metrics", TOKEN)
        assert status == 200 and "wva_engine_cycles_total" in body and headers["Content-Type"].startswith("text/")
        status, body, _ = await get("/debug/decisions", TOKEN)
        assert status == 200 and '"variantAutoscalings"' in body
        reviewer.fail = "no answer"
        status, body, headers = await get("/metrics", "a-new-token")
        assert status == 503 and "could not be authorized" in body and headers["Retry-After"] == "5"
    assert operator_server.metrics_scheme == "https"
    # plain HTTP to the HTTPS port is not served
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session, session.get(base.replace("https", "http") + "/metrics"):
            pass


def test_a_secure_metrics_port_cannot_be_the_probe_port(auth: AuthFilter) -> None:
    with pytest.raises(ValueError, match="need a port of their own"):
        OperatorServer(MetricsEmitter(), _Ready(), metrics_port=9000, probe_port=9000, auth=auth)
    OperatorServer(MetricsEmitter(), _Ready(), metrics_port=9000, probe_port=9000)  # plain HTTP may share


# --- the reviews sent to the API server ---------------------------------------------------------
class RecordingKube:
    def __init__(self, token_answer: dict[str, Any], sar_answer: dict[str, Any], error: KubeError | None = None):
        self.bodies: list[dict[str, Any]] = []
        self.token_answer, self.sar_answer, self.error = token_answer, sar_answer, error

    async def create_token_review(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        if self.error:
            raise self.error
        return self.token_answer

    async def create_subject_access_review(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        return self.sar_answer


async def test_kube_reviewer_sends_the_identity_of_the_token_review_into_the_access_review() -> None:
    user = {"username": PROMETHEUS.username, "uid": "u-1", "groups": list(PROMETHEUS.groups),
            "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-0"]}}
    kube = RecordingKube({"status": {"authenticated": True, "user": user}},
                         {"status": {"allowed": True, "reason": "RBAC: allowed by ClusterRoleBinding"}})
    reviewer = KubeReviewer(kube)
    found, why = await reviewer.authenticate(TOKEN)
    assert found == PROMETHEUS and why == ""
    assert await reviewer.authorize(PROMETHEUS, "/debug/decisions/a/b", "get") == (
        True, "RBAC: allowed by ClusterRoleBinding")
    token_review, access_review = kube.bodies
    assert token_review == {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                            "spec": {"token": TOKEN}}
    assert access_review == {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"nonResourceAttributes": {"path": "/debug/decisions/a/b", "verb": "get"},
                 "user": PROMETHEUS.username, "uid": "u-1", "groups": list(PROMETHEUS.groups),
                 "extra": {"authentication.kubernetes.io/pod-name": ["prometheus-0"]}},
    }
    # an explicit deny wins over allowed; an unauthenticated answer carries the server's error
    denied = KubeReviewer(RecordingKube({"status": {"authenticated": False, "error": "token expired"}},
                                        {"status": {"allowed": True, "denied": True}}))
    assert await denied.authenticate("x") == (None, "token expired")
    assert (await denied.authorize(PROMETHEUS, "/metrics", "get"))[0] is False


async def test_kube_reviewer_names_the_missing_permission() -> None:
    reviewer = KubeReviewer(RecordingKube({}, {}, error=KubeError(403, "create tokenreviews: 403 Forbidden")))
    with pytest.raises(ReviewUnavailable) as err:
        await reviewer.authenticate(TOKEN)
    assert "needs create on tokenreviews" in str(err.value) and err.value.review == "TokenReview"
    reviewer = KubeReviewer(RecordingKube({}, {}, error=KubeError(0, "create tokenreviews: ConnectTimeoutError")))
    with pytest.raises(ReviewUnavailable, match="ConnectTimeoutError"):
        await reviewer.authenticate(TOKEN)
