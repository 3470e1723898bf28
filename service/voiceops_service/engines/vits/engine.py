"""``VitsEngine``: Piper voices on our torch VITS, batched, on CUDA or CPU.

One request: text -> espeak-ng IPA (the shared libespeak-ng binding) -> ids
(``phonemes``) -> ``VitsModel.infer``. A batch is sorted by length and cut
into forward passes whose padded id count stays under a budget; inside a pass
the flow and decoder pack short requests beside each other instead of padding
them up to a long neighbour.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from voiceops_service import __version__
from voiceops_service.engines.base import (
    Audio,
    Engine,
    EngineError,
    MemoryHint,
    SynthesisRequest,
    UnknownVoiceError,
    VoiceInfo,
)
from voiceops_service.engines.espeak_lib import phonemize
from voiceops_service.engines.vits.cpu_tuning import keep_large_allocations_in_heap
from voiceops_service.engines.vits.loader import LoadedVoice, load_voice, parameter_bytes
from voiceops_service.engines.vits.model import SynthesisScales
from voiceops_service.engines.vits.phonemes import phonemes_to_ids, split_phonemes
from voiceops_service.engines.vits.voice import bundled_voice_files, find_voice_files

if TYPE_CHECKING:
    from voiceops_service.settings import ServiceSettings

log = logging.getLogger(__name__)

DeviceChoice = Literal["auto", "cpu", "cuda"]
OPTION_NAMES = frozenset({"noise_scale", "noise_w", "length_scale"})
# Padded phoneme ids per forward pass. Only the text side pads: the flow and
# decoder pack mixed lengths into rows (VitsModel.infer), so any mix of
# requests can share a pass.
DEFAULT_PASS_BUDGET = {"cpu": 4096, "cuda": 16384}
# ~150 characters: the "typical request" the per-item memory cost is measured on.
MEASURE_TEXT = (
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the "
    "quiet green forest to rest until the morning comes again."
)


@dataclass(frozen=True)
class VitsOptions:
    model_path: str = ""  # Piper .onnx file or directory; "" = the bundled joe voice
    voice: str = ""  # voice name (file stem) to pick in a directory; "" = the only one
    device: DeviceChoice = "auto"
    fp16: bool = False  # flow + decoder in half precision (CUDA only)
    pass_budget_ids: int | None = None  # padded ids per forward pass; None = per device
    seed: int | None = None  # noise generator seed (None = random)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> VitsOptions:
        return cls(
            model_path=settings.model_path,
            voice=settings.voice,
            device=settings.device,
            fp16=settings.fp16,
        )


@dataclass(frozen=True)
class PreparedText:
    ids: list[int]
    scales: tuple[float, float, float]  # noise, length, noise_w
    speaker_id: int


def resolve_device(choice: DeviceChoice) -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if choice == "cuda":
        raise EngineError("device 'cuda' requested but torch sees no CUDA GPU")
    return torch.device("cpu")


class VitsEngine(Engine):
    name = "vits"

    def __init__(self, options: VitsOptions | None = None) -> None:
        self.options = options or VitsOptions()
        self.version = f"voiceops-vits {__version__} (torch {torch.__version__})"
        self._voice: LoadedVoice | None = None
        self._device = torch.device("cpu")
        self._fp16 = False
        self._generator: torch.Generator | None = None
        self._bytes_per_item: int | None = None
        self._lock = threading.Lock()  # one forward pass at a time per engine

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> VitsEngine:
        return cls(VitsOptions.from_settings(settings))

    # --- Engine properties -------------------------------------------------------------
    @property
    def voice(self) -> LoadedVoice:
        if self._voice is None:
            raise RuntimeError("VitsEngine.load() was not called")
        return self._voice

    @property
    def sample_rate(self) -> int:
        return self.voice.config.audio.sample_rate

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def fp16(self) -> bool:
        return self._fp16

    @property
    def supports_batching(self) -> bool:
        return True

    @property
    def default_voice(self) -> str:
        return self.voice.name

    @property
    def pass_budget_ids(self) -> int:
        return self.options.pass_budget_ids or DEFAULT_PASS_BUDGET[self._device.type]

    # --- lifecycle -----------------------------------------------------------------------
    def load(self) -> None:
        opts = self.options
        files = (
            find_voice_files(opts.model_path, opts.voice)
            if opts.model_path
            else bundled_voice_files()
        )
        if opts.voice and opts.voice != files.name:
            raise UnknownVoiceError(opts.voice, [files.name])
        device = resolve_device(opts.device)
        if device.type == "cpu":
            keep_large_allocations_in_heap()
        voice = load_voice(files)
        voice.model.to(device)
        self._fp16 = opts.fp16 and device.type == "cuda"
        if opts.fp16 and not self._fp16:
            log.warning("fp16 requested but running on %s: using fp32", device)
        if self._fp16:
            voice.model.use_half_precision_synthesis()
        self._device = device
        self._generator = torch.Generator(device=device)
        if opts.seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(opts.seed)
        self._voice = voice
        log.info("vits voice %s loaded on %s (fp16 %s)", files.name, device, self._fp16)

    def warm_up(self) -> None:
        """One short pass, then (on CUDA) measure the peak memory of a typical request."""
        self.synthesize(SynthesisRequest(text="Warming up."))
        if self._device.type != "cuda":
            return
        torch.cuda.synchronize(self._device)
        before = torch.cuda.memory_allocated(self._device)
        torch.cuda.reset_peak_memory_stats(self._device)
        self.synthesize(SynthesisRequest(text=MEASURE_TEXT))
        peak = torch.cuda.max_memory_allocated(self._device)
        self._bytes_per_item = max(peak - before, 1)

    def close(self) -> None:
        self._voice = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def voices(self) -> list[VoiceInfo]:
        config = self.voice.config
        language = config.language.code.replace("_", "-") or config.espeak.voice
        return [
            VoiceInfo(
                name=self.voice.name,
                language=language,
                sample_rate=config.audio.sample_rate,
                speakers=config.num_speakers,
                engine=self.name,
            )
        ]

    def memory_hint(self) -> MemoryHint | None:
        if self._device.type != "cuda" or self._voice is None:
            return None
        static = parameter_bytes(self._voice.model)
        return MemoryHint(static_bytes=static, bytes_per_item=self._bytes_per_item or static)

    # --- synthesis -------------------------------------------------------------------------
    def prepare(self, request: SynthesisRequest) -> PreparedText:
        """Validate one request and turn its text into ids; EngineError names the bad field."""
        voice = self.voice
        if request.voice not in (None, "", voice.name):
            raise UnknownVoiceError(request.voice, [voice.name])
        if not request.speed > 0:
            raise EngineError(f"speed must be > 0, got {request.speed}")
        unknown = set(request.options) - OPTION_NAMES
        if unknown:
            raise EngineError(
                f"unknown options {sorted(unknown)}; vits accepts {sorted(OPTION_NAMES)}"
            )
        for key, value in request.options.items():
            if not value >= 0:
                raise EngineError(f"option {key} must be >= 0, got {value}")
        speakers = voice.config.num_speakers
        speaker = 0 if request.speaker_id is None else request.speaker_id
        if not 0 <= speaker < speakers:
            raise EngineError(f"speaker_id must be in 0..{speakers - 1}, got {speaker}")

        config = voice.config
        phonemes = phonemize(request.text, config.espeak.voice)
        converted = phonemes_to_ids(
            split_phonemes(phonemes, config.phoneme_map), config.phoneme_id_map
        )
        if converted.unknown:
            log.debug("dropped phonemes unknown to %s: %s", voice.name, converted.unknown)
        if len(converted.ids) <= 3:  # only ^ _ $: nothing to speak
            raise EngineError(f"text has nothing speakable: {request.text[:40]!r}")
        inference = config.inference
        length = request.options.get("length_scale", inference.length_scale) / request.speed
        scales = (
            request.options.get("noise_scale", inference.noise_scale),
            length,
            request.options.get("noise_w", inference.noise_w),
        )
        return PreparedText(ids=converted.ids, scales=scales, speaker_id=speaker)

    def synthesize(self, request: SynthesisRequest) -> Audio:
        return self.synthesize_batch([request])[0]

    def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> list[Audio]:
        prepared = [self.prepare(request) for request in requests]
        return self.synthesize_prepared(prepared)

    def synthesize_prepared(self, items: Sequence[PreparedText]) -> list[Audio]:
        """Audio per item, in order; forward passes grouped by length under the budget."""
        results: list[Audio | None] = [None] * len(items)
        lengths = [len(item.ids) for item in items]
        for group in plan_passes(lengths, self.pass_budget_ids):
            audio = self._forward([items[i] for i in group])
            for index, samples in zip(group, audio, strict=True):
                results[index] = samples
        return [r if r is not None else np.zeros(0, dtype=np.float32) for r in results]

    def _forward(self, items: Sequence[PreparedText]) -> list[Audio]:
        model = self.voice.model
        device = self._device
        longest = max(len(item.ids) for item in items)
        ids = torch.zeros(len(items), longest, dtype=torch.long)
        for row, item in enumerate(items):
            ids[row, : len(item.ids)] = torch.tensor(item.ids, dtype=torch.long)
        lengths = torch.tensor([len(item.ids) for item in items], dtype=torch.long)
        scale_rows = torch.tensor([item.scales for item in items], dtype=torch.float32)
        speakers = torch.tensor([item.speaker_id for item in items], dtype=torch.long)
        scales = SynthesisScales(
            noise=scale_rows[:, 0].to(device),
            length=scale_rows[:, 1].to(device),
            noise_w=scale_rows[:, 2].to(device),
        )
        with self._lock, torch.inference_mode():
            audio, audio_lengths = model.infer(
                ids.to(device),
                lengths.to(device),
                scales,
                speaker_ids=speakers.to(device),
                generator=self._generator,
            )
            audio = audio.cpu()
            audio_lengths = audio_lengths.cpu()
        return [
            audio[row, : int(audio_lengths[row])].numpy().astype(np.float32, copy=True)
            for row in range(len(items))
        ]


def plan_passes(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices grouped into forward passes: longest first, padded ids <= budget.

    The text side pads each pass to its longest item (the flow and decoder
    pack, so lengths may mix); an item longer than the budget still gets a
    pass of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    passes: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and lengths[current[0]] * (len(current) + 1) > budget:
            passes.append(current)  # sorted descending: current[0] is the longest
            current = []
        current.append(index)
    if current:
        passes.append(current)
    return passes
