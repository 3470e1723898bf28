"""The vits engine end to end in-process: it speaks, honours speed, rejects bad requests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from voiceops_service.engines.base import EngineError, SynthesisRequest, UnknownVoiceError
from voiceops_service.engines.vits import VitsEngine, VitsOptions, create_engine
from voiceops_service.engines.vits.engine import plan_passes
from voiceops_service.settings import ServiceSettings

pytestmark = pytest.mark.slow
QUIET = {"noise_scale": 0.0, "noise_w": 0.0}  # deterministic output


@pytest.fixture(scope="module")
def engine() -> Iterator[VitsEngine]:
    vits = VitsEngine(VitsOptions(device="cpu", seed=1))
    vits.load()
    vits.warm_up()
    yield vits
    vits.close()


def test_speaks_plausibly(engine: VitsEngine) -> None:
    text = "Hello there, this is a short test."
    audio = engine.synthesize(SynthesisRequest(text=text))
    seconds = audio.size / engine.sample_rate
    assert audio.dtype == np.float32
    assert 1.0 < seconds < 5.0  # ~12 chars/s of speech, with slack
    assert np.sqrt(np.mean(audio**2)) > 0.02  # non-silent
    assert np.abs(audio).max() <= 1.0
    # Speech has pauses: the loudest 50 ms windows are far above the quietest.
    frames = audio[: audio.size // 1102 * 1102].reshape(-1, 1102)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    assert energy.max() > 10 * np.percentile(energy, 5)


def test_engine_facts(engine: VitsEngine) -> None:
    assert engine.device == "cpu"
    assert engine.supports_batching
    assert engine.sample_rate == 22050
    (voice,) = engine.voices()
    assert (voice.name, voice.language, voice.engine) == ("en_US-joe-medium", "en-US", "vits")
    assert engine.memory_hint() is None  # CPU: no accelerator memory


def test_speed_scales_duration(engine: VitsEngine) -> None:
    text = "Speed changes how long this sentence takes."
    normal = engine.synthesize(SynthesisRequest(text=text, options=QUIET))
    fast = engine.synthesize(SynthesisRequest(text=text, speed=2.0, options=QUIET))
    slow = engine.synthesize(SynthesisRequest(text=text, speed=0.5, options=QUIET))
    # Durations are ceil()-ed per phoneme (>= 1 frame), so 2x faster is not quite half.
    assert 0.45 < fast.size / normal.size < 0.75
    assert 1.5 < slow.size / normal.size < 2.2


def test_batch_equals_one_by_one(engine: VitsEngine) -> None:
    texts = ["Yes.", "A somewhat longer sentence, with a pause.", "Short one here."]
    requests = [SynthesisRequest(text=t, options=QUIET) for t in texts]
    batched = engine.synthesize_batch(requests)
    for request, audio in zip(requests, batched, strict=True):
        alone = engine.synthesize(request)
        assert audio.shape == alone.shape
        assert np.abs(audio - alone).max() < 1e-3


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (SynthesisRequest(text="Hi.", voice="nobody"), "unknown voice 'nobody'"),
        (SynthesisRequest(text="Hi.", speaker_id=3), r"speaker_id must be in 0\.\.0"),
        (SynthesisRequest(text="Hi.", options={"pitch": 1.0}), "unknown options"),
        (SynthesisRequest(text="Hi.", options={"noise_w": -1.0}), "noise_w must be >= 0"),
        (SynthesisRequest(text="Hi.", speed=0.0), "speed must be > 0"),
        (SynthesisRequest(text="   "), "nothing speakable"),
    ],
)
def test_bad_requests_are_engine_errors(
    engine: VitsEngine, request_: SynthesisRequest, message: str
) -> None:
    with pytest.raises(EngineError, match=message):
        engine.synthesize(request_)


def test_registry_entry_point_reads_settings() -> None:
    settings = ServiceSettings(engine="vits", device="cpu", voice="en_US-joe-medium")
    vits = create_engine(settings)
    assert vits.options.device == "cpu"
    assert vits.options.voice == "en_US-joe-medium"


def test_unknown_bundled_voice_fails_load() -> None:
    with pytest.raises(UnknownVoiceError, match="en_US-joe-medium"):
        VitsEngine(VitsOptions(voice="de_DE-nobody")).load()


def test_plan_passes_sorts_and_respects_budget() -> None:
    lengths = [10, 50, 20, 45, 200]
    passes = plan_passes(lengths, budget=100)
    assert sorted(i for group in passes for i in group) == [0, 1, 2, 3, 4]
    assert passes[0] == [4]  # longer than the budget: alone
    for group in passes:
        assert lengths[group[0]] * len(group) <= 100 or len(group) == 1
        assert [lengths[i] for i in group] == sorted((lengths[i] for i in group), reverse=True)


def test_plan_passes_mixes_lengths_within_the_budget() -> None:
    lengths = [100, 95, 90, 60, 58, 20]
    assert plan_passes(lengths, budget=10_000) == [[0, 1, 2, 3, 4, 5]]
    assert plan_passes(lengths, budget=300) == [[0, 1, 2], [3, 4, 5]]
