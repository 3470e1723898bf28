"""Text -> phonemes -> ids with Piper's conventions, checked against the voice's own config."""

from __future__ import annotations

import json

import pytest
from voiceops_service.engines.espeak_lib import phonemize
from voiceops_service.engines.vits.phonemes import (
    PhonemeMapError,
    phonemes_to_ids,
    split_phonemes,
)
from voiceops_service.engines.vits.voice import bundled_voice_files


@pytest.fixture(scope="module")
def id_map() -> dict[str, list[int]]:
    return json.loads(bundled_voice_files().config.read_text(encoding="utf-8"))["phoneme_id_map"]


def test_reserved_symbols_in_the_voice_config(id_map: dict[str, list[int]]) -> None:
    # The convention's three symbols exist in the file with these ids.
    assert (id_map["_"], id_map["^"], id_map["$"]) == ([0], [1], [2])


def test_bos_pad_interleaved_eos(id_map: dict[str, list[int]]) -> None:
    result = phonemes_to_ids(split_phonemes("hˈa."), id_map)
    h, stress, a, stop = id_map["h"][0], id_map["ˈ"][0], id_map["a"][0], id_map["."][0]
    assert result.ids == [1, 0, h, 0, stress, 0, a, 0, stop, 0, 2]
    assert result.unknown == []


def test_real_espeak_phonemes_map_completely(id_map: dict[str, list[int]]) -> None:
    phonemes = phonemize("Hello, world. How are you today?", "en-us")
    assert phonemes.startswith("həlˈoʊ,")
    result = phonemes_to_ids(split_phonemes(phonemes), id_map)
    assert result.unknown == []
    assert len(result.ids) == 2 * len(phonemes) + 3
    assert result.ids[1::2][:-1] == [0] * len(phonemes)  # a pad after BOS and each phoneme


def test_nfd_splits_combining_marks(id_map: dict[str, list[int]]) -> None:
    # "ç" is one codepoint in NFC; the voice knows the base and the combining cedilla.
    assert split_phonemes("ç") == ["c", "\u0327"]
    assert phonemes_to_ids(split_phonemes("ç"), id_map).unknown == []


def test_unknown_phonemes_are_dropped_and_reported(id_map: dict[str, list[int]]) -> None:
    result = phonemes_to_ids(["a", "☃", "b"], id_map)
    assert result.unknown == ["☃"]
    assert result.ids == [1, 0, id_map["a"][0], 0, id_map["b"][0], 0, 2]


def test_phoneme_map_replacements() -> None:
    assert split_phonemes("ab", {"a": ["x", "y"]}) == ["x", "y", "b"]


def test_missing_reserved_symbol_is_an_error() -> None:
    with pytest.raises(PhonemeMapError, match=r"no '\^' entry"):
        phonemes_to_ids(["a"], {"a": [5], "_": [0], "$": [2]})
