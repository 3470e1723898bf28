"""Phoneme strings -> model input ids, with the Piper voice conventions.

A Piper ``.onnx.json`` carries ``phoneme_id_map`` (one phoneme codepoint -> ids)
with three reserved symbols: ``^`` begins a sequence, ``$`` ends it and ``_`` is
the pad. Piper-trained VITS voices expect: BOS, pad, then every phoneme followed
by a pad, then EOS (``^ _ p1 _ p2 _ ... pn _ $``). Phonemes are Unicode
codepoints after NFD decomposition (the map lists combining marks such as
U+0303 on their own); codepoints the voice does not know are dropped.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BOS = "^"
EOS = "$"
PAD = "_"


class PhonemeMapError(ValueError):
    """The voice's phoneme_id_map lacks a reserved symbol."""


@dataclass(frozen=True)
class PhonemeIds:
    ids: list[int]
    unknown: list[str]  # phonemes that had no id (dropped)


def split_phonemes(
    phonemes: str, replacements: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """The codepoints of an IPA string after NFD, with the voice's ``phoneme_map`` applied."""
    out: list[str] = []
    for symbol in unicodedata.normalize("NFD", phonemes):
        if replacements and symbol in replacements:
            out.extend(replacements[symbol])
        else:
            out.append(symbol)
    return out


def phonemes_to_ids(phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]) -> PhonemeIds:
    """``^ _ (phoneme _)* $`` through ``id_map``; unknown phonemes are reported and dropped."""
    for reserved in (BOS, EOS, PAD):
        if reserved not in id_map:
            raise PhonemeMapError(f"phoneme_id_map has no {reserved!r} entry")
    pad = list(id_map[PAD])
    ids = [*id_map[BOS], *pad]
    unknown: list[str] = []
    for phoneme in phonemes:
        mapped = id_map.get(phoneme)
        if mapped is None:
            unknown.append(phoneme)
            continue
        ids.extend(mapped)
        ids.extend(pad)
    ids.extend(id_map[EOS])
    return PhonemeIds(ids=ids, unknown=unknown)
