#!/usr/bin/env bash
# Build (once) or find the local control plane's binaries: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler, and metrics-server, pinned in
# localcluster/voiceops_localcluster/kube_binaries.py, into ~/.cache/voiceops/kube/<versions>/bin
# (VOICEOPS_KUBE_CACHE moves it). A no-op when they are there; VOICEOPS_KUBE_BIN_DIR=folder
# uses binaries you already have. Prints the folder. Needs Go >= 1.26 for the first build
# (about 8 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m voiceops_localcluster.kube_binaries "$@"
