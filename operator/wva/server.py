"""The operator's HTTP endpoints.

The metrics port serves ``/metrics`` and the decision records (``/debug/decisions`` lists the
VariantAutoscalings that have records, ``/debug/decisions/<namespace>/<name>`` returns a VA's
records as JSON, oldest first; ``?limit=N`` keeps the newest N). By default it is HTTPS
(:mod:`wva.servingcerts`) and every request on it, whatever its path, passes the bearer-token filter
(:mod:`wva.authfilter`); ``--metrics-secure=false`` serves it as plain HTTP without authentication.
aiohttp speaks HTTP/1.1 only: there is no HTTP/2 to turn on or off. The probe port serves ``/healthz``
and ``/readyz`` over plain HTTP without authentication (kubelet probes carry no token).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from wva.actuator.metrics import MetricsEmitter
from wva.authfilter import AuthFilter
from wva.decisions import DecisionStore
from wva.servingcerts import ServingCertificate

log = logging.getLogger(__name__)


class OperatorServer:
    def __init__(
        self,
        emitter: MetricsEmitter,
        ready: Callable[[], tuple[bool, str]],
        host: str = "0.0.0.0",  # a pod must listen on its pod IP
        metrics_port: int = 8443,
        probe_port: int = 8081,
        decisions: DecisionStore | None = None,
        *,
        tls: ServingCertificate | None = None,
        auth: AuthFilter | None = None,
    ) -> None:
        """``tls`` makes the metrics port HTTPS and ``auth`` puts every request on it through the filter;
        with neither it is plain HTTP, open to anyone who reaches it."""
        if (tls is not None or auth is not None) and metrics_port == probe_port and metrics_port > 0:
            raise ValueError(
                f"the metrics port {metrics_port} is also the probe port: with secure metrics the probes "
                "(no token, plain HTTP) need a port of their own"
            )
        self.emitter = emitter
        self.ready = ready
        self.host = host
        self.metrics_port = metrics_port
        self.probe_port = probe_port
        self.decisions = decisions
        self.tls = tls
        self.auth = auth
        self._runners: list[web.AppRunner] = []
        self.bound_ports: dict[str, int] = {}

    @property
    def metrics_scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    async def start(self) -> None:
        metrics = web.Application(middlewares=[self.auth.middleware] if self.auth is not None else [])
        metrics.router.add_get("/metrics", self._metrics)
        metrics.router.add_get("/debug/decisions", self._decision_index)
        metrics.router.add_get("/debug/decisions/{namespace}/{name}", self._decision_records)
        probes = web.Application()
        probes.router.add_get("/healthz", self._healthz)
        probes.router.add_get("/readyz", self._readyz)
        if self.metrics_port == self.probe_port and self.metrics_port > 0:  # 0 and 0: two free ports
            metrics.router.add_get("/healthz", self._healthz)
            metrics.router.add_get("/readyz", self._readyz)
            apps = {"metrics": (metrics, self.metrics_port)}
        else:
            apps = {"metrics": (metrics, self.metrics_port), "probes": (probes, self.probe_port)}
        for name, (app, port) in apps.items():
            if port < 0:
                continue
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            context = self.tls.server_context if name == "metrics" and self.tls is not None else None
            site = web.TCPSite(runner, self.host, port, ssl_context=context)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.bound_ports[name] = int(sockets[0].getsockname()[1]) if sockets else port
            self._runners.append(runner)
            if name == "metrics":
                self._log_metrics_mode()
            else:
                log.info("Serving %s on %s:%d (http)", name, self.host, self.bound_ports[name])

    def _log_metrics_mode(self) -> None:
        port = self.bound_ports["metrics"]
        if self.tls is not None and self.auth is not None:
            log.info("Serving metrics on %s:%d (https, bearer token authenticated and authorized; certificate %s)",
                     self.host, port, self.tls.source)
            return
        if self.tls is not None:
            log.warning("Serving metrics on %s:%d (https) WITHOUT authentication", self.host, port)
            return
        log.warning(
            "Serving metrics on %s:%d over plain HTTP without authentication (--metrics-secure=false): "
            "anyone who reaches the port reads /metrics and /debug/decisions", self.host, port,
        )

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body, content_type = self.emitter.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _decision_index(self, _request: web.Request) -> web.Response:
        keys = self.decisions.keys() if self.decisions is not None else []
        return web.json_response({"variantAutoscalings": [f"{ns}/{name}" for ns, name in keys]})

    async def _decision_records(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        raw_limit = request.query.get("limit", "")
        limit = None
        if raw_limit:
            if not raw_limit.isdigit() or int(raw_limit) < 1:
                return web.json_response(
                    {"error": f"limit must be a whole number >= 1, got {raw_limit!r}"}, status=400
                )
            limit = int(raw_limit)
        records = self.decisions.records(namespace, name) if self.decisions is not None else []
        if not records:
            return web.json_response(
                {"error": f"no decision records for {namespace}/{name}: no such VariantAutoscaling, "
                          "or no cycle has decided it yet on this replica (only the leader decides)"},
                status=404,
            )
        if limit is not None:
            records = records[-limit:]
        return web.json_response(
            {"namespace": namespace, "name": name, "records": [r.to_dict() for r in records]}
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        ok, why = self.ready()
        return web.Response(status=200 if ok else 503, text=f"{why}\n")
