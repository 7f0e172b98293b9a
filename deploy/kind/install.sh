#!/usr/bin/env bash
# Create (or reuse) a kind cluster and install everything wva needs to run there:
#   kube-prometheus-stack (Prometheus Operator + Prometheus, plain HTTP, every ServiceMonitor selected),
#   prometheus-adapter (wva_desired_replicas as an external metric, for HPAs),
#   the wva image (docker build + kind load) and the wva Helm chart.
# Idempotent: re-running upgrades the releases and reloads the image.
#
# Environment (defaults in brackets):
#   CLUSTER_NAME [wva]          KIND_NODE_IMAGE [kindest/node:v1.32.2]
#   WVA_NAMESPACE [wva-system]  MONITORING_NAMESPACE [monitoring]
#   IMAGE [wva:dev]             BUILD_IMAGE [true]
#   ACTUATION_MODE [hpa]        (hpa or direct)
#   GLOBAL_OPT_INTERVAL [10s]   INSTALL_PROMETHEUS_ADAPTER [true]
#   KUBE_PROMETHEUS_STACK_VERSION / PROMETHEUS_ADAPTER_VERSION  (chart versions; empty = latest)
#   HELM_EXTRA_ARGS             (appended to the wva `helm upgrade --install`)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER_NAME="${CLUSTER_NAME:-wva}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.32.2}"
WVA_NAMESPACE="${WVA_NAMESPACE:-wva-system}"
MONITORING_NAMESPACE="${MONITORING_NAMESPACE:-monitoring}"
IMAGE="${IMAGE:-wva:dev}"
BUILD_IMAGE="${BUILD_IMAGE:-true}"
ACTUATION_MODE="${ACTUATION_MODE:-hpa}"
GLOBAL_OPT_INTERVAL="${GLOBAL_OPT_INTERVAL:-10s}"
INSTALL_PROMETHEUS_ADAPTER="${INSTALL_PROMETHEUS_ADAPTER:-true}"
KUBE_PROMETHEUS_STACK_VERSION="${KUBE_PROMETHEUS_STACK_VERSION:-}"
PROMETHEUS_ADAPTER_VERSION="${PROMETHEUS_ADAPTER_VERSION:-}"
HELM_EXTRA_ARGS="${HELM_EXTRA_ARGS:-}"

log() { printf '[wva-kind] %s\n' "$*"; }
die() { printf '[wva-kind] error: %s\n' "$*" >&2; exit 1; }

for tool in kind kubectl helm docker; do
  command -v "${tool}" >/dev/null 2>&1 || die "${tool} is required but not on PATH"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed)"
case "${ACTUATION_MODE}" in hpa|direct) ;; *) die "ACTUATION_MODE must be hpa or direct, got ${ACTUATION_MODE}";; esac

version_flag() { [[ -n "$1" ]] && printf -- '--version=%s' "$1" || true; }

# 1. Cluster
if kind get clusters 2>/dev/null | grep -qx "${CLUSTER_NAME}"; then
  log "reusing kind cluster ${CLUSTER_NAME}"
else
  log "creating kind cluster ${CLUSTER_NAME} (${KIND_NODE_IMAGE})"
  kind create cluster --name "${CLUSTER_NAME}" --image "${KIND_NODE_IMAGE}" \
    --config "${root}/deploy/kind/kind-config.yaml" --wait 120s
fi
kubectl config use-context "kind-${CLUSTER_NAME}" >/dev/null
kubectl cluster-info >/dev/null

# 2. Prometheus (and the Prometheus Operator CRDs the chart's ServiceMonitor needs)
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null 2>&1 || true
helm repo update prometheus-community >/dev/null
log "installing kube-prometheus-stack in ${MONITORING_NAMESPACE}"
# shellcheck disable=SC2046
helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  --namespace "${MONITORING_NAMESPACE}" --create-namespace $(version_flag "${KUBE_PROMETHEUS_STACK_VERSION}") \
  --set grafana.enabled=false \
  --set alertmanager.enabled=false \
  --set prometheus.prometheusSpec.scrapeInterval=5s \
  --set prometheus.prometheusSpec.evaluationInterval=5s \
  --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
  --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false \
  --wait --timeout 10m

prometheus_url="http://kube-prometheus-stack-prometheus.${MONITORING_NAMESPACE}.svc:9090"

if [[ "${INSTALL_PROMETHEUS_ADAPTER}" == "true" ]]; then
  log "installing prometheus-adapter (external metric wva_desired_replicas)"
  # shellcheck disable=SC2046
  helm upgrade --install prometheus-adapter prometheus-community/prometheus-adapter \
    --namespace "${MONITORING_NAMESPACE}" $(version_flag "${PROMETHEUS_ADAPTER_VERSION}") \
    -f "${root}/deploy/examples/prometheus-adapter-values.yaml" \
    --set prometheus.url="http://kube-prometheus-stack-prometheus.${MONITORING_NAMESPACE}.svc" \
    --set prometheus.port=9090 \
    --wait --timeout 5m
fi

# 3. Image
if [[ "${BUILD_IMAGE}" == "true" ]]; then
  log "building ${IMAGE}"
  docker build -t "${IMAGE}" "${root}"
fi
log "loading ${IMAGE} into kind"
kind load docker-image "${IMAGE}" --name "${CLUSTER_NAME}"

# 4. wva
log "installing the wva chart in ${WVA_NAMESPACE} (actuation ${ACTUATION_MODE})"
# shellcheck disable=SC2086
helm upgrade --install wva "${root}/charts/workload-variant-autoscaler" \
  --namespace "${WVA_NAMESPACE}" --create-namespace \
  --set image.repository="${IMAGE%:*}" \
  --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never \
  --set prometheus.baseURL="${prometheus_url}" \
  --set globalOptInterval="${GLOBAL_OPT_INTERVAL}" \
  --set actuation.mode="${ACTUATION_MODE}" \
  --set logLevel=debug \
  --set serviceMonitor.enabled=true \
  --set serviceMonitor.interval=5s \
  --set serviceMonitor.scrapeTimeout=4s \
  --set serviceMonitor.labels.release=kube-prometheus-stack \
  ${HELM_EXTRA_ARGS} \
  --wait --timeout 5m
# A new image under the same tag needs new pods.
kubectl -n "${WVA_NAMESPACE}" rollout restart deployment -l app.kubernetes.io/instance=wva >/dev/null
kubectl -n "${WVA_NAMESPACE}" rollout status deployment -l app.kubernetes.io/instance=wva --timeout 5m

log "done. Try: kubectl get va -A; kubectl -n ${WVA_NAMESPACE} logs -l app.kubernetes.io/instance=wva"
