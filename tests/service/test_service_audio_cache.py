"""The versioned audio cache: keys, its byte bound, swaps, and a real espeak service using it.

The unit tests drive :class:`AudioCache` with real parts (espeak engines behind a
``VersionedEngine``, a real OOM guard, the service's metrics); the HTTP test runs
a real ``voiceops-service`` process with a small byte bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testsupport.service_process import ServiceProcess, metric_value, speech, start_service
from voiceops_contract import pod
from voiceops_service.cache import AudioCache, normalise_text
from voiceops_service.engines.base import SynthesisRequest
from voiceops_service.engines.espeak import EspeakEngine
from voiceops_service.faults import FaultState, FaultUpdate
from voiceops_service.metrics import ServiceMetrics
from voiceops_service.models import ModelVersion, VersionedEngine
from voiceops_service.resilience import OomGuard, OomPolicy
from voiceops_service.speech import SpeechPlan

SMALL_BOUND = 200_000  # bytes: a dozen short wav answers overflow it


def espeak_version(version: str) -> ModelVersion:
    engine = EspeakEngine(default_voice="en-us")
    engine.load()
    return ModelVersion(version=version, uri="", engine=engine)


def plan(text: str, response_format: str = "wav", stream: bool = False) -> SpeechPlan:
    chunk = SynthesisRequest(text=text, voice="en-us")
    return SpeechPlan(
        voice="en-us",
        response_format=response_format,  # type: ignore[arg-type]
        stream=stream,
        chunks=(chunk,),
    )


Parts = tuple[AudioCache, VersionedEngine, OomGuard, ServiceMetrics]


@pytest.fixture
def parts() -> Parts:
    metrics = ServiceMetrics()
    versions = VersionedEngine(espeak_version("a"))
    guard = OomGuard(OomPolicy(), metrics=metrics)
    return AudioCache(SMALL_BOUND, 200, metrics), versions, guard, metrics


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_keys_normalise_text_and_separate_what_changes_the_audio(parts: Parts) -> None:
    cache, versions, guard, metrics = parts
    assert normalise_text("  Press\tone\n for  sales. ") == "Press one for sales."
    first = cache.ticket(
        "Press one  for sales.", plan("Press one for sales."), 1.0, versions, guard
    )
    same = cache.ticket(" Press one for sales.", plan("Press one for sales."), 1.0, versions, guard)
    assert first is not None
    assert same is not None
    assert first.key == same.key
    faster = cache.ticket("Press one for sales.", plan("x"), 1.5, versions, guard)
    pcm = cache.ticket("Press one for sales.", plan("x", "pcm"), 1.0, versions, guard)
    assert faster is not None
    assert pcm is not None
    assert len({first.key, faster.key, pcm.key}) == 3
    assert cache.ticket("Hi.", plan("Hi.", stream=True), 1.0, versions, guard) is None
    assert cache.ticket("x" * 201, plan("x"), 1.0, versions, guard) is None
    off = AudioCache(0, 200, metrics)
    assert off.ticket("Hi.", plan("Hi."), 1.0, versions, guard) is None
    faults = FaultState()
    assert cache.ticket("Hi.", plan("Hi."), 1.0, versions, guard, faults) is not None
    for injected in (FaultUpdate(engine_delay_seconds=1.0), FaultUpdate(oom_next_calls=2)):
        faults.clear()
        faults.merge(injected)  # an injected engine fault reaches every request: no cache
        assert cache.ticket("Hi.", plan("Hi."), 1.0, versions, guard, faults) is None


def test_a_swap_changes_every_key_and_drops_the_old_audio(parts: Parts) -> None:
    cache, versions, guard, metrics = parts
    ticket = cache.ticket("Welcome.", plan("Welcome."), 1.0, versions, guard)
    assert ticket is not None
    assert cache.get(ticket) is None
    assert cache.store(ticket, [b"old audio"], {}, versions, guard)
    assert cache.get(ticket) is not None

    straddling = cache.ticket("Goodbye.", plan("Goodbye."), 1.0, versions, guard)
    assert straddling is not None
    new = espeak_version("b")
    versions.activate(new)
    cache.keep_only(new)
    # Audio begun before the swap is not stored: the old model may have spoken it.
    assert not cache.store(straddling, [b"maybe old"], {}, versions, guard)
    after = cache.ticket("Welcome.", plan("Welcome."), 1.0, versions, guard)
    assert after is not None
    assert after.key.model_version == "b"
    assert cache.get(after) is None
    assert cache.get(ticket) is None  # gone, not just unreachable
    assert len(cache) == 0
    assert sample(metrics, "voiceops_audio_cache_evictions_total", reason="model_swap") == 1
    assert sample(metrics, "voiceops_audio_cache_hits_total") == 1
    assert sample(metrics, "voiceops_audio_cache_misses_total") == 3


def test_the_cache_stays_within_its_byte_bound(parts: Parts) -> None:
    cache, versions, guard, metrics = parts
    body = b"\x00" * 30_000
    for n in range(20):
        ticket = cache.ticket(f"Menu item {n}.", plan("x"), 1.0, versions, guard)
        assert ticket is not None
        assert cache.store(ticket, [b"RIFF", body], {}, versions, guard)
        assert cache.bytes <= SMALL_BOUND
    assert len(cache) == SMALL_BOUND // (len(body) + 4 + 256)
    evicted = sample(metrics, "voiceops_audio_cache_evictions_total", reason="capacity")
    assert evicted == 20 - len(cache)
    assert sample(metrics, "voiceops_audio_cache_bytes") == cache.bytes
    latest = cache.ticket("Menu item 19.", plan("x"), 1.0, versions, guard)
    oldest = cache.ticket("Menu item 0.", plan("x"), 1.0, versions, guard)
    assert latest is not None
    assert oldest is not None
    assert cache.get(latest) is not None
    assert cache.get(oldest) is None  # least recently used went first
    too_big = cache.ticket("Huge.", plan("x"), 1.0, versions, guard)
    assert too_big is not None
    assert not cache.store(too_big, [b"\x00" * (SMALL_BOUND + 1)], {}, versions, guard)


@pytest.fixture(scope="module")
def small_cache_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {"VOICEOPS_ENGINE": "espeak", "VOICEOPS_AUDIO_CACHE_MAX_BYTES": str(SMALL_BOUND)}
    service = start_service(Path(tmp_path_factory.mktemp("cache")), env)
    yield service
    service.stop()


@pytest.mark.slow
def test_a_real_service_answers_repeats_from_the_cache_within_its_bound(
    small_cache_service: ServiceProcess,
) -> None:
    with small_cache_service.client() as client:
        first = speech(client, input="Thank you for calling.")
        again = speech(client, input="Thank you  for calling.")
        assert first.status_code == again.status_code == 200
        assert first.headers[pod.HEADER_AUDIO_CACHE] == "miss"
        assert again.headers[pod.HEADER_AUDIO_CACHE] == "hit"
        assert again.content == first.content
        assert again.headers[pod.HEADER_VOICE] == first.headers[pod.HEADER_VOICE]
        long_text = "This sentence is long enough. " * 10  # over 200 characters: not cached
        assert pod.HEADER_AUDIO_CACHE not in speech(client, input=long_text).headers
        for n in range(12):
            assert speech(client, input=f"Your number is {n} in the queue.").status_code == 200
    held = metric_value(small_cache_service, "voiceops_audio_cache_bytes")
    assert held is not None
    assert 0 < held <= SMALL_BOUND
    evicted = metric_value(
        small_cache_service, "voiceops_audio_cache_evictions_total", reason="capacity"
    )
    assert evicted is not None
    assert evicted >= 1
    assert metric_value(small_cache_service, "voiceops_audio_cache_hits_total") == 1
