"""The cluster side of the soak benchmark, in a child process: API server, workloads, vLLM pods, churn.

Everything the operator talks to except Prometheus runs here, so that the operator's process holds
nothing but the operator (its RSS, file descriptors, tasks and threads are what the soak measures):

- the embedded Kubernetes API (``wva.sim.local_api``, kmock-based) on a loopback port;
- one vLLM emulator serving every pod's series (Prometheus scrapes it, ``honor_labels``);
- the controllers' and kubelet's part: each variant is a Deployment with ``pods_per_va`` Ready pods
  (ReplicaSet owner references, ``pod-template-hash``) and a VariantAutoscaling, all created and deleted
  through the API over HTTP as a real controller's writes would be;
- churn: every ``step`` seconds the oldest variants are deleted (VA, pods, Deployment, emulated pods)
  and as many new ones created under new names and models, and pods of other variants are replaced
  by new ones (a kubelet restart under a new name), at the rates asked for;
- a scraper that reads the operator's ``/metrics`` and ``/readyz`` every 15 s, as Prometheus and the
  kubelet would.

The embedded API is a test double: it logs every request (and scans that log for every new one) and
keeps every version of every object. Here the log holds only the requests in flight, and every 30 s
deleted objects are dropped and histories cut to the last version, so a 20-minute soak neither slows
down nor grows this process without bound.

The parent drives it through a pipe: ``(command, argument)`` in, one reply out (see ``ClusterProcess``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import multiprocessing
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from wva.api.constants import API_VERSION, GROUP, KIND, PLURAL, VERSION

NAMESPACES = 4
COMPACT_EVERY = 30.0
SCRAPE_EVERY = 15.0


@dataclass
class Variant:
    index: int
    pods: list[str] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return f"soak-{self.index % NAMESPACES}"

    @property
    def name(self) -> str:
        return f"va-{self.index:05d}"

    @property
    def model(self) -> str:
        return f"org/model-{self.index:05d}"

    @property
    def deployment(self) -> str:
        return f"model-{self.index:05d}"

    @property
    def template_hash(self) -> str:
        return hashlib.sha1(self.deployment.encode()).hexdigest()[:10]


def emulator_values(index: int, slot: int) -> dict[str, Any]:
    """Moderate, steady load (no variant saturated), different per pod: as ``bench.fleet`` serves."""
    return {"kv_cache_usage": round(0.2 + 0.05 * ((index + slot) % 8), 3), "num_requests_waiting": slot % 3}


class Cluster:
    """The workloads on the embedded API and their emulated pods; ``churn_step`` replaces some of them."""

    def __init__(self, api_url: str, emulator: Any, pods_per_va: int, seed: int) -> None:
        import aiohttp

        self.api_url = api_url
        self.emulator = emulator
        self.pods_per_va = pods_per_va
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.live: collections.OrderedDict[int, Variant] = collections.OrderedDict()  # oldest first
        self.next_index = 0
        self.pod_seq = itertools.count(1)
        self.random = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self._debt = {"vas": 0.0, "pods": 0.0}

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        async with self.session.request(method, self.api_url + path, json=body,
                                        headers={"Content-Type": content_type}) as resp:
            text = await resp.text()
            if resp.status == 404 and method == "DELETE":
                return None
            if resp.status >= 400:
                self.counts["api_errors"] += 1
                raise RuntimeError(f"{method} {path} -> {resp.status}: {text[:300]}")
            return None

    # --- objects ---------------------------------------------------------------------------------
    def _pod_body(self, v: Variant, pod: str) -> dict[str, Any]:
        rs = f"{v.deployment}-{v.template_hash}"
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": v.namespace,
                "labels": {"app": v.deployment, "pod-template-hash": v.template_hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": rs,
                                     "controller": True}],
            },
            "spec": {"containers": [{"name": "vllm", "image": "wva-emulator"}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }

    async def _add_pod(self, v: Variant, slot: int) -> None:
        pod = f"{v.deployment}-{v.template_hash}-{next(self.pod_seq):06x}"
        self.emulator.add_pod(pod, v.namespace, v.model, **emulator_values(v.index, slot))
        await self.request("POST", f"/api/v1/namespaces/{v.namespace}/pods", self._pod_body(v, pod))
        v.pods.insert(slot, pod)
        self.counts["pods_created"] += 1

    async def _remove_pod(self, v: Variant, pod: str) -> int:
        slot = v.pods.index(pod)
        v.pods.remove(pod)
        self.emulator.remove_pod(v.namespace, pod)
        await self.request("DELETE", f"/api/v1/namespaces/{v.namespace}/pods/{pod}")
        self.counts["pods_deleted"] += 1
        return slot

    async def add_variant(self) -> Variant:
        v = Variant(self.next_index)
        self.next_index += 1
        labels = {"app": v.deployment}
        replicas = self.pods_per_va
        await self.request("POST", f"/apis/apps/v1/namespaces/{v.namespace}/deployments", {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": v.deployment, "namespace": v.namespace, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "vllm", "image": "wva-emulator"}]}}},
            "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas},
        })
        for slot in range(replicas):
            await self._add_pod(v, slot)
        await self.request("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{v.namespace}/{PLURAL}", {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": v.name, "namespace": v.namespace},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": v.deployment},
                "modelID": v.model,
                "variantCost": "10.0",
                "modelProfile": {"accelerators": [{"acc": "L4", "accCount": 1, "maxBatchSize": 256}]},
            },
        })
        self.live[v.index] = v
        self.counts["vas_created"] += 1
        return v

    async def remove_variant(self, v: Variant) -> None:
        self.live.pop(v.index, None)
        await self.request("DELETE", f"/apis/{GROUP}/{VERSION}/namespaces/{v.namespace}/{PLURAL}/{v.name}")
        for pod in list(v.pods):
            await self._remove_pod(v, pod)
        await self.request("DELETE", f"/apis/apps/v1/namespaces/{v.namespace}/deployments/{v.deployment}")
        self.counts["vas_deleted"] += 1

    async def restart_pod(self) -> None:
        """A pod of a random live variant goes, and its replacement comes under a new name."""
        if not self.live:
            return
        v = self.live[self.random.choice(list(self.live))]
        slot = await self._remove_pod(v, self.random.choice(v.pods))
        await self._add_pod(v, slot)
        self.counts["pod_restarts"] += 1

    # --- bulk and churn --------------------------------------------------------------------------
    async def populate(self, n: int, concurrency: int = 16) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                await self.add_variant()

        await asyncio.gather(*(one() for _ in range(n)))

    async def churn_step(self, vas: float, pods: float) -> None:
        """Replace ``vas`` variants (oldest first) and restart ``pods`` pods; fractions carry over."""
        self._debt["vas"] += vas
        self._debt["pods"] += pods
        while self._debt["vas"] >= 1.0:
            self._debt["vas"] -= 1.0
            oldest = next(iter(self.live.values()), None)
            if oldest is not None:
                await self.remove_variant(oldest)
            await self.add_variant()
        while self._debt["pods"] >= 1.0:
            self._debt["pods"] -= 1.0
            await self.restart_pod()

    async def status_coverage(self) -> dict[str, int]:
        """How many live VAs carry a decision in their status (one list of every VA)."""
        async with self.session.get(f"{self.api_url}/apis/{GROUP}/{VERSION}/{PLURAL}") as resp:
            items = (await resp.json(content_type=None)).get("items", [])
        decided = sum(1 for item in items
                      if ((item.get("status") or {}).get("desiredOptimizedAlloc") or {}).get("numReplicas") is not None)
        return {"vas_listed": len(items), "vas_with_decision": decided}


async def compact(api: Any) -> None:
    """Bound the embedded API's memory: it is a test double that keeps every version of every object."""
    async with api._lock:
        for key in list(api.objects.keys()):
            obj = api.objects[key]
            if obj.deleted:
                del api.objects[key]
            elif len(obj.history) > 1:
                del obj.history[:-1]


async def scrape_operator(state: dict[str, Any], session: Any, stop: asyncio.Event) -> None:
    """Read the operator's /metrics and /readyz like Prometheus and the kubelet (once ports are known)."""
    while not stop.is_set():
        ports = state.get("operator_ports")
        if ports:
            metrics_port, probe_port = ports
            for key, url in (("metrics", f"http://127.0.0.1:{metrics_port}/metrics"),
                             ("readyz", f"http://127.0.0.1:{probe_port}/readyz")):
                try:
                    async with session.get(url) as resp:
                        body = await resp.read()
                        state["scrapes"][f"{key}_{resp.status}"] += 1
                        if key == "metrics":
                            state["metrics_bytes"] = len(body)
                except Exception:
                    state["scrapes"][f"{key}_failed"] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SCRAPE_EVERY)


async def _serve(conn: Connection, pods_per_va: int, seed: int) -> None:
    import aiohttp
    import kmock

    from wva.sim.local_api import LocalKubernetesAPI
    from wva.sim.vllm import VLLMEmulator

    class LeanAPI(LocalKubernetesAPI):
        """Keeps only the requests in flight in kmock's request log.

        kmock records every request for a test's assertions, and matches each new request against its
        reactions by scanning that whole log: after a few thousand requests every request costs tens
        to hundreds of milliseconds. A request is matched right after it is logged, so the log never
        needs more than the requests still being served.
        """

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            self._in_flight: set[int] = set()

        async def _handle(self, request: Any) -> Any:
            self._in_flight.add(id(request))
            self._requests[:] = [r for r in self._requests if id(r) in self._in_flight]
            try:
                return await super()._handle(request)
            finally:
                self._in_flight.discard(id(request))

    class CachedEmulator(VLLMEmulator):
        """Values change only with churn: render the exposition once per pod set, not per scrape."""

        _text: str | None = None

        def add_pod(self, pod: str, namespace: str, model: str, **values: Any) -> Any:
            self._text = None
            return super().add_pod(pod, namespace, model, **values)

        def remove_pod(self, namespace: str, pod: str) -> None:
            self._text = None
            super().remove_pod(namespace, pod)

        def render_all(self) -> str:
            text = self._text
            if text is None:
                text = self._text = super().render_all()
            return text

    loop = asyncio.get_running_loop()
    emulator = CachedEmulator()
    await emulator.start()
    stop = asyncio.Event()
    state: dict[str, Any] = {"scrapes": collections.Counter(), "metrics_bytes": 0, "compactions": 0}
    churn: dict[str, Any] = {"running": False, "vas_per_step": 0.0, "pods_per_step": 0.0, "step": 5.0,
                             "errors": 0, "last_error": None}
    async with LeanAPI() as api, kmock.Server(api):
        api.declare_resources()
        cluster = Cluster(api.base_url, emulator, pods_per_va, seed)
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

        async def churn_loop() -> None:
            while not stop.is_set():
                started = time.monotonic()
                if churn["running"]:
                    try:
                        await cluster.churn_step(churn["vas_per_step"], churn["pods_per_step"])
                    except Exception as exc:  # keep churning; the parent sees the count and the last one
                        churn["errors"] += 1
                        churn["last_error"] = repr(exc)[:300]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, churn["step"] - (time.monotonic() - started)))

        async def compact_loop() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), COMPACT_EVERY)
                await compact(api)
                state["compactions"] += 1

        background = [asyncio.create_task(churn_loop()), asyncio.create_task(compact_loop()),
                      asyncio.create_task(scrape_operator(state, session, stop))]
        conn.send({"api_url": api.base_url, "emulator_port": emulator.port})
        try:
            while True:
                command, argument = await loop.run_in_executor(None, conn.recv)
                reply: Any = None
                if command == "populate":
                    t0 = time.monotonic()
                    await cluster.populate(int(argument))
                    reply = {"seconds": time.monotonic() - t0}
                elif command == "churn":
                    churn.update(argument)
                    reply = dict(churn)
                elif command == "operator":
                    state["operator_ports"] = tuple(argument)
                elif command == "stats":
                    reply = {
                        "live_vas": len(cluster.live),
                        "live_pods": sum(len(v.pods) for v in cluster.live.values()),
                        "emulated_pods": len(emulator.pods()),
                        "counts": dict(cluster.counts),
                        "churn_errors": churn["errors"],
                        "churn_last_error": churn["last_error"],
                        "operator_scrapes": dict(state["scrapes"]),
                        "operator_metrics_bytes": state["metrics_bytes"],
                        "compactions": state["compactions"],
                    }
                    if argument == "coverage":
                        reply.update(await cluster.status_coverage())
                elif command == "stop":
                    conn.send("stopped")
                    break
                conn.send(reply)
        finally:
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            await session.close()
            await cluster.close()
            await emulator.stop()


def _main(conn: Connection, pods_per_va: int, seed: int) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(conn, pods_per_va, seed))


class ClusterProcess:
    """The child process; every method blocks until the child answered (call them from a thread)."""

    def __init__(self, pods_per_va: int, seed: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_main, args=(child, pods_per_va, seed), name="wva-soak-cluster", daemon=True)
        self.api_url = ""
        self.emulator_port = 0

    def start(self, timeout: float = 60.0) -> None:
        self._proc.start()
        if not self._conn.poll(timeout):
            raise TimeoutError("the soak cluster process did not start")
        hello = self._conn.recv()
        self.api_url, self.emulator_port = hello["api_url"], int(hello["emulator_port"])

    def call(self, command: str, argument: Any = None, timeout: float = 600.0) -> Any:
        if not self._proc.is_alive():
            raise RuntimeError(f"the soak cluster process exited ({self._proc.exitcode})")
        self._conn.send((command, argument))
        if not self._conn.poll(timeout):
            raise TimeoutError(f"the soak cluster process did not answer {command!r} within {timeout:.0f}s")
        return self._conn.recv()

    def stop(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError, TimeoutError, RuntimeError):
                self.call("stop", timeout=30)
            self._proc.join(15)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
        self._conn.close()
