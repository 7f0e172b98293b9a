"""Run the real operator (kopf + runtime) in the test's event loop against the embedded API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import kopf

from wva.rbac import ApiRequest, is_allowed, required_rules
from wva.runtime import Runtime
from wva.settings import Settings
from wva.sim.local_api import LocalKubernetesAPI, request_method

OPERATOR_NAMESPACE = "wva-system"


def operator_settings(api: LocalKubernetesAPI, prometheus_url: str, **env: str) -> Settings:
    base = {
        "PROMETHEUS_BASE_URL": prometheus_url,
        "WVA_KUBE_API_URL": api.base_url,
        "POD_NAMESPACE": OPERATOR_NAMESPACE,
        "POD_NAME": "wva-test-0",
        "LEADER_ELECTION": "false",
        "GLOBAL_OPT_INTERVAL": "30s",
    }
    base.update(env)
    return Settings.from_env(base)


@contextlib.asynccontextmanager
async def running_operator(runtime: Runtime) -> AsyncIterator[Runtime]:
    """kopf with wva's handlers, started and stopped inside the test body (see the testing notes)."""
    import wva.handlers  # noqa: F401  (registers the handlers on kopf's default registry)

    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            clusterwide=True, standalone=True, stop_flag=stop, ready_flag=ready, memo=kopf.Memo(runtime=runtime)
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 15)
        await wait_for(lambda: runtime.started, timeout=15, what="runtime start")
        yield runtime
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=20)


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``predicate`` (on the wall clock) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def condition(va: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (va.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def operator_api_calls(api: LocalKubernetesAPI) -> list[ApiRequest]:
    """The Kubernetes API requests the operator made (kopf's and the kubernetes client's), as RBAC requests.

    Requests of the test's own simulated cluster (plain aiohttp) are left out by their User-Agent.
    """
    calls: list[ApiRequest] = []
    for request in api:
        agent = str(request.headers.get("User-Agent", ""))
        if request.resource is None or not (agent.startswith("kopf") or agent.startswith("OpenAPI-Generator")):
            continue
        if not request.resource.plural:
            continue  # API discovery (/apis/<group>/<version>) is open to every authenticated client
        method = request_method(request)
        if method == "GET":
            if str(request.params.get("watch", "")).lower() in ("true", "1"):
                verb = "watch"
            else:
                verb = "get" if request.name else "list"
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, method)
        calls.append(
            ApiRequest(
                request.resource.group or "",
                request.resource.plural,
                request.subresource or "",
                verb,
                request.namespace,
                request.name,
            )
        )
    return calls


def rbac_objects(actuation_mode: str, own_namespace: str = OPERATOR_NAMESPACE) -> list[dict[str, Any]]:
    """A ClusterRole and a Role holding exactly ``wva.rbac.required_rules`` (what the manifests grant)."""
    cluster, namespaced = [], []
    for rule in required_rules(actuation_mode):
        entry = {"apiGroups": [rule.api_group], "resources": [rule.resource], "verbs": list(rule.verbs)}
        (namespaced if rule.scope == "namespace" else cluster).append(entry)
    return [
        {"kind": "ClusterRole", "metadata": {"name": "wva"}, "rules": cluster},
        {"kind": "Role", "metadata": {"name": "wva", "namespace": own_namespace}, "rules": namespaced},
    ]


def unauthorised_calls(api: LocalKubernetesAPI, actuation_mode: str) -> list[ApiRequest]:
    objects = rbac_objects(actuation_mode)
    return [
        c for c in operator_api_calls(api)
        if not is_allowed(c.api_group, c.resource, c.subresource, c.verb, c.namespace, objects, name=c.name)
    ]
