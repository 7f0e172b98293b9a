"""A simulated cluster on the embedded local API: Deployments whose pods are emulated vLLM servers.

``SimulatedCluster`` plays the Deployment/ReplicaSet controllers and the kubelet: it keeps each
managed Deployment's pods equal to ``spec.replicas`` (pods carry the ReplicaSet owner reference and
``pod-template-hash`` label a real cluster sets), marks them Ready, mirrors ``status.replicas``, and
adds or removes the matching emulated vLLM pod. Everything goes through the API over HTTP, as a
real controller's writes would.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from wva.api.constants import API_VERSION, GROUP, KIND, PLURAL, VERSION
from wva.sim.vllm import VLLMEmulator

log = logging.getLogger(__name__)

PodValues = Callable[[str, str], dict[str, Any]]  # (deployment, pod) -> emulator values for a new pod


@dataclass
class SimDeployment:
    name: str
    namespace: str
    model: str
    replicas: int
    template_hash: str
    pods: list[str] = field(default_factory=list)
    starting: dict[str, float] = field(default_factory=dict)  # pod -> when it becomes Ready (monotonic)

    @property
    def ready_pods(self) -> list[str]:
        return [p for p in self.pods if p not in self.starting]


def _now(at: float | None = None) -> str:
    moment = datetime.datetime.now(datetime.UTC) if at is None else datetime.datetime.fromtimestamp(at, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class SimulatedCluster:
    def __init__(
        self, api_url: str, emulator: VLLMEmulator, pod_values: PodValues | None = None, startup_delay: float = 0.0
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.emulator = emulator
        # real seconds from a pod's creation to Ready (model loading); a starting pod serves no metrics
        self.startup_delay = startup_delay
        self.pod_values = pod_values or (lambda _d, _p: {})
        self.deployments: dict[tuple[str, str], SimDeployment] = {}
        self._session: aiohttp.ClientSession | None = None
        self._seq = itertools.count(1)

    async def __aenter__(self) -> SimulatedCluster:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use 'async with SimulatedCluster(...)'")
        return self._session

    async def request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Content-Type": content_type or "application/json"}
        async with self.session.request(method, self.api_url + path, json=body, headers=headers) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path} -> {resp.status}: {text[:300]}")
            return await resp.json(content_type=None) if text else None

    # --- objects -------------------------------------------------------------------------------
    async def create_deployment(self, name: str, namespace: str, model: str, replicas: int = 1) -> SimDeployment:
        template_hash = hashlib.sha1(f"{namespace}/{name}".encode()).hexdigest()[:10]
        labels = {"app": name}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "vllm", "image": "wva-emulator", "args": ["--model", model]}]},
                },
            },
            "status": {"replicas": 0, "readyReplicas": 0},
        }
        await self.request("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", body)
        dep = SimDeployment(name, namespace, model, replicas, template_hash)
        self.deployments[(namespace, name)] = dep
        return dep

    async def delete_deployment(self, name: str, namespace: str) -> None:
        dep = self.deployments.pop((namespace, name), None)
        if dep is not None:
            for pod in list(dep.pods):
                await self._delete_pod(dep, pod)
        await self.request("DELETE", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    async def create_va(
        self,
        name: str,
        namespace: str,
        model: str,
        deployment: str,
        accelerator: str,
        cost: str = "10.0",
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        labels: dict[str, str] | None = None,
        raw_spec: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "scaleTargetRef": {"kind": "Deployment", "name": deployment},
            "modelID": model,
            "variantCost": cost,
        }
        if accelerator:
            spec["modelProfile"] = {"accelerators": [{"acc": accelerator, "accCount": 1, "maxBatchSize": 256}]}
        if min_replicas is not None:
            spec["minReplicas"] = min_replicas
        if max_replicas is not None:
            spec["maxReplicas"] = max_replicas
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": raw_spec if raw_spec is not None else spec,
        }
        result: dict[str, Any] = await self.request(
            "POST", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}", body
        )
        return result

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def get_va(self, name: str, namespace: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}")
        return result

    async def get_deployment(self, name: str, namespace: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        return result

    async def scale(self, name: str, namespace: str, replicas: int) -> None:
        await self.request(
            "PATCH",
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            {"spec": {"replicas": replicas}},
            "application/merge-patch+json",
        )

    # --- controller ------------------------------------------------------------------------------
    async def reconcile(self) -> dict[str, int]:
        """Make every managed Deployment's pods match its spec.replicas; return replicas by name."""
        result: dict[str, int] = {}
        for dep in list(self.deployments.values()):
            body = await self.get_deployment(dep.name, dep.namespace)
            want = int((body.get("spec") or {}).get("replicas") or 0)
            while len(dep.pods) < want:
                await self._create_pod(dep)
            while len(dep.pods) > want:
                await self._delete_pod(dep, dep.pods[-1])
            now = time.monotonic()
            for pod in [p for p, at in dep.starting.items() if at <= now]:
                await self._mark_ready(dep, pod)
            ready = len(dep.ready_pods)
            await self.request(
                "PATCH",
                f"/apis/apps/v1/namespaces/{dep.namespace}/deployments/{dep.name}/status",
                {"status": {"replicas": want, "readyReplicas": ready, "availableReplicas": ready}},
                "application/merge-patch+json",
            )
            dep.replicas = want
            result[dep.name] = want
        return result

    async def _create_pod(self, dep: SimDeployment) -> str:
        suffix = hashlib.sha1(f"{dep.name}-{next(self._seq)}".encode()).hexdigest()[:5]
        pod = f"{dep.name}-{dep.template_hash}-{suffix}"
        rs = f"{dep.name}-{dep.template_hash}"
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": dep.namespace,
                "labels": {"app": dep.name, "pod-template-hash": dep.template_hash},
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": rs, "controller": True}
                ],
            },
            "spec": {"containers": [{"name": "vllm", "image": "wva-emulator"}]},
            "status": {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _now()}],
            },
        }
        body["metadata"]["creationTimestamp"] = _now()
        if self.startup_delay > 0:
            body["status"] = {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}
            dep.starting[pod] = time.monotonic() + self.startup_delay
        else:
            self.emulator.add_pod(pod, dep.namespace, dep.model, **self.pod_values(dep.name, pod))
        await self.request("POST", f"/api/v1/namespaces/{dep.namespace}/pods", body)
        dep.pods.append(pod)
        return pod

    async def _mark_ready(self, dep: SimDeployment, pod: str) -> None:
        """The model has loaded: the pod turns Ready and starts serving metrics.

        The Ready transition is stamped with the moment the start was due, as a kubelet records when the
        probe passed: a reconcile that runs late on a busy machine does not lengthen the cold start."""
        due = dep.starting.pop(pod)
        ready_at = time.time() - max(0.0, time.monotonic() - due)
        self.emulator.add_pod(pod, dep.namespace, dep.model, **self.pod_values(dep.name, pod))
        await self.request(
            "PATCH",
            f"/api/v1/namespaces/{dep.namespace}/pods/{pod}",
            {"status": {"phase": "Running", "podIP": "127.0.0.1",
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _now(ready_at)}]}},
            "application/merge-patch+json",
        )

    async def _delete_pod(self, dep: SimDeployment, pod: str) -> None:
        if dep.starting.pop(pod, None) is None:
            self.emulator.remove_pod(dep.namespace, pod)
        dep.pods.remove(pod)
        try:
            await self.request("DELETE", f"/api/v1/namespaces/{dep.namespace}/pods/{pod}")
        except RuntimeError as exc:
            if "404" not in str(exc):
                raise

    def set_load(self, namespace: str, deployment: str, **values: Any) -> None:
        """Set emulator values on every ready pod of one Deployment."""
        for pod in self.deployments[(namespace, deployment)].ready_pods:
            self.emulator.set_values(namespace, pod, **values)
