"""The embedded local Kubernetes API: an in-memory API server for tests and ``wva demo``.

It is kmock's ``KubernetesEmulator`` with the server-side behaviour kopf and the kubernetes client
rely on and plain kmock lacks: server-side metadata on create (namespace from the URL, uid,
creationTimestamp, generation), a ``resourceVersion`` bumped on every write, ``generation`` bumped on
spec changes, 201 on create, ``kind``/``apiVersion`` on lists, watch streams sent as JSON, a failed
JSON-patch ``test`` answered 422, and the ``scale`` subresource answered with a Scale object.

It also lets tests inject API errors (``inject_fault``) and counts what it injected, so a
reliability test can prove its fault really happened.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer
import kmock
from kmock import action

from wva.api.constants import GROUP, PLURAL, VERSION

VA_RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"


@dataclass
class Fault:
    """Answer matching requests with ``status`` while ``remaining`` > 0 (None = forever)."""

    method: str
    plural: str
    subresource: str | None
    status: int
    remaining: int | None = 1
    namespace: str | None = None
    hits: int = 0

    def matches(self, request: kmock.Request) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if request.method is None or request_method(request) != self.method.upper():
            return False
        resource = request.resource
        if resource is None or resource.plural != self.plural:
            return False
        if self.namespace is not None and request.namespace != self.namespace:
            return False
        return (request.subresource or None) == self.subresource


def request_method(request: kmock.Request) -> str:
    """The HTTP method of a recorded request as an upper-case string."""
    method = request.method
    return str(getattr(method, "value", method)).upper()


_REASONS = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


class LocalKubernetesAPI(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator with the server-side behaviour a real API server has (see module doc)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv = itertools.count(1)
        self.faults: list[Fault] = []

    @property
    def base_url(self) -> str:
        """The server's URL without a trailing slash (the handler must be served by a kmock.Server)."""
        return str(self.url).rstrip("/")

    # --- setup -----------------------------------------------------------------------------------
    def declare_resources(self) -> None:
        """Load the built-in resources and declare the VariantAutoscaling resource (kopf needs both)."""
        self.resources.load_bundled()
        self.resources[VA_RESOURCE] = kmock.ResourceInfo(
            kind="VariantAutoscaling",
            singular="variantautoscaling",
            namespaced=True,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status"},
        )

    def inject_fault(
        self,
        method: str,
        plural: str,
        status: int,
        *,
        subresource: str | None = None,
        times: int | None = 1,
        namespace: str | None = None,
    ) -> Fault:
        fault = Fault(method, plural, subresource, status, times, namespace)
        self.faults.append(fault)
        return fault

    # --- behaviour -------------------------------------------------------------------------------
    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = await super()._serve_list(request)
        resource = request.resource
        info = self.resources.get(resource, None)
        kind = info.kind if info is not None and info.kind else resource.plural.capitalize()
        api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        return {"apiVersion": api_version, "kind": f"{kind}List", **payload}

    async def _serve_create(self, request: kmock.Request) -> Any:
        return kmock.Response(status=201, payload=await super()._serve_create(request))

    def _serve_watch(self, request: kmock.Request) -> Any:
        return kmock.Response(
            headers={"Content-Type": "application/json"}, payload=super()._serve_watch(request)
        )

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        obj = await super()._serve_fetch(request)
        return _as_scale(obj) if request.subresource == "scale" else obj

    async def _serve_update(self, request: kmock.Request) -> Any:
        obj = await super()._serve_update(request)
        return _as_scale(obj) if request.subresource == "scale" else obj

    async def _handle(self, request: kmock.Request) -> Any:
        for fault in self.faults:
            if fault.matches(request):
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                raise kmock.KubernetesError(
                    status=fault.status,
                    reason=_REASONS.get(fault.status, "InjectedFault"),
                    message=f"injected fault {fault.status} for {fault.method} {fault.plural}",
                )
        self._stamp_metadata(request)
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            message = f"JSON patch failed: {exc}"
            raise kmock.KubernetesError(status=422, reason="Invalid", message=message) from exc

    def _stamp_metadata(self, request: kmock.Request) -> None:
        if request.resource is None:
            return
        rv = str(next(self._rv))
        data = request.data
        if request.action == action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault(
                "creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            meta["resourceVersion"] = rv
            meta.setdefault("generation", 1)
        elif request.action == action.UPDATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            meta["resourceVersion"] = rv
            if "spec" in data and not request.subresource:
                current = self._current(request)
                if current is not None:
                    meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1
        elif request.action == action.UPDATE and isinstance(data, list):
            data.append({"op": "add", "path": "/metadata/resourceVersion", "value": rv})

    def _current(self, request: kmock.Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects:
            obj = self.objects[key]
            return None if obj.deleted else dict(obj.raw)
        return None


def _as_scale(obj: Any) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
            "uid": meta.get("uid"),
        },
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
        "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": ""},
    }
