"""How the operator configures an inference pod and how it probes it.

The service reads every setting from ``VOICEOPS_*`` environment variables
(pydantic-settings, prefix ``VOICEOPS_``); the operator writes exactly these.
"""

from __future__ import annotations

import base64
import binascii

ENV_PREFIX = "VOICEOPS_"

ENV_ENGINE = "VOICEOPS_ENGINE"  # espeak | vits
ENV_VOICE = "VOICEOPS_VOICE"  # voice name (Piper name for vits, espeak name for espeak)
ENV_MODEL_PATH = "VOICEOPS_MODEL_PATH"  # directory or .onnx file of a Piper voice; empty = bundled
ENV_DEVICE = "VOICEOPS_DEVICE"  # auto | cpu | cuda
ENV_FP16 = "VOICEOPS_FP16"  # "true": vits flow + decoder in half precision (CUDA only)
ENV_HOST = "VOICEOPS_HOST"
ENV_PORT = "VOICEOPS_PORT"
ENV_MAX_CONCURRENCY = "VOICEOPS_MAX_CONCURRENCY"
ENV_MAX_QUEUE = "VOICEOPS_MAX_QUEUE"
ENV_BATCH_MAX_SIZE = "VOICEOPS_BATCH_MAX_SIZE"
ENV_BATCH_MAX_DELAY_MS = "VOICEOPS_BATCH_MAX_DELAY_MS"
ENV_REQUEST_TIMEOUT_SECONDS = "VOICEOPS_REQUEST_TIMEOUT_SECONDS"
ENV_MAX_INPUT_CHARS = "VOICEOPS_MAX_INPUT_CHARS"
ENV_FALLBACK_ENGINE = "VOICEOPS_FALLBACK_ENGINE"  # in-process espeak when degraded; "" = off
ENV_FAULT_INJECTION = "VOICEOPS_FAULT_INJECTION"  # "true" enables /admin/faults
ENV_FAULT_TOKEN = "VOICEOPS_FAULT_TOKEN"  # bearer token /admin/faults requires
ENV_TIER = "VOICEOPS_TIER"  # gpu | fallback (informational: logs and engine_info)
# What the VoiceService advertises on both tiers, so a client sees one service:
ENV_SERVICE_ENGINES = "VOICEOPS_SERVICE_ENGINES"  # comma list: every tier's engine (model ids)
ENV_SERVICE_VOICE = "VOICEOPS_SERVICE_VOICE"  # spec.model.voice: the advertised default voice
# Routing notices (docs/routing.md): the operator tells each pod whether the front
# Service sends it traffic, signed with its Ed25519 key; the pod checks the signature.
ENV_POD_NAME = "VOICEOPS_POD_NAME"  # the pod's own name (downward API); notices name their pod
ENV_ROUTING_PUBLIC_KEY = "VOICEOPS_ROUTING_PUBLIC_KEY"  # base64 raw key; empty = no notices
ROUTING_AUDIENCE = "voiceops-routing"  # the notices' JWT audience
# The operator's commands to /admin/models (InPlace model updates): JWTs signed with the
# same key, for this audience and one pod, accepted beside the static model token.
MODEL_ADMIN_AUDIENCE = "voiceops-model-admin"
ED25519_KEY_BYTES = 32  # a seed or a public key, each sent as base64 of the raw bytes
# Model hot swap (docs/hot-swap.md): the token-guarded /admin/models API, off unless enabled.
ENV_MODEL_ADMIN = "VOICEOPS_MODEL_ADMIN"  # "true" enables /admin/models
ENV_MODEL_ADMIN_TOKEN = "VOICEOPS_MODEL_ADMIN_TOKEN"  # the token /admin/models requires
ENV_MODEL_VERSION = "VOICEOPS_MODEL_VERSION"  # the loaded model's version; empty = a digest
# A swap that would push GPU memory past this ratio is refused (the failover's critical ratio).
ENV_MODEL_SWAP_MEMORY_CRITICAL_RATIO = "VOICEOPS_MODEL_SWAP_MEMORY_CRITICAL_RATIO"
ENV_AUDIO_CACHE_MAX_BYTES = "VOICEOPS_AUDIO_CACHE_MAX_BYTES"  # 0 turns the audio cache off
# Where a pod mounts spec.model.uri's PersistentVolumeClaim (pvc://claim/path -> here/path).
MODEL_MOUNT_PATH = "/var/lib/voiceops/model"
# Long-text jobs (docs/jobs.md): chunks checkpointed in Redis, made by workers in every pod.
ENV_JOBS_REDIS_URL = "VOICEOPS_JOBS_REDIS_URL"  # redis://...; empty = no job API, no worker
ENV_JOBS_KEY_PREFIX = "VOICEOPS_JOBS_KEY_PREFIX"  # one prefix per VoiceService sharing a Redis
ENV_JOBS_TTL_SECONDS = "VOICEOPS_JOBS_TTL_SECONDS"  # a job expires this long after creation
ENV_JOBS_MAX_INPUT_CHARS = "VOICEOPS_JOBS_MAX_INPUT_CHARS"  # longest job input
PATH_JOBS = "/v1/audio/jobs"
HEADER_IDEMPOTENCY_KEY = "Idempotency-Key"


def check_ed25519_base64(text: str, what: str) -> str:
    """``text`` stripped, if it is base64 of 32 raw bytes; ValueError naming ``what``."""
    text = text.strip()
    if not text:
        return text
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be base64 (the {ED25519_KEY_BYTES} raw bytes of {what})") from None
    if len(raw) != ED25519_KEY_BYTES:
        raise ValueError(f"must decode to {ED25519_KEY_BYTES} bytes ({what}), not {len(raw)}")
    return text


PATH_LIVE = "/healthz"
PATH_READY = "/readyz"
PATH_METRICS = "/metrics"
PATH_SPEECH = "/v1/audio/speech"
# The web page (voiceops_service.web): on unless VOICEOPS_WEB_UI=false; "/" redirects there.
ENV_WEB_UI = "VOICEOPS_WEB_UI"
PATH_WEB = "/web/"
PATH_WEB_STATUS = "/web/status.json"  # the page's JSON view of /readyz, admission and limits
PATH_FAULTS = "/admin/faults"
# The fault token's own header, beside Authorization: Bearer. The API server's pod proxy
# removes Authorization (the caller's credential) before it reaches the pod.
FAULT_TOKEN_HEADER = "X-Voiceops-Fault-Token"
PATH_ROUTING = "/admin/routing"
PATH_MODELS_ADMIN = "/admin/models"  # GET: versions; POST: load aside, validate, swap
PATH_MODELS_ROLLBACK = "/admin/models/rollback"  # POST: swap back to the previous version
MODEL_ADMIN_TOKEN_HEADER = "X-Voiceops-Model-Token"  # beside Authorization: Bearer

# Response headers of an audio answer: the engine and the voice that spoke.
HEADER_ENGINE = "X-Voiceops-Engine"
HEADER_VOICE = "X-Voiceops-Voice"
# The model version that spoke (absent when a swap happened while the request ran), and
# whether the answer came from the audio cache ("hit") or was synthesised ("miss").
HEADER_MODEL_VERSION = "X-Voiceops-Model-Version"
HEADER_AUDIO_CACHE = "X-Voiceops-Audio-Cache"

DEFAULT_PORT = 8000
