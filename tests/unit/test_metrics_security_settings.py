"""How the metrics port's security is configured: WVA_METRICS_SECURE / WVA_METRICS_CERT_PATH, the
--metrics-secure / --metrics-cert-path flags over them, what the runtime builds from them, and the
RBAC they need (wva.rbac)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wva import rbac
from wva.cli import _metrics_flags, _parser
from wva.runtime import metrics_security
from wva.servingcerts import generate_self_signed
from wva.settings import Settings, SettingsError


def _cert_dir(folder: Path) -> Path:
    cert, key = generate_self_signed(["wva-test"])
    (folder / "tls.crt").write_bytes(cert)
    (folder / "tls.key").write_bytes(key)
    return folder


def test_secure_by_default_and_switched_off_by_the_environment(tmp_path: Path) -> None:
    defaults = Settings.from_env({})
    assert (defaults.metrics_secure, defaults.metrics_cert_path) == (True, None)
    assert Settings.from_env({"WVA_METRICS_SECURE": ""}).metrics_secure is True
    assert Settings.from_env({"WVA_METRICS_SECURE": "False"}).metrics_secure is False
    folder = str(_cert_dir(tmp_path))
    assert Settings.from_env({"WVA_METRICS_CERT_PATH": folder}).metrics_cert_path == folder


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WVA_METRICS_SECURE": "maybe"}, "WVA_METRICS_SECURE='maybe': not a boolean"),
        ({"WVA_METRICS_CERT_PATH": "/no/such/dir"}, "WVA_METRICS_CERT_PATH='/no/such/dir': no such directory"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert message in str(err.value)


def test_a_certificate_folder_needs_both_files_and_secure_metrics(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("x")
    with pytest.raises(SettingsError, match=r"tls\.key is missing or unreadable"):
        Settings.from_env({"WVA_METRICS_CERT_PATH": str(tmp_path)})
    _cert_dir(tmp_path)
    with pytest.raises(SettingsError, match="needs secure metrics"):
        Settings.from_env({"WVA_METRICS_CERT_PATH": str(tmp_path), "WVA_METRICS_SECURE": "false"})


def test_flags_win_over_the_environment(tmp_path: Path) -> None:
    args = _parser().parse_args(["run"])
    assert (args.metrics_port, args.probe_port, args.metrics_secure, args.metrics_cert_path) == (8443, 8081, None, None)
    assert _parser().parse_args(["run", "--metrics-secure"]).metrics_secure == "true"
    assert _parser().parse_args(["run", "--metrics-secure=false"]).metrics_secure == "false"

    env = Settings.from_env({"WVA_METRICS_SECURE": "false"})
    assert _metrics_flags(env, 8443, 8081, None, None).metrics_secure is False
    assert _metrics_flags(env, 8443, 8081, "true", None).metrics_secure is True
    folder = str(_cert_dir(tmp_path))
    merged = _metrics_flags(Settings.from_env({}), 8443, 8081, None, folder)
    assert (merged.metrics_secure, merged.metrics_cert_path) == (True, folder)
    with pytest.raises(SettingsError) as err:
        _metrics_flags(Settings.from_env({}), 8443, 8081, "sometimes", "/nowhere")
    assert err.value.problems == [
        "--metrics-secure='sometimes': not a boolean; use true/1/yes/on or false/0/no/off",
        "--metrics-cert-path='/nowhere': no such directory (it must hold tls.crt and tls.key)",
    ]
    with pytest.raises(SettingsError, match="needs secure metrics"):
        _metrics_flags(Settings.from_env({}), 8443, 8081, "false", folder)
    with pytest.raises(SettingsError, match="need a port of their own"):
        _metrics_flags(Settings.from_env({}), 9000, 9000, None, None)
    assert _metrics_flags(Settings.from_env({}), 9000, 9000, "false", None).metrics_secure is False


def test_the_runtime_builds_a_certificate_and_a_filter_only_when_secure(tmp_path: Path) -> None:
    kube = object()
    tls, auth = metrics_security(Settings.from_env({"POD_NAME": "wva-7"}), kube)  # type: ignore[arg-type]
    assert tls is not None and auth is not None
    assert tls.source == "self-signed" and "CN=wva-7" in tls.info.subject
    folder = str(_cert_dir(tmp_path))
    tls, auth = metrics_security(Settings.from_env({"WVA_METRICS_CERT_PATH": folder}), kube)  # type: ignore[arg-type]
    assert tls is not None and tls.source == folder and auth is not None
    assert metrics_security(Settings.from_env({"WVA_METRICS_SECURE": "0"}), kube) == (None, None)  # type: ignore[arg-type]


def test_wva_run_documents_the_flags_and_refuses_a_bad_certificate(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "wva.cli", "run", "--help"], capture_output=True, text=True,
                         check=True)
    for flag in ("--metrics-secure", "--metrics-cert-path", "TokenReview", "8443"):
        assert flag in out.stdout
    (tmp_path / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    (tmp_path / "tls.key").write_text("broken")
    env = {**os.environ, "PROMETHEUS_BASE_URL": "http://127.0.0.1:9", "WVA_KUBE_API_URL": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-m", "wva.cli", "run", "--metrics-cert-path", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"metrics serving certificate {tmp_path}" in out.stderr and "Traceback" not in out.stderr


def test_review_permissions_are_declared_and_needed_only_while_secure() -> None:
    reviews = {(r.api_group, r.resource): r for r in rbac.RULES if r.secure_metrics_only}
    assert set(reviews) == {("authentication.k8s.io", "tokenreviews"), ("authorization.k8s.io", "subjectaccessreviews")}
    assert all(r.verbs == ("create",) and r.scope == "cluster" and not r.watched for r in reviews.values())
    secure = {r.resource for r in rbac.required_rules("hpa")}
    plain = {r.resource for r in rbac.required_rules("hpa", secure_metrics=False)}
    assert secure - plain == {"tokenreviews", "subjectaccessreviews"}
    assert rbac.metrics_reader_rules() == [
        {"nonResourceURLs": ["/metrics", "/debug/decisions", "/debug/decisions/*"], "verbs": ["get"]}
    ]


def _reader(urls: list[str], verbs: list[str] | None = None) -> list[dict[str, object]]:
    return [
        {"kind": "ClusterRole", "metadata": {"name": "reader"}, "rules": [{"nonResourceURLs": urls,
                                                                          "verbs": verbs or ["get"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "reader"},
         "roleRef": {"kind": "ClusterRole", "name": "reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]},
    ]


def test_non_resource_urls_match_as_rbac_does() -> None:
    scraper = ("monitoring", "prometheus")
    objects = _reader(list(rbac.METRICS_READER_PATHS))
    assert rbac.is_allowed_path("/metrics", "get", objects, subject=scraper)
    assert rbac.is_allowed_path("/debug/decisions", "get", objects, subject=scraper)
    assert rbac.is_allowed_path("/debug/decisions/ns/name", "get", objects, subject=scraper)
    assert not rbac.is_allowed_path("/metrics/extra", "get", objects, subject=scraper)  # no * after /metrics
    assert not rbac.is_allowed_path("/debug/decisionsX", "get", objects, subject=scraper)
    assert not rbac.is_allowed_path("/metrics", "get", objects, subject=("monitoring", "other"))
    assert not rbac.is_allowed_path("/metrics", "post", objects, subject=scraper)
    assert rbac.is_allowed_path("/anything", "get", _reader(["*"]), subject=scraper)
    assert rbac.is_allowed_path("/metrics", "post", _reader(["/metrics"], ["*"]), subject=scraper)
    # a RoleBinding grants no non-resource URL
    namespaced = _reader(["/metrics"])
    namespaced[1] = {**namespaced[1], "kind": "RoleBinding", "metadata": {"name": "reader", "namespace": "monitoring"}}
    assert not rbac.is_allowed_path("/metrics", "get", namespaced, subject=scraper)
