#!/usr/bin/env bash
# Copy the CRDs from crds/ (the single source) into the Helm chart and the kustomize base.
#   deploy/sync-crds.sh           copy
#   deploy/sync-crds.sh --check   only report drift (exit 1 if any copy differs)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${root}/crds"
targets=("${root}/charts/workload-variant-autoscaler/crds" "${root}/deploy/base/crds")
mode="${1:-copy}"

shopt -s nullglob
sources=("${src}"/*.yaml)
if [[ ${#sources[@]} -eq 0 ]]; then
  echo "sync-crds: no CRD found in ${src}" >&2
  exit 1
fi

drift=0
for dir in "${targets[@]}"; do
  mkdir -p "${dir}"
  for f in "${sources[@]}"; do
    dest="${dir}/$(basename "${f}")"
    if cmp -s "${f}" "${dest}"; then
      continue
    fi
    if [[ "${mode}" == "--check" ]]; then
      echo "sync-crds: ${dest#"${root}"/} differs from ${f#"${root}"/}" >&2
      drift=1
    else
      cp "${f}" "${dest}"
      echo "sync-crds: updated ${dest#"${root}"/}"
    fi
  done
  # Copies whose source was removed are stale.
  for dest in "${dir}"/*.yaml; do
    [[ -e "${src}/$(basename "${dest}")" ]] && continue
    if [[ "${mode}" == "--check" ]]; then
      echo "sync-crds: ${dest#"${root}"/} has no source in crds/" >&2
      drift=1
    else
      rm -f "${dest}"
      echo "sync-crds: removed stale ${dest#"${root}"/}"
    fi
  done
done
exit "${drift}"
