"""kopf handlers: watch VAs, Deployments and Pods into the inventory; start and stop the runtime.

Run with ``wva run`` (or ``kopf run -m wva.handlers --all-namespaces``). Only event handlers are
used: the inventory is a cache of watch streams, so kopf never needs to store handler progress on
the objects (no annotations, no finalizers, no extra writes). The two ConfigMaps are not watched:
the runtime reads them (a namespaced GET) before every engine cycle, which needs no cluster-wide
ConfigMap access and applies an edit at the next cycle.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from wva.api.constants import GROUP, PLURAL, VERSION
from wva.runtime import Runtime
from wva.settings import Settings

log = logging.getLogger(__name__)


def _runtime(memo: Any) -> Runtime:
    runtime = getattr(memo, "runtime", None)
    if runtime is None:
        raise kopf.PermanentError("wva runtime not initialised")
    assert isinstance(runtime, Runtime)
    return runtime


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.peering.standalone = True  # leader election is wva's own Lease
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.persistence.finalizer = "wva.llmd.ai/finalizer"  # never added: only event handlers are used
    runtime = getattr(memo, "runtime", None)
    if runtime is None:
        runtime = Runtime.build(
            Settings.from_env(require_prometheus=os.environ.get("METRICS_SOURCE", "").strip().lower() != "pods"),
            metrics_port=int(getattr(memo, "metrics_port", 8443)),
            probe_port=int(getattr(memo, "probe_port", 8081)),
        )
        memo.runtime = runtime
    await runtime.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.stop()


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Use the explicit API URL when one is configured (the embedded local API); else kopf's defaults."""
    runtime = getattr(memo, "runtime", None)
    url = runtime.settings.kube_api_url if runtime is not None else Settings.from_env().kube_api_url
    if url:
        return kopf.ConnectionInfo(server=url, insecure=url.startswith("http://"))
    return kopf.login_via_client(**kwargs)


# --- VariantAutoscalings --------------------------------------------------------------------------
@kopf.on.event(GROUP, VERSION, PLURAL)
async def variant_event(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime = _runtime(memo)
    meta = body.get("metadata", {})
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    if type == "DELETED":
        if runtime.inventory.delete_variant(namespace, name) is not None:
            runtime.engine.forget(namespace, name)
            log.info("VA deleted namespace=%s name=%s", namespace, name)
        return
    previous = runtime.inventory.variant(namespace, name)
    record = runtime.inventory.apply_variant(body)
    if record is None:
        if previous is not None:
            # relabelled away from this controller instance, or its model moved it to another shard
            runtime.engine.forget(namespace, name)
            log.info("VA no longer managed here namespace=%s name=%s shard=%s", namespace, name,
                     runtime.inventory.shard)
        return
    if previous is None:
        log.info(
            "VA observed namespace=%s name=%s model=%s deployment=%s accelerator=%s",
            namespace, name, record.model_id, record.deployment_name, record.accelerator or "-",
        )
    changed_target = previous is None or previous.deployment_name != record.deployment_name
    if runtime.is_leader and record.problem is None and changed_target:
        await runtime.engine.resolve_target(record)


# --- Deployments ------------------------------------------------------------------------------------
@kopf.on.event("apps", "v1", "deployments")
async def deployment_event(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime = _runtime(memo)
    meta = body.get("metadata", {})
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    existed = runtime.inventory.deployment(namespace, name) is not None
    if type == "DELETED":
        runtime.inventory.delete_deployment(namespace, name)
        if runtime.engine.drain is not None:
            runtime.engine.drain.forget(namespace, name)
    else:
        runtime.inventory.apply_deployment(body)
    appeared_or_gone = existed != (type != "DELETED")
    if appeared_or_gone and runtime.is_leader:
        for record in runtime.inventory.variants_for_deployment(namespace, name):
            if record.problem is None:
                await runtime.engine.resolve_target(record)


# --- Pods -----------------------------------------------------------------------------------------
@kopf.on.event("", "v1", "pods")
async def pod_event(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime = _runtime(memo)
    meta = body.get("metadata", {})
    if type == "DELETED":
        runtime.inventory.delete_pod(meta.get("namespace", ""), meta.get("name", ""))
    else:
        runtime.inventory.apply_pod(body)
