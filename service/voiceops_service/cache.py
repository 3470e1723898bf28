"""The audio cache: finished answers to short inputs, least recently used out, within a byte bound.

TTS traffic repeats itself (prompts, menus, greetings). An answer is keyed by
the model version that spoke it, the voice, speed, format and the normalised
text, so a swap changes every key: no audio of the old model is served after
it (and its entries are dropped at the swap rather than left to age out).

An answer is stored only when nothing it depends on changed while it was made:
no model swap (``VersionedEngine.unchanged_since``) and no CUDA OOM on the way
(which may have had the in-process fallback engine speak it). Streaming answers
and inputs longer than ``audio_cache_max_chars`` are never cached, nor is anything
while an engine fault is injected; a byte bound of 0 turns the cache off.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cachetools import LRUCache
from voiceops_contract import pod

if TYPE_CHECKING:
    from voiceops_service.faults import FaultState
    from voiceops_service.metrics import ServiceMetrics
    from voiceops_service.models import ModelVersion, VersionedEngine, VersionStamp
    from voiceops_service.resilience import OomGuard
    from voiceops_service.speech import SpeechPlan

ENTRY_OVERHEAD_BYTES = 256  # key, headers and bookkeeping, counted against the bound


def normalise_text(text: str) -> str:
    """NFC, whitespace runs as one space, no leading or trailing space."""
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass(frozen=True)
class AudioKey:
    model_version: str
    voice: str
    speed: float
    response_format: str
    text: str  # normalised


@dataclass(frozen=True)
class CachedAudio:
    parts: tuple[bytes, ...]  # the answer's body as it was sent (wav header first)
    headers: tuple[tuple[str, str], ...]

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts) + ENTRY_OVERHEAD_BYTES


@dataclass(frozen=True)
class CacheTicket:
    """A cacheable request: its key and what must not change before its answer is stored."""

    key: AudioKey
    stamp: VersionStamp
    oom_count: int


class _CountingLru(LRUCache[AudioKey, CachedAudio]):
    """cachetools' LRU bounded by entry sizes; counts what it evicts to stay in bound."""

    def __init__(self, max_bytes: int, metrics: ServiceMetrics) -> None:
        super().__init__(max_bytes, getsizeof=lambda entry: entry.size)
        self._metrics = metrics

    def popitem(self) -> tuple[AudioKey, CachedAudio]:
        item = super().popitem()
        self._metrics.audio_cache_evictions_total.labels(reason="capacity").inc()
        return item


class AudioCache:
    """Used on the event loop only (no lock): lookups and stores are plain dict work."""

    def __init__(self, max_bytes: int, max_chars: int, metrics: ServiceMetrics) -> None:
        self.max_bytes = max_bytes
        self.max_chars = max_chars
        self._metrics = metrics
        self._entries = _CountingLru(max(max_bytes, 1), metrics)
        metrics.audio_cache_bytes.set(0)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def bytes(self) -> int:
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    def ticket(
        self,
        text: str,
        plan: SpeechPlan,
        speed: float,
        versions: VersionedEngine,
        guard: OomGuard,
        faults: FaultState | None = None,
    ) -> CacheTicket | None:
        """The request's ticket, or None when it is not cacheable.

        Injected engine faults (delay, OOM) are meant to reach every request, as a
        real engine fault would reach the requests it serves: none is cached meanwhile.
        """
        if not self.enabled or plan.stream or len(text) > self.max_chars:
            return None
        if faults is not None:
            injected = faults.snapshot()
            if injected.engine_delay_seconds > 0 or injected.oom_next_calls > 0:
                return None
        stamp = versions.stamp()
        key = AudioKey(stamp.version, plan.voice, speed, plan.response_format, normalise_text(text))
        return CacheTicket(key=key, stamp=stamp, oom_count=guard.oom_count)

    def get(self, ticket: CacheTicket) -> CachedAudio | None:
        entry = self._entries.get(ticket.key)
        if entry is None:
            self._metrics.audio_cache_misses_total.inc()
        else:
            self._metrics.audio_cache_hits_total.inc()
        return entry

    def store(
        self,
        ticket: CacheTicket,
        parts: Sequence[bytes],
        headers: dict[str, str],
        versions: VersionedEngine,
        guard: OomGuard,
    ) -> bool:
        """Keep the answer if the model that spoke it is the ticket's; True when kept."""
        if not versions.unchanged_since(ticket.stamp):
            return False
        if guard.oom_count != ticket.oom_count or guard.degraded:
            return False
        entry = CachedAudio(
            parts=tuple(parts),
            headers=tuple({**headers, pod.HEADER_AUDIO_CACHE: "hit"}.items()),
        )
        if entry.size > self.max_bytes:
            return False
        self._entries[ticket.key] = entry
        self._metrics.audio_cache_bytes.set(self.bytes)
        return True

    def keep_only(self, version: ModelVersion) -> None:
        """Drop every other version's audio (called at a swap)."""
        stale = [key for key in self._entries if key.model_version != version.version]
        for key in stale:
            del self._entries[key]
        if stale:
            self._metrics.audio_cache_evictions_total.labels(reason="model_swap").inc(len(stale))
        self._metrics.audio_cache_bytes.set(self.bytes)
