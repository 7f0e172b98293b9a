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

import asyncio
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import jsonpointer
import kmock
import yaml
from kmock import action

from wva.api.constants import GROUP, PLURAL, VERSION
from wva.sim.tables import VA_PRINTER_COLUMNS, table_for, table_version_wanted

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
        # writes are stamped and stored one at a time, so resourceVersions grow in the order objects
        # change: a list's resourceVersion then tells a watch exactly which changes it has not seen
        self._write_lock = asyncio.Lock()
        self.faults: list[Fault] = []
        # "group/version/plural" -> additionalPrinterColumns, for the Tables kubectl asks for
        self.printer_columns: dict[str, Sequence[Mapping[str, Any]]] = {VA_RESOURCE: VA_PRINTER_COLUMNS}

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
            shortnames={"va"},
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
    async def _serve_version(self, request: kmock.Request) -> Any:
        """An APIResourceList as a real server sends it: the core group is ``v1`` (not ``/v1``), and
        subresources carry no short names or categories (kubectl would call ``va`` ambiguous)."""
        payload = await super()._serve_version(request)
        payload["groupVersion"] = str(payload.get("groupVersion", "")).lstrip("/")  # the core group is "v1"
        for entry in payload.get("resources", []):
            if "/" in entry.get("name", ""):
                entry["shortNames"] = []
                entry["categories"] = []
                entry["verbs"] = ["get", "patch", "update"]
        return payload

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = await super()._serve_list(request)
        # the newest change among the listed objects: a watch from it sends only what changed since
        newest = max((_resource_version(o) or 0 for o in payload["items"]), default=0)
        payload["metadata"] = {**payload.get("metadata", {}), "resourceVersion": str(newest)}
        resource = request.resource
        columns, version = self._table_request(request)
        if columns is not None and version is not None:
            return _table_response(table_for(
                payload["items"], columns, version=version,
                resource_version=payload.get("metadata", {}).get("resourceVersion"),
                include_object=request.params.get("includeObject", "Metadata"),
            ))
        info = self.resources.get(resource, None)
        kind = info.kind if info is not None and info.kind else resource.plural.capitalize()
        api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        return {"apiVersion": api_version, "kind": f"{kind}List", **payload}

    def _table_request(self, request: kmock.Request) -> tuple[Any, str | None]:
        """(printer columns, Table version) when ``request`` asks for a Table of a resource that has columns."""
        resource = request.resource
        if resource is None or request.subresource:
            return None, None
        columns = self.printer_columns.get(f"{resource.group}/{resource.version}/{resource.plural}")
        if columns is None:
            return None, None  # plain JSON: kubectl falls back to printing the name and age
        accept = next((v for k, v in request.headers.items() if k.lower() == "accept"), "")
        return columns, table_version_wanted(accept)

    async def _serve_create(self, request: kmock.Request) -> Any:
        return kmock.Response(status=201, payload=await super()._serve_create(request))

    def _serve_watch(self, request: kmock.Request) -> Any:
        events = self._watch_events(request)
        columns, version = self._table_request(request)
        if columns is not None and version is not None:
            include = request.params.get("includeObject", "Metadata")
            events = _table_events(events, columns, version, include)
        return kmock.Response(headers={"Content-Type": "application/json"}, payload=events)

    async def _watch_events(self, request: kmock.Request) -> AsyncIterator[Any]:
        """kmock's watch, with a real server's resourceVersion semantics and no gap.

        With ``resourceVersion=N`` (what a list returned), only objects changed after N are sent as
        ADDED; without it (or ``0``), every object is. The stream is marked under the store's lock
        before the objects are read, so no change between the two is lost or sent twice.
        """
        yield b""  # send the headers now, even if nothing happens for a while
        resource = request.resource
        since = _resource_version({"metadata": {"resourceVersion": request.params.get("resourceVersion")}})
        bus = self._buses[resource]
        async with self._lock:
            marker = await bus.mark()
            initial = [
                {"type": "ADDED", "object": obj.raw}
                for (res, namespace, name), obj in self.objects.items()
                if res == resource and self._watched(request, namespace, name) and not obj.deleted
                and _changed_after(obj.raw, since)
            ]
        try:
            for event in initial:
                yield event
            async for event in bus.stream(since=marker):
                meta = (event.get("object") or {}).get("metadata") or {}
                if self._watched(request, meta.get("namespace"), meta.get("name")):
                    yield event
        finally:
            await bus.unmark(marker)

    @staticmethod
    def _watched(request: kmock.Request, namespace: str | None, name: str | None) -> bool:
        return (request.namespace is None or namespace == request.namespace) and (
            request.name is None or name == request.name
        )

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        obj = await super()._serve_fetch(request)
        if request.subresource == "scale":
            return _as_scale(obj)
        columns, version = self._table_request(request)
        if columns is not None and version is not None:
            include = request.params.get("includeObject", "Metadata")
            return _table_response(table_for([obj], columns, version=version, include_object=include))
        return obj

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
        if request.resource is None or request.action not in (action.CREATE, action.UPDATE, action.DELETE):
            return await self._handle_stamped(request)
        async with self._write_lock:
            self._stamp_metadata(request)
            return await self._handle_stamped(request)

    async def _handle_stamped(self, request: kmock.Request) -> Any:
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


def write_kubeconfig(path: Path, server: str, namespace: str = "default", name: str = "wva-demo") -> Path:
    """A kubeconfig for the embedded API at ``server`` (plain HTTP, no credentials), ``namespace`` current.

    ``kubectl --kubeconfig PATH get va -w`` then watches the VariantAutoscalings as in a cluster.
    """
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }
    path.write_text("# the embedded local API of wva demo; valid while the demo runs\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


def _resource_version(obj: Any) -> int | None:
    """An object's resourceVersion as a number (None when it has none, or not a number)."""
    value = ((obj or {}).get("metadata") or {}).get("resourceVersion") if isinstance(obj, dict) else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _changed_after(obj: Any, since: int | None) -> bool:
    """True unless ``obj`` is known to be unchanged since resourceVersion ``since`` (0 or None: since ever)."""
    version = _resource_version(obj)
    return not since or version is None or version > since


def _table_response(table: dict[str, Any]) -> Any:
    return kmock.Response(headers={"Content-Type": "application/json"}, payload=table)


async def _table_events(
    events: AsyncIterator[Any], columns: Sequence[Mapping[str, Any]], version: str, include: str
) -> AsyncIterator[Any]:
    """Watch events whose objects are one-row Tables (the column definitions come with the first only)."""
    first = True
    async for event in events:
        obj = event.get("object") if isinstance(event, dict) else None
        if isinstance(obj, dict) and event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
            event = {"type": event["type"],
                     "object": table_for([obj], columns, version=version, include_object=include, headers=first)}
            first = False
        yield event


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
