"""Authentication and authorisation of every request to the metrics port, as controller-runtime's
``filters.WithAuthenticationAndAuthorization`` does it.

A request must carry ``Authorization: Bearer <token>``. The token goes to the API server in a
TokenReview (authentication.k8s.io/v1); the user it names, with its groups, uid and extra fields, goes
into a SubjectAccessReview (authorization.k8s.io/v1) for the non-resource URL ``path`` (the request path,
as requested) and verb ``get``. So a ClusterRole with ``nonResourceURLs: ["/metrics", "/debug/decisions",
"/debug/decisions/*"]`` and ``verbs: ["get"]``, bound to the scraper's ServiceAccount, is what grants access.

Answers: no token, or a token the server does not authenticate → 401; authenticated but not allowed →
403; allowed → the handler. When the API server cannot answer (a timeout, an error status, no such API)
→ 503 with the reason; that answer is never cached. Allowed and denied answers are cached for ``ttl``
seconds (10), keyed by a keyed hash of the token (tokens themselves are never kept, logged or shown in a
repr), so a scraper costs the API server two requests per ``ttl`` at most, and a revoked token stops
working within ``ttl``. Reviews run with bounded concurrency and a timeout; identical reviews in flight
at the same time are made once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from aiohttp import web
from cachetools import TTLCache

log = logging.getLogger(__name__)

__all__ = [
    "AuthFilter",
    "AuthResult",
    "KubeReviewer",
    "Outcome",
    "ReviewUnavailable",
    "Reviewer",
    "UserInfo",
    "bearer_token",
]

DEFAULT_TTL = 10.0
DEFAULT_TIMEOUT = 5.0
DEFAULT_CONCURRENCY = 4
DEFAULT_CACHE_SIZE = 4096
T = TypeVar("T")


@dataclass(frozen=True)
class UserInfo:
    """The identity a TokenReview returned (hashable: it keys the access cache)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_review(cls, user: Mapping[str, Any]) -> UserInfo:
        extra = user.get("extra") or {}
        return cls(
            username=str(user.get("username") or ""),
            uid=str(user.get("uid") or ""),
            groups=tuple(str(g) for g in user.get("groups") or ()),
            extra=tuple(sorted((str(k), tuple(str(x) for x in v or ())) for k, v in extra.items())),
        )


class ReviewUnavailable(Exception):
    """The API server did not answer a review; ``review`` is ``TokenReview`` or ``SubjectAccessReview``."""

    def __init__(self, review: str, reason: str) -> None:
        self.review = review
        self.reason = reason
        super().__init__(f"{review}: {reason}")


class Reviewer(Protocol):
    """What the filter asks the API server. Both raise ReviewUnavailable when there is no answer."""

    async def authenticate(self, token: str) -> tuple[UserInfo | None, str]:
        """(the user, "") for an authenticated token, else (None, why not)."""
        ...

    async def authorize(self, user: UserInfo, path: str, verb: str) -> tuple[bool, str]:
        """(allowed, the authorizer's reason)."""
        ...


class Outcome(StrEnum):
    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class AuthResult:
    outcome: Outcome
    reason: str = ""
    user: str | None = None
    cached: bool = False
    status: int = field(init=False)

    def __post_init__(self) -> None:
        status = {Outcome.ALLOWED: 200, Outcome.UNAUTHENTICATED: 401, Outcome.FORBIDDEN: 403,
                  Outcome.UNAVAILABLE: 503}[self.outcome]
        object.__setattr__(self, "status", status)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme in any case), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        return None
    return token


class AuthFilter:
    """Decides each request to the metrics port; :attr:`middleware` plugs it into an aiohttp app."""

    def __init__(
        self,
        reviewer: Reviewer,
        *,
        ttl: float = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        max_concurrency: int = DEFAULT_CONCURRENCY,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reviewer = reviewer
        self.ttl = ttl
        self.timeout = timeout
        self._key = secrets.token_bytes(32)  # the cache keys are HMACs: useless outside this process
        self._tokens: TTLCache[bytes, tuple[UserInfo | None, str]] = TTLCache(cache_size, ttl, timer=clock)
        self._access: TTLCache[tuple[UserInfo, str, str], tuple[bool, str]] = TTLCache(cache_size, ttl, timer=clock)
        self._inflight: dict[Any, asyncio.Future[Any]] = {}
        self._concurrency = max_concurrency
        self._semaphore: asyncio.Semaphore | None = None  # made on first use, in the serving loop
        self.reviews = 0  # reviews sent to the API server (tests read it)

    def __repr__(self) -> str:
        return (f"AuthFilter(ttl={self.ttl:g}s, timeout={self.timeout:g}s, cached_tokens={len(self._tokens)}, "
                f"cached_access={len(self._access)})")

    def token_key(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    async def check(self, authorization: str | None, path: str, verb: str = "get") -> AuthResult:
        """The decision for one request with this ``Authorization`` header value."""
        token = bearer_token(authorization)
        if token is None:
            return AuthResult(Outcome.UNAUTHENTICATED, "no bearer token")
        key = self.token_key(token)  # the caches hold only this keyed hash
        try:
            cached = key in self._tokens
            user, why = await self._cached(self._tokens, key, "TokenReview", lambda: self.reviewer.authenticate(token))
        except ReviewUnavailable as exc:
            return AuthResult(Outcome.UNAVAILABLE, str(exc))
        if user is None:
            return AuthResult(Outcome.UNAUTHENTICATED, why or "token not authenticated", cached=cached)
        access_key = (user, path, verb)
        try:
            cached = access_key in self._access
            allowed, why = await self._cached(self._access, access_key, "SubjectAccessReview",
                                              lambda: self.reviewer.authorize(user, path, verb))
        except ReviewUnavailable as exc:
            return AuthResult(Outcome.UNAVAILABLE, str(exc), user=user.username)
        outcome = Outcome.ALLOWED if allowed else Outcome.FORBIDDEN
        return AuthResult(outcome, why, user=user.username, cached=cached)

    async def _cached(self, cache: TTLCache[Any, T], key: Any, name: str, review: Callable[[], Awaitable[T]]) -> T:
        """The cached answer, else the review's (made once for concurrent callers, bounded, with a timeout).
        An unavailable review raises ReviewUnavailable and is not cached."""
        try:
            found: T = cache[key]
            return found
        except KeyError:
            pass
        inflight = self._inflight.get((name, key))
        if inflight is not None:
            shared: T = await asyncio.shield(inflight)
            return shared
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inflight[(name, key)] = future
        try:
            answer = await self._bounded(name, review)
        except BaseException as exc:
            if isinstance(exc, ReviewUnavailable):
                error = exc
            elif isinstance(exc, Exception):
                log.exception("Metrics request authorization failed review=%s", name)
                error = ReviewUnavailable(name, f"{type(exc).__name__}: {exc}")
            else:  # the first caller was cancelled: the others get an answer, not its cancellation
                error = ReviewUnavailable(name, "cancelled")
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            if error is exc or not isinstance(exc, Exception):
                raise
            raise error from None
        else:
            cache[key] = answer
            future.set_result(answer)
            return answer
        finally:
            self._inflight.pop((name, key), None)

    async def _bounded(self, name: str, review: Callable[[], Awaitable[T]]) -> T:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._concurrency)

        async def run() -> T:
            assert self._semaphore is not None
            async with self._semaphore:
                self.reviews += 1
                return await review()

        try:
            return await asyncio.wait_for(run(), self.timeout)
        except TimeoutError:
            raise ReviewUnavailable(name, f"no answer from the Kubernetes API within {self.timeout:g}s") from None

    # --- aiohttp ----------------------------------------------------------------------------------------
    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        result = await self.check(request.headers.get("Authorization"), path)
        remote = request.remote or "-"
        if result.outcome is Outcome.ALLOWED:
            log.debug("Metrics request allowed path=%s user=%s cached=%s", path, result.user, result.cached)
            return await handler(request)
        if result.outcome is Outcome.UNAUTHENTICATED:
            # a missing token, or a repeat from the cache, is routine (scanners, a misconfigured scraper)
            level = logging.DEBUG if result.cached or result.reason == "no bearer token" else logging.INFO
            log.log(level, "Metrics request unauthenticated path=%s remote=%s reason=%s", path, remote, result.reason)
            return web.Response(
                status=401, text="Unauthorized: a valid bearer token is required\n",
                headers={"WWW-Authenticate": 'Bearer realm="wva"'},
            )
        if result.outcome is Outcome.FORBIDDEN:
            level = logging.DEBUG if result.cached else logging.INFO
            log.log(level, "Metrics request forbidden path=%s user=%s remote=%s reason=%s",
                    path, result.user, remote, result.reason or "-")
            return web.Response(status=403, text=f"Forbidden: user {result.user!r} may not get path {path!r}\n")
        log.warning("Metrics request authorization unavailable path=%s remote=%s error=%s", path, remote,
                    result.reason)
        return web.Response(
            status=503, text=f"Service Unavailable: the request could not be authorized: {result.reason}\n",
            headers={"Retry-After": "5"},
        )


class KubeReviewer:
    """Reviews through the API server with wva's KubeClient (its own bounded thread pool)."""

    def __init__(self, kube: Any, audiences: tuple[str, ...] = ()) -> None:
        self.kube = kube
        self.audiences = audiences

    async def authenticate(self, token: str) -> tuple[UserInfo | None, str]:
        from wva.kube import KubeError

        body: dict[str, Any] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                "spec": {"token": token}}
        if self.audiences:
            body["spec"]["audiences"] = list(self.audiences)
        try:
            answer = await self.kube.create_token_review(body)
        except KubeError as exc:
            raise ReviewUnavailable("TokenReview", _why(exc, "tokenreviews")) from None
        status = answer.get("status") or {}
        if not status.get("authenticated"):
            return None, str(status.get("error") or "token not authenticated")
        return UserInfo.from_review(status.get("user") or {}), ""

    async def authorize(self, user: UserInfo, path: str, verb: str) -> tuple[bool, str]:
        from wva.kube import KubeError

        spec: dict[str, Any] = {"nonResourceAttributes": {"path": path, "verb": verb}, "user": user.username}
        if user.uid:
            spec["uid"] = user.uid
        if user.groups:
            spec["groups"] = list(user.groups)
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        try:
            answer = await self.kube.create_subject_access_review(body)
        except KubeError as exc:
            raise ReviewUnavailable("SubjectAccessReview", _why(exc, "subjectaccessreviews")) from None
        status = answer.get("status") or {}
        return bool(status.get("allowed")) and not status.get("denied"), str(
            status.get("reason") or status.get("evaluationError") or ""
        )


def _why(exc: Any, resource: str) -> str:
    status = int(getattr(exc, "status", 0) or 0)
    if status == 403:
        return f"{exc} (wva's ServiceAccount needs create on {resource})"
    if status == 404:
        return f"{exc} (the API server does not serve {resource})"
    return str(exc)


def parse_review(data: bytes | str) -> dict[str, Any]:
    """A review answer's JSON body; only ``status`` is ever read from it (a TokenReview echoes the token)."""
    parsed = json.loads(data)
    return {"status": parsed.get("status") or {}} if isinstance(parsed, dict) else {"status": {}}
