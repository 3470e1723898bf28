"""One process-wide binding to libespeak-ng (from the ``espeakng-loader`` wheel) via ctypes.

libespeak-ng keeps its state (current voice, rate, output callback) in C
globals and is not thread-safe, so a process gets exactly one
:class:`EspeakLibrary` (:func:`get_espeak`) and every call into the library
holds its lock. Both the ``espeak`` engine (synthesis) and the ``vits`` engine
(phonemisation) go through it, so they can never race each other.

Public API (used by the VITS engine)::

    from voiceops_service.engines.espeak_lib import get_espeak, phonemize
    phonemize("Hello, world.", "en-us")  # -> "həlˈoʊ, wˈɜːld."
    get_espeak().phonemize_clause("hello", "en-us")  # no punctuation handling
    get_espeak().synthesize("Hello.", "en-us", rate_wpm=175)  # float32 mono, 22050 Hz
    get_espeak().synthesize_pcm16("Hello.", "en-us")  # the same as s16le bytes (native)

espeak-ng is GPL-3.0: we only load the shared library at run time and call its
public C API; no espeak-ng code is copied here.
"""

from __future__ import annotations

import ctypes
import functools
import re
import sys
import threading
from dataclasses import dataclass

import espeakng_loader
import numpy as np

from voiceops_service.engines.base import Audio

# Public C API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PHONEMES_IPA = 0x02
_PARAM_RATE = 1
_EE_OK = 0
# Audio per synth callback. espeak's default (60 ms) meant ~190 callbacks, each a
# GIL round trip, for a 200-character request; 1 s (44 KB) costs 4 % less time.
_BUFFER_MS = 1000

RATE_DEFAULT_WPM = 175  # espeak-ng's own default speaking rate
RATE_MIN_WPM = 80  # espeak-ng clamps below this
RATE_MAX_WPM = 450  # espeak-ng's rate ceiling (espeakRATE_MAXIMUM)

# Punctuation that ends a clause: kept in phoneme strings because VITS voices
# trained on Piper data expect it (TextToPhonemes itself drops it).
_CLAUSE_PUNCTUATION = re.compile(r"\s*([,.;:!?]+)\s*")

# The samples arrive as a plain address: a POINTER(c_short) argument would cost
# a ctypes object per call, and ctypes.string_at copies straight from the address.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)


class _EspeakVoiceStruct(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, name, NUL)* then NUL
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


@dataclass(frozen=True)
class EspeakVoice:
    name: str  # what espeak_SetVoiceByName accepts, e.g. "en-us"
    language: str  # same code, BCP-47-ish
    description: str  # espeak's own voice name, e.g. "English_(America)"


class EspeakError(RuntimeError):
    """libespeak-ng refused a call (unknown voice, failed init)."""


class EspeakLibrary:
    """The loaded library plus the lock that serialises every call into it."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._declare_signatures()
        self.lock = threading.Lock()
        data_path = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {rate}); data at {data_path!r}")
        self.sample_rate: int = rate
        self._chunks: list[bytes] = []
        # Keep a reference: ctypes frees the trampoline when the object dies.
        self._callback = _SynthCallback(self._on_samples)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._current_voice: str | None = None
        data_dir = ctypes.c_char_p()
        self.version: str = (self._lib.espeak_Info(ctypes.byref(data_dir)) or b"unknown").decode()
        self._voices = self._list_voices()
        self._voices_by_name = {voice.name: voice for voice in self._voices}

    def _declare_signatures(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoiceStruct))
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p

    def _on_samples(self, wav: int | None, count: int, _events: int) -> int:
        # Called from inside espeak_Synth (so under the lock) about every 200 ms of
        # audio. One bytes copy per call: np.ctypeslib.as_array here built a new
        # ctypes array type per call and cost ~10 % of a whole synthesis.
        if count > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0  # 0 = continue synthesis

    def _list_voices(self) -> list[EspeakVoice]:
        array = self._lib.espeak_ListVoices(None)
        voices: dict[str, EspeakVoice] = {}
        index = 0
        while array[index]:
            entry = array[index].contents
            languages = ctypes.string_at(entry.languages + 1)  # skip the priority byte
            code = languages.decode(errors="replace")
            if code and code not in voices:
                voices[code] = EspeakVoice(
                    name=code,
                    language=code,
                    description=(entry.name or b"").decode(errors="replace"),
                )
            index += 1
        # Some voices in the wheel lack their dictionary file; they say nothing at all.
        usable = [voice for voice in voices.values() if self._probe(voice)]
        self._current_voice = None
        return sorted(usable, key=lambda voice: voice.name)

    def _probe(self, voice: EspeakVoice) -> bool:
        with self.lock:
            if self._lib.espeak_SetVoiceByName(voice.description.encode()) != _EE_OK:
                return False
            return bool(self._text_to_phonemes("a"))

    def voices(self) -> list[EspeakVoice]:
        return list(self._voices)

    def has_voice(self, name: str) -> bool:
        return name in self._voices_by_name

    def _select_voice(self, voice: str) -> None:
        """Caller holds the lock."""
        if voice == self._current_voice:
            return
        if voice not in self._voices_by_name:
            raise EspeakError(f"unknown espeak voice {voice!r}")
        # By espeak's voice name: not every language code is a selectable name.
        status = self._lib.espeak_SetVoiceByName(self._voices_by_name[voice].description.encode())
        if status != _EE_OK:
            raise EspeakError(f"espeak_SetVoiceByName({voice!r}) failed with status {status}")
        self._current_voice = voice

    def synthesize_pcm16(self, text: str, voice: str, rate_wpm: int = RATE_DEFAULT_WPM) -> bytes:
        """Speak ``text``; little-endian signed 16-bit mono at :attr:`sample_rate`.

        espeak's own output format, so no conversion: the service's wav and pcm
        answers are these bytes.
        """
        rate = min(max(int(rate_wpm), RATE_MIN_WPM), RATE_MAX_WPM)
        encoded = text.encode("utf-8", errors="replace").replace(b"\0", b" ") + b"\0"
        buffer = ctypes.create_string_buffer(encoded, len(encoded))
        with self.lock:
            self._select_voice(voice)
            self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            self._chunks = []
            status = self._lib.espeak_Synth(
                buffer, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with status {status}")
        pcm = b"".join(chunks)
        if sys.byteorder == "big":  # espeak writes native-endian shorts
            pcm = np.frombuffer(pcm, dtype=">i2").astype("<i2").tobytes()
        return pcm

    def synthesize(self, text: str, voice: str, rate_wpm: int = RATE_DEFAULT_WPM) -> Audio:
        """Speak ``text``; float32 mono samples in [-1, 1) at :attr:`sample_rate`."""
        pcm = self.synthesize_pcm16(text, voice, rate_wpm)
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        audio *= np.float32(1 / 32768)
        return audio

    def _text_to_phonemes(self, text: str) -> str:
        """Caller holds the lock and has selected the voice."""
        encoded = text.encode("utf-8", errors="replace").replace(b"\0", b" ") + b"\0"
        buffer = ctypes.create_string_buffer(encoded, len(encoded))
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        parts: list[str] = []
        # TextToPhonemes returns one clause per call and advances the pointer until NULL.
        while pointer.value:
            result = self._lib.espeak_TextToPhonemes(
                ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA
            )
            if result:
                parts.append(result.decode("utf-8", errors="replace").strip())
        return " ".join(part for part in parts if part)

    def phonemize_clause(self, text: str, voice: str) -> str:
        """IPA phonemes for ``text`` as espeak-ng gives them (punctuation dropped)."""
        with self.lock:
            self._select_voice(voice)
            return self._text_to_phonemes(text)

    def phonemize(self, text: str, voice: str) -> str:
        """IPA phonemes with clause punctuation kept, e.g. ``"həlˈoʊ, wˈɜːld."``."""
        pieces = _CLAUSE_PUNCTUATION.split(text)
        # split() with one group alternates text, punctuation, text, ...
        out: list[str] = []
        for index in range(0, len(pieces), 2):
            phonemes = self.phonemize_clause(pieces[index], voice) if pieces[index].strip() else ""
            punctuation = pieces[index + 1] if index + 1 < len(pieces) else ""
            chunk = phonemes + punctuation
            if chunk:
                out.append(chunk)
        return " ".join(out)


@functools.cache
def get_espeak() -> EspeakLibrary:
    """The process's one libespeak-ng handle (the C library is a process global)."""
    return EspeakLibrary()


def phonemize(text: str, voice: str = "en-us") -> str:
    """Text to IPA phonemes through the shared libespeak-ng, punctuation kept."""
    return get_espeak().phonemize(text, voice)
