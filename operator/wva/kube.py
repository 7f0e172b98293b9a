"""A small asyncio facade over the blocking ``kubernetes`` client for the writes wva makes.

Calls run in a bounded thread pool with a per-request timeout; every call is counted by verb,
resource and outcome (the benchmark and the RBAC test read these counts). Watches are kopf's job;
this module only writes status, posts Events, patches scale and pod annotations, manages the
leader Lease, and sends the TokenReviews and SubjectAccessReviews of the metrics port's auth filter.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from wva.api.constants import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
REVIEW_WORKERS = 4  # threads for the metrics port's TokenReviews and SubjectAccessReviews
REVIEW_TIMEOUT = 5.0  # seconds per review request


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 for transport errors)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status in RETRYABLE_STATUSES


def build_api_client(server_url: str | None = None) -> k8s.ApiClient:
    """An ApiClient for an explicit server URL (the embedded local API), in-cluster, or kubeconfig."""
    if server_url:
        configuration = k8s.Configuration()
        configuration.host = server_url
        configuration.verify_ssl = not server_url.startswith("http://")
        return k8s.ApiClient(configuration)
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    return k8s.ApiClient()


class KubeClient:
    """Async wrapper: ``await kube.patch_va_status(...)`` etc. Thread-safe; one per operator."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        max_workers: int = 8,
        request_timeout: float = 10.0,
        on_request: Callable[[str, str, str], None] | None = None,
        field_manager: str | None = None,
    ) -> None:
        self.api_client = api_client
        # the name every write is recorded under in the objects' managedFields ("wva", "wva-shard-<i>")
        self._writer: dict[str, str] = {"field_manager": field_manager} if field_manager else {}
        self.custom = k8s.CustomObjectsApi(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.coordination = k8s.CoordinationV1Api(api_client)
        self.authentication = k8s.AuthenticationV1Api(api_client)
        self.authorization = k8s.AuthorizationV1Api(api_client)
        self.request_timeout = request_timeout
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="wva-kube")
        # the leader Lease has threads of its own: a renewal queued behind a burst of status writes
        # would miss its deadline, and the leader would step down (or, late, renew an expired lease)
        self._lease_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="wva-lease")
        # the metrics port's reviews likewise: a scrape must not wait behind the engine's writes, nor they behind it
        self._review_executor = ThreadPoolExecutor(max_workers=REVIEW_WORKERS, thread_name_prefix="wva-review")
        self.calls: Counter[tuple[str, str]] = Counter()
        self._on_request = on_request
        self.unreachable = False  # the last request failed in transport (no answer from the server)
        self.recovered = asyncio.Event()  # set when a request succeeds after transport failures

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._lease_executor.shutdown(wait=False, cancel_futures=True)
        self._review_executor.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()

    async def _call(self, verb: str, resource: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("_request_timeout", self.request_timeout)
        self.calls[(verb, resource)] += 1
        loop = asyncio.get_running_loop()
        outcome = "error"
        try:
            executor = {"leases": self._lease_executor, "tokenreviews": self._review_executor,
                        "subjectaccessreviews": self._review_executor}.get(resource, self._executor)
            result = await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))
            outcome = "ok"
            return result
        except ApiException as exc:
            outcome = str(exc.status)
            raise KubeError(int(exc.status or 0), f"{verb} {resource}: {exc.status} {exc.reason}") from None
        except Exception as exc:  # transport errors: connection refused, timeouts
            self.unreachable = True
            raise KubeError(0, f"{verb} {resource}: {type(exc).__name__}: {exc}") from None
        finally:
            if outcome != "error" and self.unreachable:
                self.unreachable = False
                self.recovered.set()
            if self._on_request is not None:
                self._on_request(verb, resource, outcome)

    # --- VariantAutoscaling -----------------------------------------------------------------------
    async def patch_va_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; with ``resource_version`` the server rejects the write
        with 409 Conflict when the object changed since that version (optimistic concurrency)."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        result: dict[str, Any] = await self._call(
            "patch",
            f"{PLURAL}/status",
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
            **self._writer,
        )
        return result

    async def get_va(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "get", PLURAL, self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )
        return result

    # --- listing (inventory resync) ---------------------------------------------------------------
    async def list_keys(self, kind: str, namespace: str | None = None, page: int = 500) -> set[tuple[str, str]]:
        """(namespace, name) of every object of ``kind`` (``variantautoscalings``, ``deployments`` or
        ``pods``), read page by page without building client models for them."""
        fn, args = self._lister(kind, namespace)
        keys: set[tuple[str, str]] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            response = await self._call("list", kind, fn, *args, **kwargs)
            body = json.loads(response.data)
            for item in body.get("items") or []:
                meta = item.get("metadata") or {}
                keys.add((str(meta.get("namespace", "")), str(meta.get("name", ""))))
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return keys

    def _lister(self, kind: str, namespace: str | None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if kind == PLURAL:
            if namespace:
                return self.custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL)
            return self.custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
        if kind == "deployments":
            if namespace:
                return self.apps.list_namespaced_deployment, (namespace,)
            return self.apps.list_deployment_for_all_namespaces, ()
        if kind == "pods":
            if namespace:
                return self.core.list_namespaced_pod, (namespace,)
            return self.core.list_pod_for_all_namespaces, ()
        raise ValueError(f"cannot list {kind!r}")

    # --- Deployments -----------------------------------------------------------------------------
    async def patch_deployment_scale(self, namespace: str, name: str, replicas: int) -> None:
        await self._call(
            "patch",
            "deployments/scale",
            self.apps.patch_namespaced_deployment_scale,
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            **self._writer,
        )

    # --- Pods ------------------------------------------------------------------------------------
    async def patch_pod_annotations(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        """Merge ``annotations`` into the pod's metadata (a value of None removes that key); nothing else
        of the pod is sent, so concurrent writers of other fields are not overwritten."""
        body = {"metadata": {"annotations": dict(annotations)}}
        await self._call("patch", "pods", self.core.patch_namespaced_pod, name, namespace, body, **self._writer)

    # --- Events ----------------------------------------------------------------------------------
    async def create_event(
        self,
        involved: dict[str, str],
        reason: str,
        message: str,
        event_type: str = "Normal",
        component: str = "wva",
    ) -> None:
        now = datetime.datetime.now(datetime.UTC)
        namespace = involved["namespace"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{involved['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "source": {"component": component},
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
            "reportingComponent": component,
        }
        await self._call("create", "events", self.core.create_namespaced_event, namespace, body, **self._writer)

    # --- ConfigMaps ------------------------------------------------------------------------------
    async def get_configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The ConfigMap's data, or None when it does not exist."""
        try:
            cm = await self._call("get", "configmaps", self.core.read_namespaced_config_map, name, namespace)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(cm.data or {})

    # --- Leases ----------------------------------------------------------------------------------
    async def get_lease(self, namespace: str, name: str) -> Any | None:
        try:
            return await self._call("get", "leases", self.coordination.read_namespaced_lease, name, namespace)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> Any:
        return await self._call("create", "leases", self.coordination.create_namespaced_lease, namespace, body,
                                **self._writer)

    async def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> Any:
        return await self._call("patch", "leases", self.coordination.patch_namespaced_lease, name, namespace, body,
                                **self._writer)

    # --- reviews (the metrics port's auth filter) ---------------------------------------------------
    async def create_token_review(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a TokenReview; only the answer's ``status`` is returned (the server echoes the token in
        ``spec``, which is never kept)."""
        from wva.authfilter import parse_review

        response = await self._call(
            "create", "tokenreviews", self.authentication.create_token_review, body,
            _preload_content=False, _request_timeout=REVIEW_TIMEOUT,
        )
        return parse_review(response.data)

    async def create_subject_access_review(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a SubjectAccessReview; the answer's ``status``."""
        from wva.authfilter import parse_review

        response = await self._call(
            "create", "subjectaccessreviews", self.authorization.create_subject_access_review, body,
            _preload_content=False, _request_timeout=REVIEW_TIMEOUT,
        )
        return parse_review(response.data)
