"""wva's secure metrics port, decided by the real apiserver: ``wva run`` under the chart's identity
serves HTTPS, sends every bearer token to a real TokenReview and a real SubjectAccessReview, and
answers as those decide.

- no token, a forged or garbled token, the token of a deleted ServiceAccount → 401;
- a ServiceAccount without the chart's metrics-reader role → 403, path by path (a role granting only
  ``/metrics``, or ``/debug/decisions`` without the ``/debug/decisions/*`` wildcard, is honoured as RBAC
  wrote it);
- the account the chart binds the role to → 200 and a Prometheus exposition; ``/debug/decisions`` likewise;
- a token that worked stops working once its ServiceAccount is deleted or the Secret it is bound to is
  gone, within the filter's 10-second cache;
- ``wva explain --operator https://... --token-file`` reads the records the same way;
- the real Prometheus scrapes wva over HTTPS as the chart's ServiceMonitor does (``authorization``
  ``credentials_file`` with the bound account's token), verifying a certificate issued by a test CA, and
  ``up`` is 1 with the ``wva_`` series stored; a scrape with an unbound account's token is ``up`` 0;
- the certificate files are replaced while wva runs: new connections get the new certificate and
  Prometheus keeps scraping.

The self-signed default is what every other control-plane test reads its wva processes through
(cpsupport.WvaProcess.metrics).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from cluster import ControlPlane
from conftest import Release
from cpsupport import (
    WvaProcess,
    chart_wva,
    delete_namespace,
    ensure_namespace,
    samples,
    server_side_apply,
    service_account_token,
    wait_until,
)
from pki import CertificateAuthority
from wva.cli import main
from wva.sim.prometheus import LocalPrometheus

NAMESPACE = "cp-metrics-auth"
SERVER_NAME = "wva-metrics.cp-metrics-auth.svc"  # the name the serving certificate is issued for
PATHS = ("/metrics", "/debug/decisions", "/debug/decisions/llm/llama-8b")
RBAC_API = "rbac.authorization.k8s.io/v1"


@dataclass
class Accounts:
    """ServiceAccounts in NAMESPACE and what they are bound to; ``token(name)`` mints a fresh token."""

    api: k8s.ApiClient
    reader_role: str

    def token(self, account: str, bound: dict[str, str] | None = None) -> str:
        """A TokenRequest token of ``account``, bound to the object ``bound`` names when given."""
        spec: dict[str, Any] = {"audiences": [], "expirationSeconds": 3600}
        if bound:
            spec["boundObjectRef"] = bound
        answer = k8s.CoreV1Api(self.api).create_namespaced_service_account_token(account, NAMESPACE, {"spec": spec})
        return str(answer.status.token)

    @staticmethod
    def user(name: str) -> str:
        return f"system:serviceaccount:{NAMESPACE}:{name}"


def _cluster_role(name: str, urls: list[str]) -> dict[str, Any]:
    return {"apiVersion": RBAC_API, "kind": "ClusterRole", "metadata": {"name": name},
            "rules": [{"nonResourceURLs": urls, "verbs": ["get"]}]}


def _binding(name: str, role: str, account: str) -> dict[str, Any]:
    return {"apiVersion": RBAC_API, "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]}


@pytest.fixture(scope="module")
def accounts(api: k8s.ApiClient, wva_release: Release) -> Iterator[Accounts]:
    """nobody (no role), metrics-only and no-wildcard (roles of their own), and reader, doomed, bound (the
    chart's metrics-reader ClusterRole, through bindings of this test)."""
    ensure_namespace(api, NAMESPACE)
    core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
    names = ("nobody", "metrics-only", "no-wildcard", "reader", "doomed", "bound")
    for name in names:
        core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": name}})
    objects = [
        _cluster_role("wva-test-metrics-only", ["/metrics"]),
        _binding("wva-test-metrics-only", "wva-test-metrics-only", "metrics-only"),
        _cluster_role("wva-test-no-wildcard", ["/metrics", "/debug/decisions"]),
        _binding("wva-test-no-wildcard", "wva-test-no-wildcard", "no-wildcard"),
        *(_binding(f"wva-test-reader-{n}", wva_release.metrics_reader_role, n) for n in ("reader", "doomed", "bound")),
    ]
    for obj in objects:
        server_side_apply(api, obj)
    try:
        yield Accounts(api, wva_release.metrics_reader_role)
    finally:
        for obj in objects:
            with contextlib.suppress(ApiException):
                if obj["kind"] == "ClusterRole":
                    rbac.delete_cluster_role(obj["metadata"]["name"])
                else:
                    rbac.delete_cluster_role_binding(obj["metadata"]["name"])
        delete_namespace(api, NAMESPACE)


@dataclass
class Serving:
    ca: CertificateAuthority
    folder: Path  # what --metrics-cert-path points at: tls.crt and tls.key

    def install(self, common_name: str) -> None:
        """Issue a serving certificate and put it in place the way a Secret volume update does (rename)."""
        pair = self.ca.issue(common_name, common_name, server_ips=("127.0.0.1",), server_names=(SERVER_NAME,))
        for source, name in ((pair.cert, "tls.crt"), (pair.key, "tls.key")):
            staged = self.folder / f".{name}.new"
            shutil.copyfile(source, staged)
            os.replace(staged, self.folder / name)


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Serving:
    root = tmp_path_factory.mktemp("metrics-serving")
    folder = root / "metrics-cert"
    folder.mkdir()
    served = Serving(CertificateAuthority(root / "ca", name="wva-metrics-test-ca"), folder)
    served.install("first")
    return served


@pytest.fixture(scope="module")
def wva(control_plane: ControlPlane, api: k8s.ApiClient, wva_release: Release, accounts: Accounts,
        serving: Serving, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WvaProcess]:
    """``wva run`` configured and authenticated like the chart's pod, its metrics certificate from a folder."""
    logs = tmp_path_factory.mktemp("metrics-auth-logs")
    process = chart_wva(control_plane, api, wva_release, logs, "metrics-auth", LEADER_ELECTION="false",
                        WVA_METRICS_CERT_PATH=str(serving.folder))
    process.start("--namespace", NAMESPACE)
    try:
        process.wait_ready(90)
        yield process
    finally:
        code = process.stop()
        log = process.log_text()
        assert code == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]


def _no_token(wva: WvaProcess, path: str) -> tuple[int, str]:
    saved, wva.metrics_token = wva.metrics_token, None
    try:
        return wva.get_metrics_port(path)
    finally:
        wva.metrics_token = saved


def _served_common_name(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return str(x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_no_token_and_tokens_the_server_rejects_get_401(wva: WvaProcess, accounts: Accounts) -> None:
    for path in PATHS:
        status, body = _no_token(wva, path)
        assert status == 401 and "bearer token" in body, (path, status, body)
    genuine = accounts.token("reader")
    forged = genuine[:-8] + ("A" * 8 if not genuine.endswith("A" * 8) else "B" * 8)  # signature no longer matches
    header, payload, _signature = genuine.split(".")
    unsigned = f"{header}.{payload}."  # the same claims without a signature
    core = k8s.CoreV1Api(accounts.api)
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": "deleted"}})
    orphan = accounts.token("deleted")
    core.delete_namespaced_service_account("deleted", NAMESPACE)
    wait_until(lambda: _gone(core, "deleted"), 30, "ServiceAccount deleted")
    for label, token in (("forged", forged), ("unsigned", unsigned), ("garbage", "not-a-token"),
                         ("deleted account", orphan)):
        for path in PATHS:
            assert wva.get_metrics_port(path, token=token)[0] == 401, (label, path)
    assert wva.get_metrics_port("/metrics", token=genuine)[0] == 200  # the genuine one it was made from works


def _gone(core: k8s.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespaced_service_account(name, NAMESPACE)
    except ApiException as exc:
        return exc.status == 404
    return False


def test_an_account_without_the_role_gets_403(wva: WvaProcess, accounts: Accounts) -> None:
    token = accounts.token("nobody")
    for path in PATHS:
        status, body = wva.get_metrics_port(path, token=token)
        assert status == 403, (path, status, body)
        assert accounts.user("nobody") in body and path in body


def test_each_path_is_authorized_as_rbac_grants_it(wva: WvaProcess, accounts: Accounts) -> None:
    """The SubjectAccessReview carries the path as requested, so RBAC's exact and ``/*`` matches decide."""
    expect = {
        "metrics-only": {"/metrics": 200, "/debug/decisions": 403, "/debug/decisions/llm/llama-8b": 403},
        "no-wildcard": {"/metrics": 200, "/debug/decisions": 200, "/debug/decisions/llm/llama-8b": 403},
        "reader": {"/metrics": 200, "/debug/decisions": 200, "/debug/decisions/llm/llama-8b": 404},
    }
    for account, paths in expect.items():
        token = accounts.token(account)
        got = {path: wva.get_metrics_port(path, token=token)[0] for path in paths}
        assert got == paths, account
    # 404 is the handler's own answer: authorized, and no record for a VA this replica never decided
    status, body = wva.get_metrics_port("/debug/decisions/llm/llama-8b", token=accounts.token("reader"))
    assert status == 404 and "no decision records for llm/llama-8b" in body


def test_the_account_the_chart_binds_reads_metrics_and_decisions(
    wva: WvaProcess, wva_release: Release, api: k8s.ApiClient
) -> None:
    token = service_account_token(api, *wva_release.scraper)
    status, exposition = wva.get_metrics_port("/metrics", token=token)
    assert status == 200
    assert samples(exposition, "wva_leader") == [({}, 1.0)]
    assert "# TYPE wva_engine_cycles_total counter" in exposition
    status, index = wva.get_metrics_port("/debug/decisions", token=token)
    assert status == 200 and "variantAutoscalings" in index
    # the reviews went to the apiserver under the chart's RBAC and were answered
    created = {labels["resource"]: value for labels, value in samples(exposition, "wva_kube_api_requests_total")
               if labels["verb"] == "create" and labels["outcome"] == "ok"}
    assert created.get("tokenreviews", 0) >= 1 and created.get("subjectaccessreviews", 0) >= 1, created
    # wva's own account is not a metrics reader
    own = service_account_token(api, wva_release.namespace, wva_release.service_account, seconds=600)
    assert wva.get_metrics_port("/metrics", token=own)[0] == 403


def test_answers_are_cached_and_a_revoked_token_stops_working_within_the_cache(
    wva: WvaProcess, accounts: Accounts, api: k8s.ApiClient
) -> None:
    core = k8s.CoreV1Api(api)
    secret = core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": "token-holder"}})
    by_secret = accounts.token("bound", {"kind": "Secret", "apiVersion": "v1", "name": "token-holder",
                                         "uid": secret.metadata.uid})
    by_account = accounts.token("doomed")

    def reviews() -> float:
        return sum(v for labels, v in samples(wva.metrics(), "wva_kube_api_requests_total")
                   if labels["resource"] == "tokenreviews")

    before = reviews()
    for _ in range(5):
        assert wva.get_metrics_port("/metrics", token=by_secret)[0] == 200
        assert wva.get_metrics_port("/metrics", token=by_account)[0] == 200
    # ten requests of two new tokens (and the reads of the counter itself): a few reviews, not ten
    assert reviews() - before <= 4

    core.delete_namespaced_secret("token-holder", NAMESPACE)
    core.delete_namespaced_service_account("doomed", NAMESPACE)
    revoked_at = time.monotonic()
    wait_until(lambda: all(wva.get_metrics_port("/metrics", token=t)[0] == 401 for t in (by_secret, by_account)),
               10 + 10, "both tokens refused once the cached answers expire")
    took = time.monotonic() - revoked_at
    print(f"revoked tokens refused after {took:.1f}s (cache 10 s)")
    assert took <= 10 + 5


def test_wva_explain_reads_the_secure_port_with_a_token_file(
    wva: WvaProcess, accounts: Accounts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"https://127.0.0.1:{wva.metrics_port}"
    target = f"{NAMESPACE}/no-such-va"
    reader, nobody = tmp_path / "reader.token", tmp_path / "nobody.token"
    reader.write_text(accounts.token("reader") + "\n")
    nobody.write_text(accounts.token("nobody"))
    common = ["explain", target, "--operator", base, "--insecure-skip-tls-verify"]
    assert main(common) == 2
    assert main([*common, "--token-file", str(nobody)]) == 2
    assert main([*common, "--token-file", str(reader)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert "HTTP 401" in errors[0] and "--token-file" in errors[0]
    assert "HTTP 403" in errors[1] and "metrics-reader" in errors[1]
    assert "HTTP 404: no decision records for" in errors[2]  # authorized: the handler answered
    assert main(["explain", target, "--operator", base, "--token-file", str(reader)]) == 2  # verification on
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err


# --- Prometheus ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus(control_plane: ControlPlane, wva: WvaProcess, accounts: Accounts, serving: Serving,
               wva_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    """The scrape a ServiceMonitor with ``scheme: https`` and ``authorization`` becomes, and the same with
    the token of an account without the role."""
    folder = tmp_path_factory.mktemp("metrics-scrape")
    good, bad = folder / "scraper.token", folder / "nobody.token"
    good.write_text(service_account_token(accounts.api, *wva_release.scraper))
    bad.write_text(accounts.token("nobody"))
    target = f"127.0.0.1:{wva.metrics_port}"
    jobs = [
        {"job_name": "wva", "scheme": "https", "scrape_interval": "1s", "scrape_timeout": "1s",
         "authorization": {"type": "Bearer", "credentials_file": str(good)},
         "tls_config": {"ca_file": str(serving.ca.cert_path), "server_name": SERVER_NAME},
         "static_configs": [{"targets": [target]}]},
        {"job_name": "wva-unbound", "scheme": "https", "scrape_interval": "1s", "scrape_timeout": "1s",
         "authorization": {"type": "Bearer", "credentials_file": str(bad)},
         "tls_config": {"insecure_skip_verify": True},
         "static_configs": [{"targets": [target]}]},
    ]
    text = yaml.safe_dump(jobs, sort_keys=False)
    server = LocalPrometheus(targets=[], binary=str(control_plane.binaries / "prometheus"),
                             scrape_configs="".join(f"  {line}\n" for line in text.splitlines()))
    server.start()
    try:
        yield server
    finally:
        server.close()


def _up(prometheus: LocalPrometheus, job: str) -> float | None:
    result = prometheus.query(f'up{{job="{job}"}}')
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_wva_over_https_with_the_bound_accounts_token(prometheus: LocalPrometheus) -> None:
    prometheus.wait_for_blocking('up{job="wva"} == 1', timeout=60)
    series = prometheus.wait_for_blocking('wva_leader{job="wva"}', timeout=30)
    assert float(series[0]["value"][1]) == 1.0
    assert prometheus.query('count({job="wva", __name__=~"wva_.+"})'), "no wva_ series stored"
    # the certificate was verified (ca_file, server_name): a wrong CA would have failed the scrape
    wait_until(lambda: _up(prometheus, "wva-unbound") == 0.0, 30, "the unbound account's scrape fails (403)")
    assert not prometheus.query('wva_leader{job="wva-unbound"}')


def test_a_rotated_certificate_is_served_without_a_restart(
    wva: WvaProcess, prometheus: LocalPrometheus, serving: Serving
) -> None:
    assert _served_common_name(wva.metrics_port) == "first"
    rotated_at = time.time()
    serving.install("rotated")
    wait_until(lambda: _served_common_name(wva.metrics_port) == "rotated", 15, "the new certificate served")
    assert "Metrics serving certificate reloaded" in wva.log_text()
    # Prometheus keeps scraping (its connection may have been kept; a new one verifies the new certificate)
    wait_until(lambda: (r := prometheus.query('timestamp(up{job="wva"} == 1)')) and float(r[0]["value"][1])
               > rotated_at + 1, 30, "a successful scrape after the rotation")
