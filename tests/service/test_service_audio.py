"""Audio encoding and sentence splitting."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile
from hypothesis import example, given, settings
from hypothesis import strategies as st
from voiceops_service.audio import chunk_text, encode, split_sentences, streaming_wav_header


def tone(seconds: float = 0.5, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_wav_and_flac_round_trip(fmt: str) -> None:
    audio = tone()
    data, rate = soundfile.read(io.BytesIO(encode(audio, 22050, fmt)), dtype="float32")
    assert rate == 22050
    assert data.shape == audio.shape
    assert np.max(np.abs(data - audio)) < 1e-3


def test_pcm_is_s16le_and_clipped() -> None:
    audio = np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5, 1 / 65536, -3 / 65536], dtype=np.float32)
    pcm = encode(audio, 22050, "pcm")
    # x * 32768, rounded (half to even), clipped to int16: the inverse of PCM16 / 32768
    assert struct.unpack("<8h", pcm) == (0, 32767, -32768, 32767, -32768, 16384, 0, -2)


def test_streaming_header_says_unknown_length() -> None:
    header = streaming_wav_header(22050)
    assert len(header) == 44
    assert header[:4] == b"RIFF"
    assert header[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", header[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF
    assert struct.unpack("<HHII", header[20:32]) == (1, 1, 22050, 44100)


def test_splits_at_sentence_ends() -> None:
    text = "First sentence. Second one!  Third?\n\nFourth line"
    assert split_sentences(text) == ["First sentence.", "Second one!", "Third?", "Fourth line"]


def test_long_sentence_splits_at_clauses_then_words_never_mid_word() -> None:
    sentence = "alpha, " * 30 + "omega " * 100
    pieces = split_sentences(sentence, max_chars=50)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces).split() == sentence.split()


def test_single_overlong_word_stays_whole() -> None:
    word = "x" * 120
    assert split_sentences(f"a {word} b", max_chars=50) == ["a", word, "b"]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert split_sentences('He said "stop!" Then left. (Really.) Yes') == [
        'He said "stop!"',
        "Then left.",
        "(Really.)",
        "Yes",
    ]


def test_chunks_pack_sentences() -> None:
    text = "One. Two. Three. " * 50
    chunks = chunk_text(text, max_chars=100)
    assert all(len(c) <= 100 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    assert len(chunks) < len(split_sentences(text))


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("abc .,!?\n")) | st.characters(), max_size=600),
    st.integers(min_value=5, max_value=200),
)
@example("!]\n", 5)  # closing brackets after a sentence end were once dropped
def test_splitting_never_loses_or_cuts_words(text: str, max_chars: int) -> None:
    for splitter in (split_sentences, chunk_text):
        pieces = splitter(text, max_chars)
        assert " ".join(pieces).split() == text.split()
        for piece in pieces:
            assert piece
            assert piece.strip() == piece
            assert len(piece) <= max_chars or " " not in piece
