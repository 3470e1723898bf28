"""The tiny CPU engine: libespeak-ng formant synthesis (the fallback tier's voice).

Concurrency: libespeak-ng is not thread-safe, so every call holds the shared
library lock (:mod:`.espeak_lib`); the engine reports ``thread_safe = False``
and the service runs it on one worker at a time (bench/README.md has its timings).
"""

from __future__ import annotations

from collections.abc import Sequence

from voiceops_service.engines.base import (
    Audio,
    Engine,
    Pcm16,
    SynthesisRequest,
    UnknownVoiceError,
    VoiceInfo,
)
from voiceops_service.engines.espeak_lib import (
    RATE_DEFAULT_WPM,
    RATE_MAX_WPM,
    RATE_MIN_WPM,
    EspeakLibrary,
    get_espeak,
)

DEFAULT_VOICE = "en-us"


def rate_for_speed(speed: float) -> int:
    """espeak words-per-minute for an OpenAI ``speed`` (1.0 = 175 wpm), clamped to espeak's range.

    espeak-ng honours 80..450 wpm, i.e. speeds of about 0.46..2.57; outside that
    the nearest supported rate is used.
    """
    return min(max(round(RATE_DEFAULT_WPM * speed), RATE_MIN_WPM), RATE_MAX_WPM)


class EspeakEngine(Engine):
    name = "espeak"

    def __init__(self, default_voice: str = "") -> None:
        self._requested_default = default_voice or DEFAULT_VOICE
        self._library: EspeakLibrary | None = None
        self.version = "unloaded"

    @property
    def _lib(self) -> EspeakLibrary:
        if self._library is None:
            raise RuntimeError("EspeakEngine.load() was not called")
        return self._library

    @property
    def sample_rate(self) -> int:
        return self._lib.sample_rate

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def default_voice(self) -> str:
        return self._requested_default

    def load(self) -> None:
        library = get_espeak()
        if not library.has_voice(self._requested_default):
            raise UnknownVoiceError(self._requested_default, [v.name for v in library.voices()])
        self._library = library
        self.version = f"libespeak-ng {library.version}"

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(
                name=voice.name,
                language=voice.language,
                sample_rate=self._lib.sample_rate,
                engine=self.name,
            )
            for voice in self._lib.voices()
        ]

    def _voice(self, request: SynthesisRequest) -> str:
        voice = request.voice or self._requested_default
        if not self._lib.has_voice(voice):
            raise UnknownVoiceError(voice, [v.name for v in self._lib.voices()])
        return voice

    def synthesize(self, request: SynthesisRequest) -> Audio:
        voice = self._voice(request)
        return self._lib.synthesize(request.text, voice, rate_for_speed(request.speed))

    def synthesize_pcm16(self, request: SynthesisRequest) -> Pcm16:
        """espeak's native output, no float round trip (what wav and pcm answers carry)."""
        voice = self._voice(request)
        return self._lib.synthesize_pcm16(request.text, voice, rate_for_speed(request.speed))

    def synthesize_batch_pcm16(self, requests: Sequence[SynthesisRequest]) -> list[Pcm16]:
        return [self.synthesize_pcm16(request) for request in requests]
