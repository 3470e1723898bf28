"""16-bit PCM answers: the engines' native PCM16 batch call, the OOM guard converting
fallback audio with ``from_audio``, and a real server's wav answers and concurrent bursts.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

import httpx
import numpy as np
import pytest
from testsupport.service_process import ServiceProcess, speech
from voiceops_service.engines.base import (
    Audio,
    Engine,
    SynthesisRequest,
    VoiceInfo,
    to_pcm16,
)
from voiceops_service.engines.espeak import EspeakEngine
from voiceops_service.faults import FaultState, FaultUpdate
from voiceops_service.metrics import ServiceMetrics
from voiceops_service.resilience import OomGuard, OomPolicy

SHORT = SynthesisRequest(text="Hello there.")
SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays on. "


class FixedAudioEngine(Engine):
    """Test double: answers every request with the same float samples; records its calls."""

    name = "fixed-audio"
    version = "test"

    def __init__(self, audio: Sequence[float] = (0.0,), rate: int = 16000) -> None:
        self.audio = np.asarray(audio, dtype=np.float32)
        self.rate = rate
        self.calls: list[list[str]] = []

    @property
    def sample_rate(self) -> int:
        return self.rate

    @property
    def device(self) -> str:
        return "cpu"

    def load(self) -> None:
        return None

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(name="fixed", language="en", sample_rate=self.rate, engine=self.name)]

    def synthesize(self, request: SynthesisRequest) -> Audio:
        return self.audio.copy()

    def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        self.calls.append([r.text for r in requests])
        return super().synthesize_batch(requests)


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    engine = EspeakEngine()
    engine.load()
    return engine


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2")


# --- the base class's PCM16 call and the guard's from_audio ---------------------------------


def test_base_engine_pcm16_batch_is_to_pcm16_of_its_audio_clipped() -> None:
    engine = FixedAudioEngine([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -2.0])
    batch = [SynthesisRequest(text="a"), SynthesisRequest(text="b")]
    pcm = engine.synthesize_batch_pcm16(batch)
    assert pcm == [to_pcm16(engine.audio)] * 2
    assert samples(pcm[0]).tolist() == [0, 16384, -16384, 32767, -32768, 32767, -32768]
    assert engine.calls == [["a", "b"]]  # one synthesize_batch call under the hood


def test_guard_converts_fallback_audio_with_from_audio_after_injected_ooms(
    espeak: EspeakEngine,
) -> None:
    faults = FaultState()
    faults.merge(FaultUpdate(oom_next_calls=2))
    metrics = ServiceMetrics()
    primary = FixedAudioEngine([0.25] * 10, rate=16000)
    guard = OomGuard(
        OomPolicy(max_retries=1, degrade_threshold=100),
        metrics=metrics,
        faults=faults,
        fallback=espeak,
        target_sample_rate=primary.sample_rate,
        sleep=lambda _: None,
    )
    request = SynthesisRequest(text="Hello there, this is the fallback.", voice="fixed")
    pcm = guard.run_one(primary.synthesize_batch_pcm16, request, from_audio=to_pcm16)
    assert isinstance(pcm, bytes)
    assert primary.calls == []  # both attempts OOMed before reaching the engine
    assert faults.snapshot().oom_next_calls == 0
    assert metrics.registry.get_sample_value("voiceops_fallback_calls_total") == 1.0
    assert metrics.registry.get_sample_value("voiceops_cuda_oom_total") == 2.0
    # espeak's 22050 Hz speech at the primary's 16000 Hz, as 16-bit PCM.
    direct = espeak.synthesize(SynthesisRequest(text=request.text)).size
    resampled = len(pcm) // 2
    assert len(pcm) % 2 == 0
    assert abs(resampled - direct * 16000 / 22050) <= 0.05 * resampled
    assert float(np.sqrt(np.mean((samples(pcm) / 32767.0) ** 2))) > 0.02


def test_degraded_guard_serves_pcm16_from_the_fallback_without_the_primary(
    espeak: EspeakEngine,
) -> None:
    faults = FaultState()
    faults.merge(FaultUpdate(oom_next_calls=1))
    primary = FixedAudioEngine([0.25] * 10, rate=22050)
    guard = OomGuard(
        OomPolicy(max_retries=0, degrade_threshold=1),
        faults=faults,
        fallback=espeak,
        target_sample_rate=primary.sample_rate,
        sleep=lambda _: None,
    )
    first = guard.run_one(primary.synthesize_batch_pcm16, SHORT, from_audio=to_pcm16)
    assert guard.degraded
    second = guard.run_one(primary.synthesize_batch_pcm16, SHORT, from_audio=to_pcm16)
    assert primary.calls == []
    for pcm in (first, second):
        assert isinstance(pcm, bytes)
        assert len(pcm) > 0.3 * 22050 * 2  # speech, not the primary's ten samples


# --- over HTTP -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_concurrent_burst_is_all_served(espeak_service: ServiceProcess) -> None:
    count = 8
    barrier = threading.Barrier(count)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            with httpx.Client(base_url=espeak_service.url, timeout=30.0) as client:
                client.get("/healthz")  # connect before the barrier: the posts overlap
                barrier.wait(timeout=10)
                response = speech(client, input=f"{SENTENCE} Caller {index}.")
                statuses.append(response.status_code)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert statuses == [200] * count


@pytest.mark.slow
@pytest.mark.parametrize("sentences", [1, 8], ids=["short", "multi-chunk"])
def test_wav_length_header_and_riff_sizes_match_the_body(
    espeak_service: ServiceProcess, sentences: int
) -> None:
    text = (SENTENCE * sentences).strip()
    assert (len(text) > 400) == (sentences > 1)
    with espeak_service.client() as client:
        response = speech(client, input=text, response_format="wav")
    assert response.status_code == 200, response.text
    body = response.content
    assert int(response.headers["content-length"]) == len(body)
    assert body[:4] == b"RIFF"
    assert body[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", body[4:8])[0] == len(body) - 8
    assert body[36:40] == b"data"
    assert struct.unpack("<I", body[40:44])[0] == len(body) - 44
    seconds = (len(body) - 44) / 2 / 22050
    words = len(text.split())
    assert 1.5 <= words / seconds <= 5.0, seconds  # every chunk is in the body
