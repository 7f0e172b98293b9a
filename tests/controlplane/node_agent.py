"""A node agent standing in for kubelet: real Node objects, and each bound pod run as a local process.

Each node authenticates as ``system:node:<name>`` (group ``system:nodes``), so the apiserver's Node
authorizer and NodeRestriction admission confine it to its own Node, Lease and pods, as they do a
kubelet. Per node it:

- registers the Node with CPU, memory and ``nvidia.com/gpu`` capacity and renews its Lease in
  ``kube-node-lease`` and its Ready condition, so the node-lifecycle controller keeps it Ready;
- watches the pods the scheduler bound to it (``spec.nodeName``) and, for each, runs the pod's
  first container as a process: ``command``/``args`` with ``$(VAR)`` expanded from its ``env`` and
  the downward-API fields ``metadata.name``, ``metadata.namespace`` and ``status.podIP``. The pod
  gets its own loopback address (127.0.0.0/8 is all loopback), reported as ``status.podIP``;
- reports Running at once and Ready when the container's ``readinessProbe`` (httpGet) answers 200;
- on deletion stops the process and removes the pod (grace period 0), as kubelet does at the end.

Only the ``wva`` command is run (as this Python's ``python -m wva.cli``): the agent runs no images.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("node-agent")

_ip_counter = itertools.count(1)
_ip_lock = threading.Lock()
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


# Each test session (process) takes its own /16 of the loopback range, so two sessions on one machine
# never hand out the same pod address.
_IP_BLOCK = 100 + os.getpid() % 150


def next_pod_ip() -> str:
    """A loopback address no other pod of this process has had (127.<block>.0.1, 127.<block>.0.2, ...)."""
    with _ip_lock:
        n = next(_ip_counter)
    return f"127.{_IP_BLOCK}.{n // 250}.{n % 250 + 1}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand(text: str, env: dict[str, str]) -> str:
    """kubelet's ``$(VAR)`` expansion: known variables are replaced, unknown ones kept, ``$$`` is ``$``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(sub, text)


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    ip: str
    process: subprocess.Popen[bytes]
    ready: bool = False
    stopping: bool = False


@dataclass
class NodeSpec:
    name: str
    gpus: int = 8
    gpu_product: str = "NVIDIA-L4"
    cpu: str = "64"
    memory: str = "256Gi"
    labels: dict[str, str] = field(default_factory=dict)


class NodeAgent:
    """One node's agent: start() registers and begins heartbeats and the pod watch; stop() ends it all."""

    def __init__(self, spec: NodeSpec, kubeconfig: Path, workdir: Path, heartbeat: float = 5.0) -> None:
        self.spec = spec
        self.workdir = workdir
        self.heartbeat = heartbeat
        self.api_client = k8s_config.new_client_from_config(str(kubeconfig))
        self.core = k8s.CoreV1Api(self.api_client)
        self.coordination = k8s.CoordinationV1Api(self.api_client)
        self.pods: dict[str, RunningPod] = {}  # by uid
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch: k8s_watch.Watch | None = None
        self.started_pods = 0
        self.errors: list[str] = []

    # --- node registration and heartbeats --------------------------------------------------------
    def _node_status(self) -> dict[str, Any]:
        capacity = {"cpu": self.spec.cpu, "memory": self.spec.memory, "pods": "110",
                    "nvidia.com/gpu": str(self.spec.gpus), "ephemeral-storage": "500Gi"}
        now = _now()
        conditions = [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "node agent posts ready status",
             "lastHeartbeatTime": now, "lastTransitionTime": self._ready_since},
        ]
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            conditions.append({"type": kind, "status": "False", "reason": f"KubeletHasNo{kind}",
                               "lastHeartbeatTime": now, "lastTransitionTime": self._ready_since})
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.spec.name},
            ],
            "nodeInfo": {
                "machineID": self.spec.name, "systemUUID": self.spec.name, "bootID": self.spec.name,
                "kernelVersion": "", "osImage": "wva test node agent", "containerRuntimeVersion": "process://",
                "kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        self._ready_since = _now()
        labels = {
            "kubernetes.io/hostname": self.spec.name,
            "kubernetes.io/os": "linux",
            "nvidia.com/gpu.product": self.spec.gpu_product,
            **self.spec.labels,
        }
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.spec.name, "labels": labels}}
        with contextlib.suppress(ApiException):
            self.core.create_node(body)
        self.core.patch_node_status(self.spec.name, {"status": self._node_status()})
        self._renew_lease()

    def _renew_lease(self) -> None:
        spec = {"holderIdentity": self.spec.name, "leaseDurationSeconds": 40, "renewTime": _micro_now()}
        try:
            self.coordination.patch_namespaced_lease(self.spec.name, "kube-node-lease", {"spec": spec})
        except ApiException as exc:
            if exc.status != 404:
                raise
            node = self.core.read_node(self.spec.name)
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.spec.name, "uid": node.metadata.uid}
            self.coordination.create_namespaced_lease(
                "kube-node-lease",
                {"metadata": {"name": self.spec.name, "ownerReferences": [owner]}, "spec": spec},
            )

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self._renew_lease()
                self.core.patch_node_status(self.spec.name, {"status": self._node_status()})
            except Exception as exc:  # the apiserver may be restarting: keep beating
                log.debug("heartbeat of %s failed: %s", self.spec.name, exc)

    # --- pods ------------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        selector = f"spec.nodeName={self.spec.name}"
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                    resource_version = listing.metadata.resource_version
                    seen = set()
                    for pod in listing.items:
                        seen.add(pod.metadata.uid)
                        self._sync(pod)
                    with self._lock:
                        gone = [uid for uid in self.pods if uid not in seen]
                    for uid in gone:
                        self._stop_pod(uid)
                self._watch = k8s_watch.Watch()
                for event in self._watch.stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=resource_version,
                    timeout_seconds=30,
                    allow_watch_bookmarks=True,
                ):
                    if self._stop.is_set():
                        break
                    kind, pod = event["type"], event["object"]
                    resource_version = pod.metadata.resource_version
                    if kind == "DELETED":
                        self._stop_pod(pod.metadata.uid)
                    elif kind in ("ADDED", "MODIFIED"):
                        self._sync(pod)
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = None  # relist
                    continue
                if not self._stop.is_set():
                    self._note(f"watch of {self.spec.name}: {exc.status} {exc.reason}")
                    self._stop.wait(0.5)
            except Exception as exc:
                if not self._stop.is_set():
                    log.debug("watch of %s broke: %s", self.spec.name, exc)
                    resource_version = None
                    self._stop.wait(0.5)

    def _note(self, message: str) -> None:
        log.warning("%s", message)
        self.errors.append(message)

    def _sync(self, pod: Any) -> None:
        uid = pod.metadata.uid
        if pod.metadata.deletion_timestamp is not None:
            self._stop_pod(uid, delete=pod)
            return
        with self._lock:
            known = uid in self.pods
        if not known and pod.status.phase not in ("Succeeded", "Failed"):
            self._start_pod(pod)

    def _start_pod(self, pod: Any) -> None:
        container = pod.spec.containers[0]
        command = list(container.command or [])
        if not command or Path(command[0]).name != "wva":
            self._fail_pod(pod, f"the node agent runs only the wva command, not {command[:1]!r}")
            return
        ip = next_pod_ip()
        env: dict[str, str] = {}
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = expand(var.value, env)
            elif var.value_from is not None and var.value_from.field_ref is not None:
                env[var.name] = {
                    "metadata.name": pod.metadata.name,
                    "metadata.namespace": pod.metadata.namespace,
                    "status.podIP": ip,
                    "spec.nodeName": self.spec.name,
                }.get(var.value_from.field_ref.field_path, "")
        argv = [sys.executable, "-m", "wva.cli", *[expand(a, env) for a in command[1:]]]
        argv += [expand(a, env) for a in container.args or []]
        logs = self.workdir / "pods"
        logs.mkdir(parents=True, exist_ok=True)
        out = (logs / f"{pod.metadata.namespace}_{pod.metadata.name}.log").open("ab")
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin", "LOG_LEVEL": "warning", **env}, start_new_session=True,
            )
        finally:
            out.close()
        running = RunningPod(pod.metadata.namespace, pod.metadata.name, pod.metadata.uid, ip, process)
        with self._lock:
            self.pods[pod.metadata.uid] = running
            self.started_pods += 1
        self._report(running, ready=False)
        probe = container.readiness_probe
        thread = threading.Thread(target=self._probe_loop, args=(running, probe), daemon=True,
                                  name=f"probe-{pod.metadata.name}")
        thread.start()

    def _probe_loop(self, running: RunningPod, probe: Any) -> None:
        path, port = "/", None
        if probe is not None and probe.http_get is not None:
            path = probe.http_get.path or "/"
            port = probe.http_get.port
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and not running.stopping and time.monotonic() < deadline:
            if running.process.poll() is not None:
                self._note(f"pod {running.namespace}/{running.name} exited with {running.process.returncode}")
                return
            if port is None:
                ok = True
            else:
                try:
                    with urllib.request.urlopen(f"http://{running.ip}:{port}{path}", timeout=1.0) as resp:
                        ok = resp.status == 200
                except OSError:
                    ok = False
            if ok:
                running.ready = True
                self._report(running, ready=True)
                return
            time.sleep(0.1)

    def _status(self, running: RunningPod, ready: bool) -> dict[str, Any]:
        now = _now()
        flag = "True" if ready else "False"
        return {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": running.ip,
            "podIPs": [{"ip": running.ip}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                {"type": "Ready", "status": flag, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {"name": "main", "ready": ready, "started": True, "restartCount": 0, "image": "wva", "imageID": "",
                 "state": {"running": {"startedAt": now}}}
            ],
        }

    def _report(self, running: RunningPod, ready: bool) -> None:
        for attempt in range(20):
            try:
                pod = self.core.read_namespaced_pod(running.name, running.namespace)
                if pod.metadata.uid != running.uid:
                    return
                status = self._status(running, ready)
                status["containerStatuses"][0]["name"] = pod.spec.containers[0].name
                self.core.patch_namespaced_pod_status(running.name, running.namespace, {"status": status})
                return
            except ApiException as exc:
                if exc.status == 404:
                    return
                if attempt == 19:
                    self._note(f"status of {running.namespace}/{running.name}: {exc.status} {exc.reason}")
            except Exception as exc:
                if attempt == 19:
                    self._note(f"status of {running.namespace}/{running.name}: {exc}")
            if self._stop.wait(0.5):
                return

    def _fail_pod(self, pod: Any, message: str) -> None:
        self._note(f"pod {pod.metadata.namespace}/{pod.metadata.name}: {message}")
        status = {"phase": "Failed", "reason": "UnsupportedCommand", "message": message}
        with contextlib.suppress(ApiException):
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})

    def _stop_pod(self, uid: str, delete: Any = None) -> None:
        with self._lock:
            running = self.pods.pop(uid, None)
        if running is not None:
            running.stopping = True
            _end(running.process)
        if delete is not None:
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_pod(
                    delete.metadata.name, delete.metadata.namespace,
                    body=k8s.V1DeleteOptions(grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=uid)),
                )

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.register()
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._watch_loop, "pods")):
            thread = threading.Thread(target=target, daemon=True, name=f"{name}-{self.spec.name}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        with self._lock:
            running, self.pods = list(self.pods.values()), {}
        for pod in running:
            _end(pod.process)
        for thread in self._threads:
            thread.join(timeout=35)
        self.api_client.close()

    def pod_ip(self, namespace: str, name: str) -> str | None:
        with self._lock:
            for pod in self.pods.values():
                if (pod.namespace, pod.name) == (namespace, name):
                    return pod.ip
        return None


def _end(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class NodePool:
    """Several node agents with the credentials the control plane issues for each."""

    def __init__(self, control_plane: Any, specs: list[NodeSpec]) -> None:
        self.agents = [
            NodeAgent(
                spec,
                control_plane.kubeconfig(f"node-{spec.name}", f"system:node:{spec.name}", ("system:nodes",)),
                control_plane.workdir,
            )
            for spec in specs
        ]

    def start(self) -> None:
        for agent in self.agents:
            agent.start()

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()

    def running_pods(self) -> list[RunningPod]:
        out: list[RunningPod] = []
        for agent in self.agents:
            with agent._lock:
                out.extend(agent.pods.values())
        return out

    def errors(self) -> list[str]:
        return [e for agent in self.agents for e in agent.errors]
