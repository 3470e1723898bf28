"""The engine interface every speech engine implements.

The HTTP layer, the batcher and the OOM guard only ever see this interface, so
a new engine (Kokoro, say) plugs in without touching them. Engines are
synchronous and are called from worker threads; an engine says whether it is
safe to call from several threads at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Audio = npt.NDArray[np.float32]  # mono samples in [-1, 1] at Engine.sample_rate
Pcm16 = bytes  # the same audio as little-endian signed 16-bit samples (wav and pcm answers)


def to_pcm16(audio: Audio) -> Pcm16:
    """Little-endian signed 16-bit samples: x * 32768 rounded, clipped to the int16 range.

    The exact inverse of PCM16 / 32768 (how espeak's float audio is made), so
    float and native PCM16 paths give the same bytes.
    """
    scaled = np.multiply(audio, 32768.0, dtype=np.float32)  # one temporary, edited in place
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    return scaled.astype("<i2").tobytes()


class EngineError(Exception):
    """A request the engine cannot serve (bad voice, text it cannot phonemise)."""


class UnknownVoiceError(EngineError):
    def __init__(self, voice: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown voice {voice!r}; known voices: {', '.join(known)}")
        self.voice = voice


@dataclass(frozen=True)
class VoiceInfo:
    name: str  # what clients pass as `voice`
    language: str  # BCP-47-ish, e.g. "en-US"
    sample_rate: int
    speakers: int = 1  # multi-speaker voices: speaker ids 0..speakers-1
    engine: str = ""


@dataclass(frozen=True)
class SynthesisRequest:
    text: str  # one chunk of text (the API splits long input at sentence boundaries)
    voice: str | None = None  # None = the engine's default voice
    speed: float = 1.0  # 0.25..4.0, >1 is faster
    speaker_id: int | None = None
    options: dict[str, float] = field(default_factory=dict)  # engine-specific knobs


@dataclass(frozen=True)
class MemoryHint:
    """What one more item in a batch roughly costs, for memory-aware batch caps."""

    static_bytes: int  # weights and workspace, paid once
    bytes_per_item: int  # extra memory per batched request of typical length


class Engine(ABC):
    name: str  # "espeak", "vits"
    version: str  # engine/library version string for voiceops_engine_info

    @property
    @abstractmethod
    def sample_rate(self) -> int: ...

    @property
    @abstractmethod
    def device(self) -> str:
        """ "cpu" or "cuda[:N]": where inference actually runs."""

    @property
    def thread_safe(self) -> bool:
        """True when synthesize may run in several threads at once."""
        return False

    @property
    def supports_batching(self) -> bool:
        """True when synthesize_batch does one forward pass for many requests."""
        return False

    @property
    def default_voice(self) -> str:
        return self.voices()[0].name

    @abstractmethod
    def load(self) -> None:
        """Load weights/libraries. Slow; called once from the app's lifespan."""

    def warm_up(self) -> None:
        """Run one short synthesis so the first real request is not slow."""
        self.synthesize(SynthesisRequest(text="Warming up."))

    @abstractmethod
    def voices(self) -> list[VoiceInfo]: ...

    @abstractmethod
    def synthesize(self, request: SynthesisRequest) -> Audio: ...

    def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        """One result per request, in order. Batching engines override this."""
        return [self.synthesize(r) for r in requests]

    def synthesize_batch_pcm16(self, requests: Sequence[SynthesisRequest]) -> list[Pcm16]:
        """:meth:`synthesize_batch` as 16-bit PCM. Engines that make PCM16 natively
        (espeak) override this and skip the float round trip."""
        return [to_pcm16(audio) for audio in self.synthesize_batch(requests)]

    def memory_hint(self) -> MemoryHint | None:
        """None when the engine does not use accelerator memory."""
        return None

    def close(self) -> None:
        """Release resources; called from the app's lifespan on shutdown."""
        return None
