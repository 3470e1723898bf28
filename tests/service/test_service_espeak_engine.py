"""The espeak engine really speaks: non-silent audio of plausible duration, speed, voices."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from voiceops_service.engines.base import SynthesisRequest, UnknownVoiceError, to_pcm16
from voiceops_service.engines.espeak import EspeakEngine, rate_for_speed
from voiceops_service.engines.espeak_lib import get_espeak, phonemize

SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays on."
WORDS = len(SENTENCE.split())


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    engine = EspeakEngine()
    engine.load()
    return engine


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def test_speaks_non_silent_audio_of_plausible_duration(engine: EspeakEngine) -> None:
    audio = engine.synthesize(SynthesisRequest(text=SENTENCE))
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert engine.sample_rate == 22050
    seconds = audio.size / engine.sample_rate
    words_per_second = WORDS / seconds
    assert 1.5 <= words_per_second <= 5.0, (seconds, words_per_second)  # 175 wpm ≈ 2.9 w/s
    assert rms(audio) > 0.02
    assert np.max(np.abs(audio)) <= 1.0


def test_speed_two_is_shorter_and_half_is_longer(engine: EspeakEngine) -> None:
    normal = engine.synthesize(SynthesisRequest(text=SENTENCE, speed=1.0)).size
    fast = engine.synthesize(SynthesisRequest(text=SENTENCE, speed=2.0)).size
    slow = engine.synthesize(SynthesisRequest(text=SENTENCE, speed=0.5)).size
    assert fast < 0.7 * normal
    assert slow > 1.5 * normal


def test_speed_maps_to_espeak_rate_within_its_range() -> None:
    assert rate_for_speed(1.0) == 175
    assert rate_for_speed(2.0) == 350
    assert rate_for_speed(0.25) == 80  # espeak's floor
    assert rate_for_speed(4.0) == 450  # espeak's ceiling


def test_voices_are_espeak_names_and_other_voices_differ(engine: EspeakEngine) -> None:
    names = {voice.name for voice in engine.voices()}
    assert {"en-us", "en-gb", "de", "fr-fr"} <= names
    assert engine.default_voice == "en-us"
    american = engine.synthesize(SynthesisRequest(text="Tomato", voice="en-us"))
    german = engine.synthesize(SynthesisRequest(text="Tomato", voice="de"))
    assert rms(german) > 0.01
    assert american.size != german.size or not np.array_equal(american, german)


def test_unknown_voice_is_refused(engine: EspeakEngine) -> None:
    with pytest.raises(UnknownVoiceError, match="no-such-voice"):
        engine.synthesize(SynthesisRequest(text="hi", voice="no-such-voice"))
    with pytest.raises(UnknownVoiceError):
        EspeakEngine(default_voice="no-such-voice").load()


def test_concurrent_calls_each_get_their_own_audio(engine: EspeakEngine) -> None:
    # Very different lengths: any mix-up between concurrent callers would show.
    texts = ["Hi.", SENTENCE, "One two three four five.", SENTENCE + " " + SENTENCE] * 4
    expected = {t: engine.synthesize(SynthesisRequest(text=t)).size for t in set(texts)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda t: engine.synthesize(SynthesisRequest(text=t)), texts))
    for text, audio in zip(texts, results, strict=True):
        # espeak-ng output length jitters by up to ~2% between identical calls.
        assert abs(audio.size - expected[text]) <= 0.05 * expected[text], text
        assert rms(audio) > 0.02


def test_phonemize_gives_ipa_and_keeps_punctuation() -> None:
    phonemes = phonemize("Hello, world. How are you?", "en-us")
    assert phonemes == "həlˈoʊ, wˈɜːld. hˈaʊ ɑːɹ juː?"
    assert get_espeak().phonemize_clause("Hello world", "en-us") == "həlˈoʊ wˈɜːld"


def test_phonemize_and_synthesis_share_one_library_safely() -> None:
    library = get_espeak()
    reference = library.synthesize("Good morning.", "en-us").size
    with ThreadPoolExecutor(max_workers=4) as pool:
        phonemes = pool.map(lambda _: phonemize("Good morning.", "en-us"), range(8))
        sizes = pool.map(lambda _: library.synthesize("Good morning.", "en-us").size, range(8))
        assert set(phonemes) == {"ɡˈʊd mˈɔːɹnɪŋ."}
        assert all(abs(size - reference) < 0.05 * reference for size in sizes)


# --- native 16-bit PCM ---------------------------------------------------------------------


class PcmRecorder:
    """Test double around the real ``EspeakLibrary.synthesize_pcm16``: records each answer.

    espeak-ng's output jitters by a few samples between identical calls, so
    "the same audio" can only be compared within one call.
    """

    def __init__(self, real: Callable[..., bytes]) -> None:
        self.real = real
        self.calls: list[tuple[tuple[object, ...], bytes]] = []

    def __call__(self, *args: object) -> bytes:
        pcm = self.real(*args)
        self.calls.append((args, pcm))
        return pcm


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> PcmRecorder:
    library = get_espeak()
    recorder = PcmRecorder(library.synthesize_pcm16)
    monkeypatch.setattr(library, "synthesize_pcm16", recorder)
    return recorder


def test_library_pcm16_is_even_length_speech() -> None:
    pcm = get_espeak().synthesize_pcm16(SENTENCE, "en-us")
    assert isinstance(pcm, bytes)
    assert len(pcm) % 2 == 0
    samples = np.frombuffer(pcm, dtype="<i2")
    seconds = samples.size / get_espeak().sample_rate
    assert 1.5 <= WORDS / seconds <= 5.0, seconds
    assert rms(samples / 32768.0) > 0.02


def test_library_float_audio_is_its_pcm16_over_32768(recorder: PcmRecorder) -> None:
    audio = get_espeak().synthesize(SENTENCE, "en-us", 200)
    assert len(recorder.calls) == 1
    args, pcm = recorder.calls[0]
    assert args == (SENTENCE, "en-us", 200)
    assert audio.dtype == np.float32
    assert np.array_equal(np.frombuffer(pcm, dtype="<i2"), np.round(audio * 32768))
    assert float(audio.min()) >= -1.0
    assert float(audio.max()) < 1.0


def test_engine_pcm16_is_the_library_output_for_voice_and_speed(
    engine: EspeakEngine, recorder: PcmRecorder
) -> None:
    pcm = engine.synthesize_pcm16(SynthesisRequest(text=SENTENCE, voice="de", speed=2.0))
    assert recorder.calls == [((SENTENCE, "de", rate_for_speed(2.0)), pcm)]
    default = engine.synthesize_pcm16(SynthesisRequest(text=SENTENCE))
    assert recorder.calls[1] == ((SENTENCE, "en-us", 175), default)


def test_engine_pcm16_honours_speed_and_voice(engine: EspeakEngine) -> None:
    normal = len(engine.synthesize_pcm16(SynthesisRequest(text=SENTENCE)))
    fast = len(engine.synthesize_pcm16(SynthesisRequest(text=SENTENCE, speed=2.0)))
    slow = len(engine.synthesize_pcm16(SynthesisRequest(text=SENTENCE, speed=0.5)))
    assert fast < 0.7 * normal
    assert slow > 1.5 * normal
    float_samples = engine.synthesize(SynthesisRequest(text=SENTENCE)).size
    assert abs(normal // 2 - float_samples) <= 0.05 * float_samples  # same speech either way
    german = engine.synthesize_pcm16(SynthesisRequest(text="Tomato", voice="de"))
    american = engine.synthesize_pcm16(SynthesisRequest(text="Tomato", voice="en-us"))
    assert rms(np.frombuffer(german, dtype="<i2") / 32768.0) > 0.01
    assert german != american


def test_engine_batch_pcm16_answers_each_request_in_order(
    engine: EspeakEngine, recorder: PcmRecorder
) -> None:
    batch = [
        SynthesisRequest(text="Hi."),
        SynthesisRequest(text=SENTENCE, voice="en-gb", speed=1.5),
        SynthesisRequest(text="One two three.", voice="fr-fr"),
    ]
    results = engine.synthesize_batch_pcm16(batch)
    assert [args for args, _ in recorder.calls] == [
        ("Hi.", "en-us", 175),
        (SENTENCE, "en-gb", rate_for_speed(1.5)),
        ("One two three.", "fr-fr", 175),
    ]
    assert results == [pcm for _, pcm in recorder.calls]
    assert all(isinstance(pcm, bytes) and len(pcm) % 2 == 0 for pcm in results)
    assert len(results[0]) < len(results[1])


def test_unknown_voice_is_refused_for_pcm16(engine: EspeakEngine) -> None:
    with pytest.raises(UnknownVoiceError, match="no-such-voice"):
        engine.synthesize_pcm16(SynthesisRequest(text="hi", voice="no-such-voice"))
    with pytest.raises(UnknownVoiceError, match="no-such-voice"):
        engine.synthesize_batch_pcm16(
            [SynthesisRequest(text="hi"), SynthesisRequest(text="hi", voice="no-such-voice")]
        )


def test_float_audio_converts_back_to_the_native_pcm16_exactly() -> None:
    library = get_espeak()
    audio = library.synthesize("Round trips keep every sample.", "en-us")
    pcm = np.round(audio * 32768).astype("<i2").tobytes()  # what espeak made natively
    assert to_pcm16(audio) == pcm
