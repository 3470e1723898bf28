#!/usr/bin/env bash
# End-to-end on a real (kind) cluster: build the images, install the chart,
# create a VoiceService with the kind profile (no GPUs: the GPU tier runs the
# VITS engine on CPU), wait for Ready and speak through the front Service.
#
# Needs: docker (running), kind, kubectl, helm, curl.
# Env: CLUSTER_NAME (voiceops-e2e), KEEP_CLUSTER=1 keeps the cluster,
#      READY_TIMEOUT (900s: the first start loads the VITS voice on CPU),
#      LOCAL_PORT (18000) for the port-forward, SKIP_BUILD=1 reuses built images.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
readonly HERE ROOT
readonly CLUSTER_NAME="${CLUSTER_NAME:-voiceops-e2e}"
readonly KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
readonly READY_TIMEOUT="${READY_TIMEOUT:-900s}"
readonly LOCAL_PORT="${LOCAL_PORT:-18000}"
readonly SKIP_BUILD="${SKIP_BUILD:-0}"
readonly OPERATOR_NAMESPACE="voiceops-system"
readonly OPERATOR_IMAGE="voiceops/operator:0.1.0"
readonly SERVICE_IMAGE="voiceops/service:0.1.0"
WORK_DIR=""
PORT_FORWARD_PID=""
VS_NAMESPACE=""
VS_NAME=""

log() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Helm and kubectl from `make tools` when not on PATH.
export PATH="${PATH}:${ROOT}/.tools/bin"

require_tools() {
  local missing=()
  local tool
  for tool in docker kind kubectl helm curl; do
    command -v "${tool}" >/dev/null 2>&1 || missing+=("${tool}")
  done
  if ((${#missing[@]} > 0)); then
    die "missing: ${missing[*]}. Install docker (https://docs.docker.com/engine/install/) and kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation); helm and kubectl come from \`make tools\`."
  fi
  docker info >/dev/null 2>&1 || die "docker is installed but its daemon is not reachable (is it running? may this user use it?)"
}

cleanup() {
  local status=$?
  if [[ -n "${PORT_FORWARD_PID}" ]]; then
    kill "${PORT_FORWARD_PID}" 2>/dev/null || true
    wait "${PORT_FORWARD_PID}" 2>/dev/null || true
  fi
  if ((status != 0)); then
    log "failed; operator logs and VoiceService state follow"
    kubectl -n "${OPERATOR_NAMESPACE}" logs -l app.kubernetes.io/component=operator --tail=100 >&2 || true
    kubectl get voiceservices,deployments,pods -A -o wide >&2 || true
  fi
  if [[ "${KEEP_CLUSTER}" == "1" ]]; then
    log "keeping cluster ${CLUSTER_NAME} (kind delete cluster --name ${CLUSTER_NAME})"
  else
    kind delete cluster --name "${CLUSTER_NAME}" >/dev/null 2>&1 || true
  fi
  [[ -z "${WORK_DIR}" ]] || rm -rf "${WORK_DIR}"
  exit "${status}"
}

create_cluster() {
  if kind get clusters 2>/dev/null | grep -qx "${CLUSTER_NAME}"; then
    log "reusing kind cluster ${CLUSTER_NAME}"
  else
    log "creating kind cluster ${CLUSTER_NAME}"
    kind create cluster --name "${CLUSTER_NAME}" --wait 180s
  fi
  kubectl config use-context "kind-${CLUSTER_NAME}" >/dev/null
}

build_and_load_images() {
  if [[ "${SKIP_BUILD}" != "1" ]]; then
    log "building ${OPERATOR_IMAGE} and ${SERVICE_IMAGE}"
    docker build --target operator -t "${OPERATOR_IMAGE}" "${ROOT}"
    docker build --target service -t "${SERVICE_IMAGE}" "${ROOT}"
  fi
  log "loading images into the cluster"
  kind load docker-image --name "${CLUSTER_NAME}" "${OPERATOR_IMAGE}" "${SERVICE_IMAGE}"
}

install_chart() {
  log "installing the chart"
  helm upgrade --install voiceops "${ROOT}/charts/voiceops" \
    --namespace "${OPERATOR_NAMESPACE}" --create-namespace \
    --values "${HERE}/values-kind.yaml" --wait --timeout 300s
  helm test voiceops --namespace "${OPERATOR_NAMESPACE}" --timeout 120s
}

apply_voiceservice() {
  log "applying examples/voiceservice.yaml with the kind profile"
  # The overlay lives beside this script and reads ../../examples, hence the load restrictor.
  kubectl kustomize --load-restrictor LoadRestrictionsNone "${HERE}" >"${WORK_DIR}/voiceservice.yaml"
  kubectl apply -f "${WORK_DIR}/voiceservice.yaml"
  # custom-columns prints one line per object, whether kubectl sees one object or a list.
  read -r VS_NAMESPACE VS_NAME < <(kubectl get -f "${WORK_DIR}/voiceservice.yaml" \
    -o custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name --no-headers)
  [[ -n "${VS_NAME}" ]] || die "no VoiceService in the rendered overlay"
}

wait_ready() {
  log "waiting up to ${READY_TIMEOUT} for VoiceService ${VS_NAMESPACE}/${VS_NAME} to be Ready"
  kubectl -n "${VS_NAMESPACE}" wait "voiceservice/${VS_NAME}" --for=condition=Ready --timeout="${READY_TIMEOUT}"
  kubectl -n "${VS_NAMESPACE}" get "voiceservice/${VS_NAME}"
}

speak() {
  log "speaking through service/${VS_NAME}"
  kubectl -n "${VS_NAMESPACE}" port-forward "service/${VS_NAME}" "${LOCAL_PORT}:8000" >"${WORK_DIR}/port-forward.log" 2>&1 &
  PORT_FORWARD_PID=$!
  local deadline=$((SECONDS + 60))
  until curl -fsS "http://127.0.0.1:${LOCAL_PORT}/healthz" >/dev/null 2>&1; do
    kill -0 "${PORT_FORWARD_PID}" 2>/dev/null || die "port-forward exited: $(cat "${WORK_DIR}/port-forward.log")"
    ((SECONDS < deadline)) || die "no answer on the port-forward within 60s"
    sleep 1
  done
  local wav="${WORK_DIR}/hello.wav"
  curl -fsS "http://127.0.0.1:${LOCAL_PORT}/v1/audio/speech" \
    -H 'content-type: application/json' \
    -d '{"model": "tts-1", "input": "Hello from voiceops on kind.", "response_format": "wav"}' \
    -o "${wav}" || die "speech request failed"
  local magic size
  magic="$(head -c 4 "${wav}")"
  size="$(wc -c <"${wav}")"
  [[ "${magic}" == "RIFF" ]] || die "the answer is not a WAV file (starts with '${magic}')"
  ((size > 1000)) || die "the WAV file is suspiciously small (${size} bytes)"
  log "OK: ${size} bytes of WAV audio from ${VS_NAMESPACE}/${VS_NAME}"
}

# A short chaos subset (docs/chaos.md) through the port-forward, after the first speech.
# CHAOS=0 skips it; CHAOS_SCENARIOS and CHAOS_REPORT choose what runs and where the
# report goes (default: the work folder, printed here before it is removed).
chaos_subset() {
  local runner="${ROOT}/.venv/bin/voiceops-chaos"
  local report="${CHAOS_REPORT:-${WORK_DIR}/chaos-report}"
  if [[ "${CHAOS:-1}" == "0" ]]; then
    log "chaos subset skipped (CHAOS=0)"
    return 0
  fi
  if [[ ! -x "${runner}" ]]; then
    log "chaos subset skipped: no ${runner} (make venv)"
    return 0
  fi
  kind get kubeconfig --name "${CLUSTER_NAME}" >"${WORK_DIR}/kubeconfig"
  log "chaos subset: ${CHAOS_SCENARIOS:-gpu-memory-pressure,scale-down}"
  local status=0
  "${runner}" --kubeconfig "${WORK_DIR}/kubeconfig" \
    --namespace "${VS_NAMESPACE}" --voiceservice "${VS_NAME}" \
    --url "http://127.0.0.1:${LOCAL_PORT}" \
    --scenarios "${CHAOS_SCENARIOS:-gpu-memory-pressure,scale-down}" \
    --duration 20 --report "${report}" || status=$?
  [[ ! -f "${report}/report.md" ]] || cat "${report}/report.md" >&2
  ((status == 0)) || die "chaos subset failed (exit ${status})"
}

main() {
  require_tools
  trap cleanup EXIT
  WORK_DIR="$(mktemp -d)"
  create_cluster
  build_and_load_images
  install_chart
  apply_voiceservice
  wait_ready
  speak
  chaos_subset
}

main "$@"
