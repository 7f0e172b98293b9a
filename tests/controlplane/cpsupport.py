"""Helpers for the control-plane tests: server-side apply, workloads, tokens, a wva process, polling."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import dynamic
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

from pki import KeyPair
from wva.api.constants import GROUP, PLURAL, VERSION
from wva.sim.prometheus import free_port

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
CHART = ROOT / "charts" / "workload-variant-autoscaler"
FIELD_MANAGER = "wva-tests"
EMULATOR_PORT = 8000
# leader election in the tests: a short lease, so a handover happens within seconds
LEASE_SECONDS = 6.0
RENEW_SECONDS = LEASE_SECONDS / 3  # the elector renews (and a standby retries) every third of the duration
SLACK_SECONDS = 3.0  # request latency and polling on a busy two-core machine
T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; the last exception or value goes into the failure."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s (last: {last!r})")
        time.sleep(interval)


# --- applying objects ---------------------------------------------------------------------------
def load_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def server_side_apply(api: k8s.ApiClient, obj: dict[str, Any], namespace: str | None = None) -> Any:
    client = dynamic.DynamicClient(api)
    resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    ns = obj.get("metadata", {}).get("namespace") or (namespace if resource.namespaced else None)
    return resource.server_side_apply(body=obj, namespace=ns, field_manager=FIELD_MANAGER, force_conflicts=True)


def apply_manifests(
    api: k8s.ApiClient, paths: Iterable[Path], objects: Iterable[dict[str, Any]] = (), namespace: str | None = None
) -> list[Any]:
    """Server-side apply every object; CRDs are waited for until the server reports them Established."""
    applied = []
    for obj in [*load_documents(paths), *objects]:
        applied.append(server_side_apply(api, obj, namespace))
        if obj["kind"] == "CustomResourceDefinition":
            wait_until(lambda name=obj["metadata"]["name"]: crd_established(api, name), 30, "CRD Established")
    return applied


def crd_established(api: k8s.ApiClient, name: str) -> bool:
    conditions = k8s.ApiextensionsV1Api(api).read_custom_resource_definition(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def ensure_namespace(api: k8s.ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    core = k8s.CoreV1Api(api)
    with contextlib.suppress(ApiException):
        core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    # the serviceaccount controller makes "default", which pods need before the ReplicaSet can create them
    wait_until(lambda: core.read_namespaced_service_account("default", name), 30, f"ServiceAccount {name}/default")


def delete_namespace(api: k8s.ApiClient, name: str) -> None:
    with contextlib.suppress(ApiException):
        k8s.CoreV1Api(api).delete_namespace(name)


# --- workloads ------------------------------------------------------------------------------------
def vllm_deployment(
    name: str, namespace: str, model: str, replicas: int = 1, gpu_product: str = "NVIDIA-L4"
) -> dict[str, Any]:
    """A Deployment whose pods run the vLLM emulator (``wva emulate``) on their pod IP, one GPU each."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(EMULATOR_PORT)},
                },
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "nodeSelector": {"nvidia.com/gpu.product": gpu_product},
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "wva-vllm-emulator:test",
                            "command": ["wva", "emulate"],
                            "args": [
                                "--host", "$(POD_IP)", "--port", str(EMULATOR_PORT), "--model", model,
                                "--pod", "$(POD_NAME)", "--namespace", "$(POD_NAMESPACE)",
                            ],
                            "env": [
                                {"name": var, "valueFrom": {"fieldRef": {"fieldPath": path}}}
                                for var, path in (
                                    ("POD_IP", "status.podIP"),
                                    ("POD_NAME", "metadata.name"),
                                    ("POD_NAMESPACE", "metadata.namespace"),
                                )
                            ],
                            "ports": [{"name": "metrics", "containerPort": EMULATOR_PORT}],
                            "readinessProbe": {"httpGet": {"path": "/health", "port": EMULATOR_PORT}},
                            "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }


def variant(
    name: str,
    namespace: str,
    model: str,
    accelerator: str = "L4",
    cost: str = "10",
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    deployment: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment or name},
        "modelID": model,
        "variantCost": cost,
        "modelProfile": {"accelerators": [{"acc": accelerator, "accCount": 1, "maxBatchSize": 8}]},
    }
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    if max_replicas is not None:
        spec["maxReplicas"] = max_replicas
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VariantAutoscaling",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"inference.optimization/acceleratorName": accelerator},
        },
        "spec": spec,
    }


def gpu_free_deployment(name: str, namespace: str, model: str) -> dict[str, Any]:
    """The emulator Deployment of ``vllm_deployment`` (one replica) without the GPU request and node selector."""
    body = vllm_deployment(name, namespace, model, replicas=1)
    pod_spec = body["spec"]["template"]["spec"]
    pod_spec.pop("nodeSelector")
    pod_spec["containers"][0].pop("resources")
    return body


def deploy_variant(api: k8s.ApiClient, namespace: str, name: str, model: str, replicas: int = 1,
                   **spec: Any) -> None:
    """An emulator Deployment ``name`` and its VA of the same name (``spec``: :func:`variant`'s options)."""
    server_side_apply(api, vllm_deployment(name, namespace, model, replicas=replicas))
    create_va(api, variant(name, namespace, model, **spec))


def get_va(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return result


def create_va(api: k8s.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body
    )
    return result


def condition(va: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (va.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def desired_replicas(va: dict[str, Any]) -> int | None:
    alloc = (va.get("status") or {}).get("desiredOptimizedAlloc") or {}
    value = alloc.get("numReplicas")
    return int(value) if value is not None else None


def list_vas(api: k8s.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    items = k8s.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    return {va["metadata"]["name"]: va for va in items}


def wrong_statuses(api: k8s.ApiClient, namespace: str, expected: dict[str, int]) -> dict[str, str]:
    """VA -> what is not (yet) right about its status, for the VAs in ``expected`` (name -> desired replicas):
    TargetResolved and MetricsAvailable must be True; {} when all are right."""
    vas = list_vas(api, namespace)
    wrong = {}
    for name, want in expected.items():
        va = vas.get(name)
        if va is None:
            wrong[name] = "missing"
            continue
        got = ((condition(va, "TargetResolved") or {}).get("status"),
               (condition(va, "MetricsAvailable") or {}).get("status"), desired_replicas(va))
        if got != ("True", "True", want):
            wrong[name] = f"TargetResolved={got[0]} MetricsAvailable={got[1]} desired={got[2]}"
    return wrong


def is_ready(pod: Any) -> bool:
    """Ready and not being deleted."""
    return pod.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])
    )


def ready_pods(api: k8s.ApiClient, namespace: str, app: str) -> list[Any]:
    pods = k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if is_ready(p)]


def wait_ready_pods(api: k8s.ApiClient, namespace: str, app: str, count: int, timeout: float, what: str) -> list[Any]:
    """Wait until exactly ``count`` pods of ``app`` are ready; those pods."""
    return wait_until(lambda: (pods := ready_pods(api, namespace, app)) and len(pods) == count and pods, timeout, what)


def ready_pod_ips(api: k8s.ApiClient, namespace: str) -> dict[str, str]:
    """app label -> pod IP of every ready pod of the namespace that has an IP."""
    pods = k8s.CoreV1Api(api).list_namespaced_pod(namespace).items
    return {p.metadata.labels["app"]: p.status.pod_ip for p in pods if is_ready(p) and p.status.pod_ip}


def pods_left(nodes: Any, namespace: str) -> int:
    """How many pod processes of the namespace the node agents still run."""
    return len([p for p in nodes.running_pods() if p.namespace == namespace])


def samples(metrics: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called ``name`` in a Prometheus text exposition, as (labels, value)."""
    return [
        (dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name
    ]


def engine_cycles(metrics: str) -> float:
    """``wva_engine_cycles_total`` summed over outcomes."""
    return sum(value for _, value in samples(metrics, "wva_engine_cycles_total"))


def desired_gauges(metrics: str, namespace: str) -> dict[str, float]:
    """``wva_desired_replicas`` of the namespace's variants, by variant name."""
    return {
        labels["variant_name"]: value
        for labels, value in samples(metrics, "wva_desired_replicas")
        if labels.get("namespace") == namespace
    }


def set_load(pod_ip: str, **values: float) -> None:
    """Set an emulated pod's serving metrics through its own control endpoint."""
    request = urllib.request.Request(
        f"http://{pod_ip}:{EMULATOR_PORT}/control", data=json.dumps(values).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200


def set_load_on_ready_pods(api: k8s.ApiClient, namespace: str, app: str, **values: float) -> int:
    """Set the values on every ready pod of ``app``; returns how many pods got them."""
    count = 0
    for pod in ready_pods(api, namespace, app):
        with contextlib.suppress(OSError):
            set_load(pod.status.pod_ip, **values)
            count += 1
    return count


# --- identities -----------------------------------------------------------------------------------
def service_account_token(api: k8s.ApiClient, namespace: str, name: str, seconds: int = 3600) -> str:
    """A bound token for the ServiceAccount from the TokenRequest API."""
    request = {"spec": {"audiences": [], "expirationSeconds": seconds}}
    answer = k8s.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
    token: str = answer.status.token
    return token


def as_wva_client(plane: Any, api: k8s.ApiClient, release: Any, stem: str) -> k8s.ApiClient:
    """An ``ApiClient`` authenticated as the chart's ServiceAccount (a TokenRequest token): its RBAC decides."""
    token = service_account_token(api, release.namespace, release.service_account, seconds=600)
    return k8s_config.new_client_from_config(str(plane.token_kubeconfig(stem, token, namespace=release.namespace)))


def cp_prometheus_config(plane: Any, pair: KeyPair) -> str:
    """A scrape job that finds the emulated pods through Prometheus' own Kubernetes pod discovery."""
    job = {
        "job_name": "kubernetes-pods",
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "kubernetes_sd_configs": [
            {
                "role": "pod",
                "api_server": plane.server,
                "tls_config": {"ca_file": str(plane.ca_path), "cert_file": str(pair.cert), "key_file": str(pair.key)},
            }
        ],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "regex": "true",
             "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_ip"], "regex": ".+", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_ip", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
             "separator": ":", "regex": "(.+)", "target_label": "__address__", "replacement": "$1"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }
    text = yaml.safe_dump([job], sort_keys=False)
    return "".join(f"  {line}\n" for line in text.splitlines())


# --- wva as a process -----------------------------------------------------------------------------
class WvaProcess:
    """``wva run`` as a child process with its own kubeconfig and environment.

    Its metrics port is HTTPS with bearer-token auth unless ``WVA_METRICS_SECURE=false`` is in ``env``;
    :meth:`metrics` then reads it with ``metrics_token`` (the self-signed certificate is not verified)."""

    def __init__(self, kubeconfig: Path, log_path: Path, metrics_token: str | None = None, **env: str) -> None:
        self.metrics_port = free_port()
        self.probe_port = free_port()
        self.log_path = log_path
        self.metrics_token = metrics_token
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("WVA_", "PROMETHEUS_", "KUBE"))},
            "KUBECONFIG": str(kubeconfig),
            "LOG_LEVEL": "info",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> WvaProcess:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wva.cli", "run", "--metrics-port", str(self.metrics_port),
                 "--probe-port", str(self.probe_port), *args],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        return self

    def http(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    @property
    def secure(self) -> bool:
        return self.env.get("WVA_METRICS_SECURE", "true").strip().lower() not in ("false", "0", "no", "off")

    def get_metrics_port(self, path: str, token: str | None = None, timeout: float = 5) -> tuple[int, str]:
        """GET ``path`` on the metrics port (HTTPS with ``token``, else the process' own, when secure);
        (0, "") when nothing answers."""
        if not self.secure:
            return self.http(self.metrics_port, path)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed
        token = token or self.metrics_token
        request = urllib.request.Request(f"https://127.0.0.1:{self.metrics_port}{path}",
                                         headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metrics(self) -> str:
        """The exposition; "" while the process does not answer (or, secure, cannot reach the API server to
        check the token: 503). A refused token is the test's own mistake and fails at once."""
        status, body = self.get_metrics_port("/metrics")
        assert status not in (401, 403), f"/metrics refused the test's token: {status} {body.strip()}"
        return body if status == 200 else ""

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, f"wva exited:\n{self.tail()}"
            return self.http(self.probe_port, "/readyz")[0] == 200

        wait_until(ready, timeout, "wva /readyz")

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        proc, self.process = self.process, None
        if proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            return None

    def kill(self) -> None:
        self.stop(signal.SIGKILL, timeout=10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


# --- the chart, installed for real ----------------------------------------------------------------
def helm(plane: Any, home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real helm binary against the test cluster, with its caches under ``home``."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(plane.admin_kubeconfig),
    }
    return subprocess.run(
        [str(plane.binaries / "helm"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def container_environment(api: k8s.ApiClient, deployment: Any, pod_name: str) -> dict[str, str]:
    """The environment the chart gives its container, resolved as kubelet would (values, ConfigMap keys,
    downward-API fields), so a local ``wva run`` gets exactly the chart's configuration."""
    namespace = deployment.metadata.namespace
    env: dict[str, str] = {}
    for var in deployment.spec.template.spec.containers[0].env or []:
        source = var.value_from
        if source is None:  # a plain value; the server drops an empty one
            env[var.name] = var.value or ""
        elif source.field_ref is not None:
            env[var.name] = {"metadata.namespace": namespace, "metadata.name": pod_name}[source.field_ref.field_path]
        elif source.config_map_key_ref is not None:
            ref = source.config_map_key_ref
            data = k8s.CoreV1Api(api).read_namespaced_config_map(ref.name, namespace).data or {}
            env[var.name] = data[ref.key]
    return env


def chart_wva(plane: Any, api: k8s.ApiClient, release: Any, log_dir: Path, name: str, **overrides: str) -> WvaProcess:
    """A ``wva run`` process configured like the chart's pod and authenticated as the chart's
    ServiceAccount with a token from the TokenRequest API."""
    token = service_account_token(api, release.namespace, release.service_account)
    kubeconfig = plane.token_kubeconfig(f"wva-{name}", token, namespace=release.namespace)
    env = container_environment(api, release.deployment, name)
    env.update(overrides)
    process = WvaProcess(kubeconfig, log_dir / f"{name}.log", **env)
    if process.secure:  # read its metrics as Prometheus would: the token of the account bound to the reader role
        process.metrics_token = service_account_token(api, *release.scraper)
    return process


def election_env(lease: str) -> dict[str, str]:
    """The env of processes that compete for ``lease`` (``LEASE_SECONDS``), on collector v2."""
    return {
        "LEADER_ELECTION": "true",
        "LEADER_ELECTION_LEASE_NAME": lease,
        "LEADER_ELECTION_LEASE_DURATION": f"{LEASE_SECONDS:g}s",
        "COLLECTOR_V2": "true",
    }


def assert_clean_log(process: WvaProcess, covers: str = "everything wva does", name: str = "") -> None:
    """No Traceback in the process' log, and no 403 or Forbidden: the chart's RBAC covers ``covers``."""
    log, who = process.log_text(), f"{name}: " if name else ""
    assert "Traceback" not in log, f"{who}\n{log[-4000:]}"
    assert " 403" not in log and "Forbidden" not in log, f"{who}the chart's RBAC covers {covers}"


class LoadDriver:
    """Keeps every ready pod of an app at the given serving values (new pods get them as they become ready)."""

    def __init__(self, api: k8s.ApiClient, namespace: str, app: str) -> None:
        import threading

        self.api, self.namespace, self.app = api, namespace, app
        self.values: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"load-{app}")

    def set(self, **values: float) -> None:
        self.values = dict(values)
        set_load_on_ready_pods(self.api, self.namespace, self.app, **self.values)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if self.values:
                with contextlib.suppress(Exception):
                    set_load_on_ready_pods(self.api, self.namespace, self.app, **self.values)

    def __enter__(self) -> LoadDriver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
