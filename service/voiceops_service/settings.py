"""The service's one settings object, read from ``VOICEOPS_*`` environment variables.

Field names match ``voiceops_contract.pod`` (``VOICEOPS_MAX_CONCURRENCY`` ->
``max_concurrency``); the CLI sets the same fields from flags.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from voiceops_contract import pod

EngineName = Literal["espeak", "vits"]
DeviceName = Literal["auto", "cpu", "cuda"]
HARD_MAX_INPUT_CHARS = 4096  # the API contract (docs/architecture.md): never more
HARD_MAX_JOB_INPUT_CHARS = 1_000_000  # a job (docs/jobs.md): never more


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=pod.ENV_PREFIX, extra="ignore")

    engine: EngineName = "espeak"
    voice: str = Field("", description="Voice name; empty = the engine's default voice.")
    model_path: str = Field("", description="Piper .onnx file or directory; empty = bundled.")
    device: DeviceName = "auto"
    fp16: bool = Field(False, description="vits: run in half precision on CUDA.")
    host: str = "0.0.0.0"
    port: int = Field(pod.DEFAULT_PORT, ge=0, le=65535, description="HTTP port; 0 = any free port.")

    max_concurrency: int = Field(4, ge=1, le=1024, description="Engine calls at once.")
    max_queue: int = Field(64, ge=0, le=100_000, description="Requests waiting past the limit.")
    batch_max_size: int = Field(8, ge=1, le=256)
    batch_max_delay_ms: float = Field(10.0, ge=0, le=10_000)
    request_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    max_input_chars: int = Field(HARD_MAX_INPUT_CHARS, ge=1, le=HARD_MAX_INPUT_CHARS)

    fallback_engine: Literal["", "espeak"] = ""
    fallback_voice: str = Field("en-us", description="espeak voice used while degraded.")
    oom_max_retries: int = Field(3, ge=0, le=10, description="Retries of one call after OOM.")
    oom_backoff_initial_seconds: float = Field(0.05, ge=0, le=10)
    oom_backoff_max_seconds: float = Field(1.0, ge=0, le=60)
    oom_degrade_threshold: int = Field(3, ge=1, le=1000, description="OOMs that mark degraded.")
    oom_degrade_window_seconds: float = Field(60.0, gt=0, le=3600)
    oom_recover_clean_calls: int = Field(20, ge=1, le=100_000)
    oom_recover_quiet_seconds: float = Field(60.0, gt=0, le=3600)

    fault_injection: bool = False
    fault_token: SecretStr = SecretStr("")
    tier: Literal["", "gpu", "fallback"] = ""
    # Part of the failover latency (poll + window + operator cadence); NVML reads cost µs.
    gpu_poll_interval_seconds: float = Field(1.0, gt=0, le=600)
    liveness_stall_seconds: float = Field(
        10.0, gt=0, le=3600, description="/healthz fails when the engine worker is stuck this long."
    )
    # Sooner than liveness: a stuck engine stops taking traffic (the operator moves it at
    # once) well before the restart, instead of queueing requests until then.
    readiness_stall_seconds: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="/readyz fails (reason stalled) when an engine call runs this long; "
        "at most liveness_stall_seconds; unset = half of it.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    web_ui: bool = Field(True, description="Serve the web page at /web/ and its status JSON.")

    # One service to its clients: what the VoiceService advertises on every tier.
    service_engines: Annotated[tuple[EngineName, ...], NoDecode] = Field(
        (),
        description="Engines of all the VoiceService's tiers (comma list), accepted and listed "
        "as model ids on every tier; empty = this pod's engine only.",
    )
    service_voice: str = Field(
        "",
        description="The VoiceService's voice (spec.model.voice): listed and the default on "
        "every tier, spoken by this pod's nearest voice; empty = this pod's voice.",
    )
    # Routing notices from the operator (docs/routing.md).
    pod_name: str = Field("", description="This pod's name; routing notices must name it.")
    routing_public_key: str = Field(
        "",
        description="The operator's Ed25519 public key (base64 of the 32 raw bytes); "
        "empty = no /admin/routing endpoint.",
    )

    # Model hot swap (voiceops_service.models, docs/hot-swap.md): token-guarded, off by default.
    model_admin: bool = Field(
        False,
        description="Enable /admin/models (needs the token, or the operator's key and the "
        "pod's name: the operator's signed commands).",
    )
    model_admin_token: SecretStr = SecretStr("")
    model_version: str = Field(
        "", max_length=200, description="The loaded model's version; empty = a digest of it."
    )
    model_swap_max_rtf: float = Field(
        1.0, gt=0, le=1000, description="A candidate's canary must synthesise this fast or better."
    )
    model_swap_memory_critical_ratio: float = Field(
        0.97,
        gt=0,
        le=1,
        description="Loading a model aside is refused when it would push GPU memory past this.",
    )
    # The audio cache (voiceops_service.cache): finished audio of short inputs, by model version.
    audio_cache_max_bytes: int = Field(
        64 * 2**20, ge=0, le=2**40, description="Byte bound of the audio cache; 0 = off."
    )
    audio_cache_max_chars: int = Field(
        200, ge=1, le=HARD_MAX_INPUT_CHARS, description="Longer inputs are never cached."
    )

    # Long-text jobs (voiceops_service.jobs, docs/jobs.md); an empty URL turns them off.
    jobs_redis_url: SecretStr = Field(
        SecretStr(""), description="Redis holding job checkpoints; empty = no job API."
    )
    jobs_key_prefix: str = Field("voiceops:jobs:", min_length=1, max_length=200)
    jobs_ttl_seconds: int = Field(86_400, ge=60, le=30 * 86_400)
    jobs_max_input_chars: int = Field(200_000, ge=1, le=HARD_MAX_JOB_INPUT_CHARS)
    jobs_workers: int = Field(1, ge=0, le=64, description="Chunk workers in this process.")
    jobs_visibility_timeout_seconds: float = Field(
        30.0, ge=0.2, le=3600, description="A chunk held this long by a silent worker is retaken."
    )
    jobs_max_attempts: int = Field(5, ge=1, le=100, description="Tries of one chunk, then failed.")

    @field_validator("service_engines", mode="before")
    @classmethod
    def _split_engines(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("routing_public_key")
    @classmethod
    def _raw_ed25519_key(cls, value: str) -> str:
        return pod.check_ed25519_base64(value, "an Ed25519 public key")

    @field_validator("voice", "model_path", "host", "service_voice", "pod_name")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _check_consistent(self) -> Self:
        if (
            self.readiness_stall_seconds is not None
            and self.readiness_stall_seconds > self.liveness_stall_seconds
        ):
            raise ValueError(
                "readiness_stall_seconds must be <= liveness_stall_seconds (got "
                f"{self.readiness_stall_seconds} > {self.liveness_stall_seconds}): a stuck "
                "engine leaves the Service before the container is restarted"
            )
        if self.oom_backoff_max_seconds < self.oom_backoff_initial_seconds:
            raise ValueError(
                "oom_backoff_max_seconds must be >= oom_backoff_initial_seconds "
                f"(got {self.oom_backoff_max_seconds} < {self.oom_backoff_initial_seconds})"
            )
        return self

    @property
    def readiness_stall_limit_seconds(self) -> float:
        if self.readiness_stall_seconds is None:
            return self.liveness_stall_seconds / 2
        return self.readiness_stall_seconds

    @property
    def faults_enabled(self) -> bool:
        """Both the flag and a non-empty token (the app logs a warning for flag-only)."""
        return self.fault_injection and bool(self.fault_token.get_secret_value())

    @property
    def model_admin_enabled(self) -> bool:
        """The flag and a way to authenticate: a non-empty token or the operator's key (the
        app logs a warning for flag-only)."""
        has_token = bool(self.model_admin_token.get_secret_value())
        return self.model_admin and (has_token or self.routing_notices_enabled)

    @property
    def jobs_enabled(self) -> bool:
        return bool(self.jobs_redis_url.get_secret_value())

    @property
    def routing_notices_enabled(self) -> bool:
        """The operator's key and this pod's name are both known."""
        return bool(self.routing_public_key and self.pod_name)
