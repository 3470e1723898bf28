"""Operator settings: one pydantic-settings object, env prefix VOICEOPS_OPERATOR_."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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

    @field_validator("namespaces", "metrics_reader_namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def standalone(self) -> bool:
        return not self.peering
