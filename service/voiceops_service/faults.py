"""Fault injection for chaos tests: present only when enabled and token-guarded (see api.faults).

The state is owned by the app (``app.state.faults``). Engine-call faults
(``engine_delay_seconds``, ``oom_next_calls``) apply in the OOM guard
(``resilience.OomGuard.run_batch``), the one place every engine call passes,
direct or batched. The GPU monitor reads ``gpu_memory`` (the batcher's memory
cap reads the monitor); ``hang_seconds`` blocks the event loop and ``crash``
exits the process (api.post_faults), whatever the engine.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SimulatedGpuMemory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    used_bytes: int = Field(ge=0)
    total_bytes: int = Field(gt=0)

    @model_validator(mode="after")
    def _used_within_total(self) -> SimulatedGpuMemory:
        if self.used_bytes > self.total_bytes:
            raise ValueError("gpu_memory.used_bytes must be <= gpu_memory.total_bytes")
        return self


class FaultUpdate(BaseModel):
    """``POST /admin/faults`` body: every field optional, merged into the current faults."""

    model_config = ConfigDict(extra="forbid")

    gpu_memory: SimulatedGpuMemory | None = None
    oom_next_calls: int | None = Field(None, ge=0, le=1_000_000)
    hang_seconds: float | None = Field(None, ge=0, le=3600)
    crash: bool | None = None
    # Extension (not in the team brief): slow every engine call, to make overload testable.
    engine_delay_seconds: float | None = Field(None, ge=0, le=600)


class FaultSnapshot(BaseModel):
    gpu_memory: SimulatedGpuMemory | None = None
    oom_next_calls: int = 0
    hang_seconds: float = 0.0
    crash: bool = False
    engine_delay_seconds: float = 0.0


class FaultState:
    """Thread-safe current faults (engine worker threads read them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults = FaultSnapshot()

    def snapshot(self) -> FaultSnapshot:
        with self._lock:
            return self._faults.model_copy()

    def merge(self, update: FaultUpdate) -> FaultSnapshot:
        with self._lock:
            changes = update.model_dump(exclude_unset=True)
            if "gpu_memory" in update.model_fields_set:
                changes["gpu_memory"] = update.gpu_memory
            for key in ("oom_next_calls", "hang_seconds", "crash", "engine_delay_seconds"):
                if key in changes and changes[key] is None:
                    del changes[key]  # explicit null leaves a counter/flag as it is
            self._faults = self._faults.model_copy(update=changes)
            return self._faults.model_copy()

    def clear(self) -> FaultSnapshot:
        with self._lock:
            self._faults = FaultSnapshot()
            return self._faults.model_copy()

    def consume_oom(self) -> bool:
        """True (and one fewer pending) when the next engine call must raise OOM."""
        with self._lock:
            if self._faults.oom_next_calls <= 0:
                return False
            self._faults = self._faults.model_copy(
                update={"oom_next_calls": self._faults.oom_next_calls - 1}
            )
            return True

    def simulated_gpu_memory(self) -> SimulatedGpuMemory | None:
        with self._lock:
            return self._faults.gpu_memory

    def engine_delay_seconds(self) -> float:
        with self._lock:
            return self._faults.engine_delay_seconds
