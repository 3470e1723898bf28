"""Operator settings: one pydantic-settings object, env prefix VOICEOPS_OPERATOR_."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Literal, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from voiceops_contract import pod

DEFAULT_SERVICE_IMAGE = "voiceops/service:0.1.0"
DEFAULT_SERVICE_GPU_IMAGE = "voiceops/service-gpu:0.1.0"


class OperatorSettings(BaseSettings):
    """Everything the operator process is configured with (env, then CLI flags)."""

    model_config = SettingsConfigDict(env_prefix="VOICEOPS_OPERATOR_", frozen=True, extra="ignore")

    service_image: str = Field(
        default=DEFAULT_SERVICE_IMAGE, min_length=1, description="CPU service image (fallback)."
    )
    service_gpu_image: str = Field(
        default=DEFAULT_SERVICE_GPU_IMAGE, min_length=1, description="GPU service image."
    )
    namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Namespaces to watch (comma list in env); empty = all."
    )
    scrape_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    scrape_timeout_seconds: float = Field(default=1.0, gt=0, le=60)
    prometheus_url: str = Field(default="", description="Empty = scrape pods directly.")
    metrics_reader_namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Namespaces whose pods read the inference pods' /metrics: the "
        "operator's own (scraping pods) and Prometheus' (prometheus_url). A VoiceService "
        "NetworkPolicy with allowFrom lets them in (comma list in env).",
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="0 = no /metrics.")
    health_port: int = Field(default=8081, ge=0, le=65535, description="0 = no /healthz.")
    peering: str = Field(default="", description="kopf peering name; empty = standalone.")
    priority: int = Field(default=0, description="kopf peering priority.")
    log_format: Literal["plain", "json"] = "plain"
    resync_interval_seconds: float = Field(
        default=60.0, gt=0, le=86400, description="Level-triggered re-reconcile of every object."
    )
    watch_server_timeout_seconds: int = Field(default=300, ge=1, le=3600)
    watch_client_timeout_seconds: int = Field(default=330, ge=1, le=3600)
    api_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    self_healing: bool = Field(
        default=True, description="Run the self-healing loop (off: spec reconcile only)."
    )
    model_update_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="How often a VoiceService's model update driver makes a pass (an "
        "idle pass sends no request).",
    )
    model_swap_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="How long one pod may take to load, validate and swap a model version.",
    )
    routing_key: SecretStr = Field(
        default=SecretStr(""),
        description="Ed25519 private key (base64 of the 32-byte seed) that signs routing "
        "notices to the pods (docs/routing.md); empty = no notices, keep-alive clients stay "
        "where they are when traffic moves. The chart generates one.",
    )

    routing_key_file: str = Field(
        default="",
        description="A file holding routing_key (a mounted Secret); wins over routing_key.",
    )

    @model_validator(mode="after")
    def _routing_key_from_file(self) -> Self:
        if not self.routing_key_file:
            return self
        try:
            text = Path(self.routing_key_file).read_text().strip()
        except OSError as error:
            raise ValueError(f"routing_key_file: cannot read it: {error}") from None
        object.__setattr__(self, "routing_key", self._ed25519_seed(SecretStr(text)))
        return self

    @field_validator("routing_key")
    @classmethod
    def _ed25519_seed(cls, value: SecretStr) -> SecretStr:
        return SecretStr(pod.check_ed25519_base64(value.get_secret_value(), "an Ed25519 seed"))

    def routing_signing_key(self) -> Ed25519PrivateKey | None:
        text = self.routing_key.get_secret_value()
        if not text:
            return None
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text))

    @property
    def routing_public_key(self) -> str:
        """The public half, base64 of the raw 32 bytes, for the pods ("" = no key)."""
        key = self.routing_signing_key()
        if key is None:
            return ""
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    @field_validator("namespaces", "metrics_reader_namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def standalone(self) -> bool:
        return not self.peering
