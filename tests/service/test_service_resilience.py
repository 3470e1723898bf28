"""The OOM guard: retries, halving, isolation, degraded mode, fallback (no GPU needed).

OOMs here are real ``torch.OutOfMemoryError`` instances raised by a scripted
engine function, the exact type CUDA raises.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from voiceops_service.engines.base import Audio, SynthesisRequest
from voiceops_service.engines.espeak import EspeakEngine
from voiceops_service.faults import FaultState, FaultUpdate
from voiceops_service.metrics import ServiceMetrics
from voiceops_service.resilience import (
    OomGuard,
    OomPolicy,
    OutOfMemoryExhaustedError,
    is_out_of_memory,
    resample,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedEngine:
    """Answers each text with len(text) samples; OOMs while a batch is too big."""

    def __init__(self, max_batch_without_oom: int = 1000, oom_calls: int = 0) -> None:
        self.max_batch = max_batch_without_oom
        self.oom_calls = oom_calls
        self.batches: list[list[str]] = []

    def __call__(self, batch: Sequence[SynthesisRequest]) -> list[Audio]:
        self.batches.append([r.text for r in batch])
        if self.oom_calls > 0:
            self.oom_calls -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if len(batch) > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        for request in batch:
            if request.text == "poison":
                raise ValueError("cannot phonemise poison")
        return [np.full(len(r.text), 0.5, dtype=np.float32) for r in batch]


def requests(*texts: str) -> list[SynthesisRequest]:
    return [SynthesisRequest(text=t) for t in texts]


def make_guard(**policy: float) -> tuple[OomGuard, ServiceMetrics, FakeClock, list[float]]:
    metrics = ServiceMetrics()
    clock = FakeClock()
    sleeps: list[float] = []
    guard = OomGuard(
        OomPolicy(**policy),  # type: ignore[arg-type]
        metrics=metrics,
        clock=clock,
        sleep=sleeps.append,
    )
    return guard, metrics, clock, sleeps


def oom_total(metrics: ServiceMetrics) -> float:
    return metrics.registry.get_sample_value("voiceops_cuda_oom_total") or 0.0


def test_detects_torch_and_cuda_runtime_ooms() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not a RuntimeError


def test_single_request_retries_with_exponential_backoff_then_succeeds() -> None:
    guard, metrics, _, sleeps = make_guard(
        max_retries=3, backoff_initial_seconds=0.1, backoff_max_seconds=1.0
    )
    engine = ScriptedEngine(oom_calls=2)
    audio = guard.run_one(engine, SynthesisRequest(text="hello"))
    assert audio.size == 5
    assert len(engine.batches) == 3
    assert sleeps == [0.1, 0.2]
    assert oom_total(metrics) == 2


def test_gives_up_after_max_retries_without_fallback() -> None:
    guard, metrics, _, _ = make_guard(max_retries=2, degrade_threshold=100)
    engine = ScriptedEngine(oom_calls=10)
    with pytest.raises(OutOfMemoryExhaustedError):
        guard.run_one(engine, SynthesisRequest(text="hello"))
    assert len(engine.batches) == 3
    assert oom_total(metrics) == 3


def test_batch_that_ooms_is_split_in_halves() -> None:
    guard, metrics, _, _ = make_guard(degrade_threshold=100)
    engine = ScriptedEngine(max_batch_without_oom=2)
    texts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g", "hh"]
    results = guard.run_batch(engine, requests(*texts))
    assert [r.size for r in results] == [len(t) for t in texts]  # type: ignore[union-attr]
    assert engine.batches[0] == texts
    assert [len(b) for b in engine.batches] == [8, 4, 2, 2, 4, 2, 2]
    assert oom_total(metrics) == 3


def test_one_failing_request_fails_alone() -> None:
    guard, metrics, _, _ = make_guard()
    results = guard.run_batch(ScriptedEngine(), requests("ok", "poison", "fine", "also"))
    assert isinstance(results[1], ValueError)
    assert [r.size for i, r in enumerate(results) if i != 1] == [2, 4, 4]  # type: ignore[union-attr]
    assert oom_total(metrics) == 0


def test_repeated_ooms_flip_degraded_and_clean_calls_recover() -> None:
    guard, metrics, _, _ = make_guard(
        max_retries=0, degrade_threshold=3, degrade_window_seconds=10, recover_clean_calls=2
    )
    engine = ScriptedEngine(oom_calls=3)
    for _ in range(3):
        with pytest.raises(OutOfMemoryExhaustedError):
            guard.run_one(engine, SynthesisRequest(text="x"))
    assert guard.degraded
    assert metrics.registry.get_sample_value("voiceops_degraded") == 1.0
    guard.run_one(engine, SynthesisRequest(text="x"))
    assert guard.degraded  # one clean call is not enough
    guard.run_one(engine, SynthesisRequest(text="x"))
    assert not guard.degraded
    assert metrics.registry.get_sample_value("voiceops_degraded") == 0.0


def test_ooms_spread_beyond_the_window_do_not_degrade() -> None:
    guard, _, clock, _ = make_guard(max_retries=0, degrade_threshold=3, degrade_window_seconds=10)
    for _ in range(5):
        with pytest.raises(OutOfMemoryExhaustedError):
            guard.run_one(ScriptedEngine(oom_calls=1), SynthesisRequest(text="x"))
        clock.now += 6
    assert not guard.degraded


def test_quiet_period_ends_degraded_mode() -> None:
    guard, _, clock, _ = make_guard(max_retries=0, degrade_threshold=1, recover_quiet_seconds=30)
    with pytest.raises(OutOfMemoryExhaustedError):
        guard.run_one(ScriptedEngine(oom_calls=1), SynthesisRequest(text="x"))
    assert guard.degraded
    clock.now += 29
    assert guard.degraded
    clock.now += 2
    assert not guard.degraded


def test_degraded_guard_serves_from_fallback_engine() -> None:
    fallback = EspeakEngine()
    fallback.load()
    metrics = ServiceMetrics()
    clock = FakeClock()
    guard = OomGuard(
        OomPolicy(max_retries=1, degrade_threshold=2, recover_quiet_seconds=60),
        metrics=metrics,
        fallback=fallback,
        target_sample_rate=16000,
        clock=clock,
        sleep=lambda _: None,
    )
    engine = ScriptedEngine(oom_calls=100)
    audio = guard.run_one(engine, SynthesisRequest(text="Hello there.", voice="primary-voice"))
    assert guard.degraded
    # espeak (22050 Hz) resampled to the primary's 16000 Hz: about a second of speech.
    assert 0.4 < audio.size / 16000 < 3.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.02
    calls_before = len(engine.batches)
    guard.run_batch(engine, requests("One.", "Two."))
    assert len(engine.batches) == calls_before  # primary untouched while degraded
    assert metrics.registry.get_sample_value("voiceops_fallback_calls_total") == 3.0
    clock.now += 61
    assert not guard.degraded


def test_injected_faults_raise_real_torch_ooms_in_the_call_path() -> None:
    faults = FaultState()
    faults.merge(FaultUpdate(oom_next_calls=2))
    metrics = ServiceMetrics()
    guard = OomGuard(OomPolicy(max_retries=3), metrics=metrics, faults=faults, sleep=lambda _: None)
    engine = ScriptedEngine()
    assert guard.run_one(engine, SynthesisRequest(text="abc")).size == 3
    assert len(engine.batches) == 1  # the two injected OOMs never reached the engine
    assert oom_total(metrics) == 2
    assert faults.snapshot().oom_next_calls == 0


def test_resample_keeps_duration() -> None:
    audio = np.sin(np.linspace(0, 100, 22050)).astype(np.float32)
    out = resample(audio, 22050, 16000)
    assert out.size == 16000
    assert out.dtype == np.float32
