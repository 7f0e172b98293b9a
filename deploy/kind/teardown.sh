#!/usr/bin/env bash
# Delete the kind cluster created by deploy/kind/install.sh (CLUSTER_NAME, default "wva").
set -euo pipefail
CLUSTER_NAME="${CLUSTER_NAME:-wva}"
command -v kind >/dev/null 2>&1 || { echo "kind is not on PATH" >&2; exit 1; }
if kind get clusters 2>/dev/null | grep -qx "${CLUSTER_NAME}"; then
  kind delete cluster --name "${CLUSTER_NAME}"
else
  echo "no kind cluster named ${CLUSTER_NAME}"
fi
