"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Every component is the upstream binary (built by ``cpbuild.py``), started as a child process on
random 127.0.0.1 ports with certificates made for this run. The apiserver authorizes with
``Node,RBAC`` and signs service-account tokens, so what a test sees is what a server decides.

``ControlPlane.start()`` starts them in order and waits for each one's readiness with a deadline;
a component that does not come up fails the start with its own log tail. ``stop()`` ends every
process it started (by PID, then by process group), so nothing outlives the session.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pki import CertificateAuthority, KeyPair, service_account_key
from wva.sim.prometheus import free_port

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ComponentError(RuntimeError):
    """A component did not start or died; the message ends with its log tail."""


@dataclass
class Component:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() can end stragglers too
                env={**os.environ, **self.env},
            )
        finally:
            log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it forked and left behind

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, why: str) -> ComponentError:
        return ComponentError(f"{self.name} {why}; last lines of {self.log_path}:\n{self.tail()}")


def poll(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
    component: Component | None = None,
) -> None:
    """Wait until ``check()`` is true; raise with the component's log tail when it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if component is not None and component.process is not None and component.process.poll() is not None:
            raise component.fail(f"exited with {component.process.returncode} while waiting for {what}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    if component is not None:
        raise component.fail(f"not ready within {timeout:.0f}s ({what})")
    raise TimeoutError(f"{what} not reached within {timeout:.0f}s")


def write_kubeconfig(path: Path, server: str, ca: Path, *, user: str, pair: KeyPair | None = None,
                     token: str | None = None, namespace: str = "default") -> Path:
    credentials: dict[str, Any] = {}
    if pair is not None:
        credentials = {"client-certificate": str(pair.cert), "client-key": str(pair.key)}
    if token is not None:
        credentials = {"token": token}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "wva-test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "wva-test", "context": {"cluster": "wva-test", "user": user, "namespace": namespace}}],
        "current-context": "wva-test",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class ControlPlane:
    def __init__(self, binaries: Path, workdir: Path | None = None) -> None:
        self.binaries = binaries
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="wva-controlplane-"))
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.apiserver_port = free_port()
        self.controller_manager_port = free_port()
        self.scheduler_port = free_port()
        self.pki_dir = self.workdir / "pki"
        self.ca: CertificateAuthority | None = None
        self.components: dict[str, Component] = {}
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"

    # --- addresses and credentials ---------------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def ca_path(self) -> Path:
        assert self.ca is not None
        return self.ca.cert_path

    def client_pair(self, stem: str, user: str, groups: tuple[str, ...] = ()) -> KeyPair:
        assert self.ca is not None
        return self.ca.issue(stem, user, groups)

    def kubeconfig(self, stem: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig authenticating as ``user`` (x509 CN) in ``groups`` (x509 O)."""
        pair = self.client_pair(stem, user, groups)
        return write_kubeconfig(self.workdir / f"{stem}.kubeconfig", self.server, self.ca_path, user=user, pair=pair)

    def token_kubeconfig(self, stem: str, token: str, namespace: str = "default") -> Path:
        return write_kubeconfig(
            self.workdir / f"{stem}.kubeconfig", self.server, self.ca_path, user=stem, token=token, namespace=namespace
        )

    def ssl_context(self, pair: KeyPair | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        if pair is not None:
            context.load_cert_chain(str(pair.cert), str(pair.key))
        return context

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority(self.pki_dir)
        self._serving = self.ca.issue(
            "apiserver",
            "kube-apiserver",
            server_ips=("127.0.0.1",),
            server_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        )
        self._sa_key, self._sa_pub = service_account_key(self.pki_dir)
        self._admin = self.client_pair("admin", "wva-test-admin", ("system:masters",))
        write_kubeconfig(self.admin_kubeconfig, self.server, self.ca_path, user="wva-test-admin", pair=self._admin)
        try:
            self._start_etcd()
            self.start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            poll(self._default_service_account_exists, 60, "the default ServiceAccount (serviceaccount controller)",
                 interval=0.2, component=self.components["kube-controller-manager"])
        except BaseException:
            self.stop()
            raise

    def _component(self, name: str, argv: list[str]) -> Component:
        component = Component(name, argv, self.workdir / f"{name}.log")
        self.components[name] = component
        component.start()
        return component

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        etcd = self._component(
            "etcd",
            [
                str(self.binaries / "etcd"),
                "--name=wva-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=wva-test={peer}",
                "--unsafe-no-fsync",  # a throwaway store: durability is not under test, speed is welcome
                "--log-level=warn",
            ],
        )
        poll(lambda: self._etcd_post("/health", None).get("health") == "true", 30, "etcd /health",
             component=etcd)

    def apiserver_argv(self, port: int | None = None) -> list[str]:
        return [
            str(self.binaries / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port or self.apiserver_port}",
            # a loopback advertise address cannot be written into the kubernetes Service's endpoints
            "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=10.96.0.0/16",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={self._serving.cert}",
            f"--tls-private-key-file={self._serving.key}",
            f"--client-ca-file={self.ca_path}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self._sa_pub}",
            f"--service-account-signing-key-file={self._sa_key}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--profiling=false",
            "--v=1",
        ]

    def start_apiserver(self, timeout: float = 90.0) -> None:
        apiserver = self._component("kube-apiserver", self.apiserver_argv())
        poll(lambda: self._get("/readyz") == "ok", timeout, "kube-apiserver /readyz", interval=0.2,
             component=apiserver)

    def stop_apiserver(self) -> None:
        component = self.components.get("kube-apiserver")
        if component is not None:
            component.stop()

    def start_side_apiserver(self) -> tuple[Component, Path]:
        """A second kube-apiserver on its own port over the same etcd, and an admin kubeconfig for it:
        changes made through it while the main one is down are what clients of the main one missed."""
        port = free_port()
        side = self._component("kube-apiserver-side", self.apiserver_argv(port))
        server = f"https://127.0.0.1:{port}"

        def ready() -> bool:
            request = urllib.request.Request(server + "/readyz")
            with urllib.request.urlopen(request, timeout=2, context=self.ssl_context(self._admin)) as resp:
                return bool(resp.read() == b"ok")

        poll(ready, 90, "side kube-apiserver /readyz", interval=0.2, component=side)
        kubeconfig = write_kubeconfig(
            self.workdir / "admin-side.kubeconfig", server, self.ca_path, user="wva-test-admin", pair=self._admin
        )
        return side, kubeconfig

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def _start_controller_manager(self) -> None:
        kcm = self._controller("kube-controller-manager", "system:kube-controller-manager",
                               self.controller_manager_port, [
            "--controllers=*",
            f"--service-account-private-key-file={self._sa_key}",
            f"--root-ca-file={self.ca_path}",
            "--use-service-account-credentials=true",  # each controller under its own bootstrap role
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
        ])
        poll(lambda: self._get_insecure(self.controller_manager_port, "/healthz") == "ok", 60,
             "kube-controller-manager /healthz", interval=0.2, component=kcm)

    def _controller(self, name: str, user: str, port: int, extra: list[str]) -> Component:
        """Start a component that talks to the apiserver with its own kubeconfig and serves health on ``port``."""
        kubeconfig = self.kubeconfig(name, user)
        return self._component(
            name,
            [
                str(self.binaries / name),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / (name + '-certs')}",
                "--leader-elect=false",
                *extra,
                "--v=1",
            ],
        )

    def _start_scheduler(self) -> None:
        scheduler = self._controller("kube-scheduler", "system:kube-scheduler", self.scheduler_port, [])
        poll(lambda: self._get_insecure(self.scheduler_port, "/healthz") == "ok", 60, "kube-scheduler /healthz",
             interval=0.2, component=scheduler)

    def stop(self) -> None:
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver-side", "kube-apiserver", "etcd"):
            component = self.components.get(name)
            if component is not None:
                component.stop()

    def pids(self) -> dict[str, int | None]:
        return {name: c.pid for name, c in self.components.items()}

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{c.tail(15)}" for name, c in self.components.items())

    # --- raw HTTP (no client library in the way) --------------------------------------------------
    def _get(self, path: str, timeout: float = 2.0) -> str:
        request = urllib.request.Request(self.server + path)
        with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context(self._admin)) as resp:
            return str(resp.read().decode())

    def _get_insecure(self, port: int, path: str) -> str:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the component's self-signed serving certificate
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", timeout=2.0, context=context) as resp:
            return str(resp.read().decode())

    def _default_service_account_exists(self) -> bool:
        body = json.loads(self._get("/api/v1/namespaces/default/serviceaccounts/default"))
        return bool(body.get("metadata", {}).get("uid"))

    def _etcd_post(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.etcd_url + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=5.0) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    # --- etcd maintenance ------------------------------------------------------------------------
    def etcd_revision(self) -> int:
        key = base64.b64encode(b"/registry/namespaces/default").decode()
        answer = self._etcd_post("/v3/kv/range", {"key": key, "count_only": True})
        return int(answer["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd's history up to now: a watch resumed from an older resourceVersion gets 410 Gone."""
        revision = self.etcd_revision()
        self._etcd_post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

