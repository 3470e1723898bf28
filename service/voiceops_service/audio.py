"""Audio encoding (wav, pcm s16le, flac) and splitting long input into sentence chunks."""

from __future__ import annotations

import io
import re
import struct
from typing import Literal

import numpy as np
import soundfile

from voiceops_service.engines.base import Audio, to_pcm16

ResponseFormat = Literal["wav", "pcm", "flac"]
SUPPORTED_FORMATS: tuple[str, ...] = ("wav", "pcm", "flac")
# Formats OpenAI offers that need an encoder this image does not ship.
UNSUPPORTED_FORMATS: tuple[str, ...] = ("mp3", "opus", "aac")
MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}

DEFAULT_CHUNK_CHARS = 400  # per engine call: VITS attention cost grows with length

# The group keeps closing quotes/brackets with their sentence (re.split returns it).
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])([\"')\]]*)\s+|\n\s*\n|\n")
_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+")
_WHITESPACE = re.compile(r"\s+")


PCM_FORMATS: tuple[str, ...] = ("wav", "pcm")  # 16-bit PCM payloads, built chunk by chunk


def wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV file."""
    return (
        b"RIFF"
        + struct.pack("<I", (36 + data_bytes) & 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes & 0xFFFFFFFF)
    )


def encode(audio: Audio, sample_rate: int, response_format: ResponseFormat) -> bytes:
    if response_format == "pcm":
        return to_pcm16(audio)
    if response_format == "wav":  # by hand: libsndfile via BytesIO costs ~30x more here
        pcm = to_pcm16(audio)
        return wav_header(sample_rate, len(pcm)) + pcm
    buffer = io.BytesIO()
    soundfile.write(
        buffer,
        np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0),
        sample_rate,
        format=response_format.upper(),
        subtype="PCM_16",
    )
    return buffer.getvalue()


def streaming_wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say "unknown" (0xFFFFFFFF), for streaming."""
    header = bytearray(wav_header(sample_rate, 0))
    header[4:8] = header[40:44] = struct.pack("<I", 0xFFFFFFFF)
    return bytes(header)


def _split_long(piece: str, max_chars: int) -> list[str]:
    """Split one over-long sentence at clause punctuation, then at spaces; never inside a word."""
    if len(piece) <= max_chars:
        return [piece]
    out: list[str] = []
    for clause in _CLAUSE_END.split(piece):
        if len(clause) <= max_chars:
            out.append(clause)
            continue
        current = ""
        for word in clause.split(" "):
            candidate = f"{current} {word}" if current else word
            if len(candidate) <= max_chars or not current:
                current = candidate  # a single word longer than max_chars stays whole
            else:
                out.append(current)
                current = word
        if current:
            out.append(current)
    return _merge(out, max_chars)


def _merge(pieces: list[str], max_chars: int) -> list[str]:
    merged: list[str] = []
    for piece in pieces:
        if merged and len(merged[-1]) + 1 + len(piece) <= max_chars:
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged


def split_sentences(text: str, max_chars: int = DEFAULT_CHUNK_CHARS) -> list[str]:
    """Sentences of ``text``, each at most ``max_chars`` unless one word is longer.

    Every non-space character of the input appears in the output, in order.
    """
    parts = _SENTENCE_END.split(text)  # [text, closers, text, closers, ..., text]
    raws = [parts[0]]
    for closers, following in zip(parts[1::2], parts[2::2], strict=True):
        raws[-1] += closers or ""
        raws.append(following)
    sentences: list[str] = []
    for raw in raws:
        sentence = _WHITESPACE.sub(" ", raw).strip()
        if sentence:
            sentences.extend(_split_long(sentence, max_chars))
    return sentences


def chunk_text(text: str, max_chars: int = DEFAULT_CHUNK_CHARS) -> list[str]:
    """Whole sentences packed greedily into chunks of at most ``max_chars``."""
    return _merge(split_sentences(text, max_chars), max_chars)
