"""``kubectl wva`` run by the real kubectl binary as a plugin, against the real API server with the
chart installed: status, config (with where each value came from) and explain (falling back to the
VA's last decision when the operator cannot be reached), kubectl's flags, and the server's RBAC."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from binaries import require_kubectl
from cluster import ControlPlane
from cpsupport import create_va, variant
from wva.api.constants import GROUP, PLURAL, VERSION

MODEL = "acme/plugin-8b"


def _plugin_dir(tmp: Path) -> Path:
    """A PATH entry holding kubectl-wva (the console script of this environment)."""
    script = shutil.which("kubectl-wva") or str(Path(sys.executable).with_name("kubectl-wva"))
    assert Path(script).exists(), "kubectl-wva is not installed (pip install -e .)"
    folder = tmp / "plugins"
    folder.mkdir(exist_ok=True)
    link = folder / "kubectl-wva"
    if not link.exists():
        link.symlink_to(script)
    return folder


def _saturation_config_map(release: Any) -> str:
    env = {e.name: e.value for c in release.deployment.spec.template.spec.containers for e in c.env or []}
    return str(env["SATURATION_CONFIG_MAP_NAME"])


@pytest.fixture()
def kubectl(tmp_path: Path) -> Iterator[Any]:
    binary = require_kubectl()
    env = {**os.environ, "PATH": f"{_plugin_dir(tmp_path)}{os.pathsep}{os.environ.get('PATH', '')}",
           "KUBECONFIG": str(tmp_path / "absent.kubeconfig")}  # only --kubeconfig may find the cluster

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, env=env, check=False)

    yield run


@pytest.fixture()
def model(kube: k8s.ApiClient, namespace: str, wva_release: Any) -> Iterator[str]:
    """Two variants of one model, one with its own spec.scaleToZero, a decision in each status, and a
    model entry in the chart's saturation ConfigMap."""
    cheap = variant("plugin-l4", namespace, MODEL, "L4", cost="5", max_replicas=4)
    cheap["spec"]["scaleToZero"] = {"enabled": True, "retention": "15m"}
    pricey = variant("plugin-h100", namespace, MODEL, "H100", cost="20")
    custom = k8s.CustomObjectsApi(kube)
    for body, reason in ((cheap, "ScaleUpKVSpareLow"), (pricey, "HoldCheaperVariantScaled")):
        create_va(kube, body)
        status = {"status": {
            "desiredOptimizedAlloc": {"accelerator": body["spec"]["modelProfile"]["accelerators"][0]["acc"],
                                      "numReplicas": 3, "lastRunTime": "2026-12-03T10:00:00Z"},
            "lastDecision": {"reason": reason, "message": f"{reason}: a test decision", "recordID": "1-abc",
                             "configHash": "0123456789ab", "time": "2026-12-03T10:00:00Z"},
        }}
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, body["metadata"]["name"],
                                                     status)
    core = k8s.CoreV1Api(kube)
    cm_name = _saturation_config_map(wva_release)
    key = f"plugin-{namespace}"[:63]
    entry = yaml.safe_dump({"model_id": MODEL, "namespace": namespace, "kvCacheThreshold": 0.7})
    core.patch_namespaced_config_map(cm_name, wva_release.namespace, {"data": {key: entry}})
    try:
        yield namespace
    finally:
        core.patch_namespaced_config_map(cm_name, wva_release.namespace, {"data": {key: None}})


def test_status_lists_the_vas_with_their_last_reason(control_plane: ControlPlane, kubectl: Any, model: str) -> None:
    kc = str(control_plane.admin_kubeconfig)
    out = kubectl("wva", "status", "-n", model, "--kubeconfig", kc)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAMESPACE", "NAME", "MODEL", "ACCELERATOR"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert set(rows) == {"plugin-h100", "plugin-l4"}
    assert "ScaleUpKVSpareLow" in rows["plugin-l4"] and "HoldCheaperVariantScaled" in rows["plugin-h100"]
    wide = kubectl("wva", "status", "-A", "-o", "wide", "--kubeconfig", kc)
    assert wide.returncode == 0 and "ScaleUpKVSpareLow: a test decision" in wide.stdout
    as_json = json.loads(kubectl("wva", "status", "-n", model, "-o", "json", "--kubeconfig", kc).stdout)
    assert {r["name"]: r["desired"] for r in as_json} == {"plugin-h100": "3", "plugin-l4": "3"}


def test_config_says_where_each_value_comes_from(control_plane: ControlPlane, kubectl: Any, model: str,
                                                 wva_release: Any) -> None:
    out = kubectl("wva", "config", f"{model}/plugin-h100", "--kubeconfig", str(control_plane.admin_kubeconfig),
                  "-o", "json")
    assert out.returncode == 0, out.stderr
    view = json.loads(out.stdout)
    fields = view["fields"]
    cm = f"{wva_release.namespace}/{_saturation_config_map(wva_release)}"
    assert view["entry"] == f"plugin-{model}"[:63]
    assert fields["kvCacheThreshold"] == {"value": 0.7, "from": f"ConfigMap {cm} entry {view['entry']!r}"}
    assert fields["queueLengthThreshold"]["from"] == f"ConfigMap {cm} entry 'default'"  # the chart sets it
    assert fields["scaleDownStabilizationWindow"]["value"] == 10.0  # the test release's default entry
    assert fields["nearSaturationMargin"] == {"value": 0.05, "from": "built-in default"}
    # the model's variants merge their spec.scaleToZero: plugin-l4 opted the whole model in
    assert fields["scaleToZero"] == {"value": True, "from": "VariantAutoscaling spec.scaleToZero of plugin-l4"}
    assert fields["scaleToZeroRetention"]["value"] == 900.0
    text = kubectl("wva", "config", "plugin-h100", "-n", model, "--kubeconfig", str(control_plane.admin_kubeconfig))
    assert text.returncode == 0 and "kvCacheThreshold" in text.stdout and "built-in default" in text.stdout


def test_explain_without_a_reachable_operator_shows_the_last_decision(
    control_plane: ControlPlane, kubectl: Any, model: str
) -> None:
    # the chart's operator runs no pod here, so its metrics Service has no endpoints to proxy to
    out = kubectl("wva", "explain", f"{model}/plugin-l4", "--kubeconfig", str(control_plane.admin_kubeconfig))
    assert out.returncode == 0, out.stderr
    assert "the full decision record is not available" in out.stdout
    assert "ScaleUpKVSpareLow" in out.stdout and "record 1-abc" in out.stdout and "--operator URL" in out.stdout


def test_errors_are_one_line_with_the_servers_reason(control_plane: ControlPlane, kubectl: Any, model: str) -> None:
    kc = str(control_plane.admin_kubeconfig)
    missing = kubectl("wva", "config", f"{model}/no-such-va", "--kubeconfig", kc)
    assert missing.returncode == 1 and "404" in missing.stderr and "no-such-va" in missing.stderr
    assert "Traceback" not in missing.stderr
    context = kubectl("wva", "status", "--kubeconfig", kc, "--context", "not-a-context")
    assert context.returncode == 2 and "not-a-context" in context.stderr
    nobody = str(control_plane.kubeconfig("plugin-nobody", user="plugin-nobody"))
    forbidden = kubectl("wva", "status", "-n", model, "--kubeconfig", nobody)
    assert forbidden.returncode == 1 and "403" in forbidden.stderr and "forbidden" in forbidden.stderr.lower()
    unconfigured = kubectl("wva", "status")  # no --kubeconfig: KUBECONFIG points at nothing
    assert unconfigured.returncode == 2 and "kubeconfig" in unconfigured.stderr
