"""Piper voice files -> a ready ``VitsModel`` plus its config."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from voiceops_service.engines.vits.model import VitsModel
from voiceops_service.engines.vits.onnx_weights import (
    VoiceFileError,
    check_conv_attributes,
    infer_hyperparams,
    read_onnx_weights,
    state_dict_for,
)
from voiceops_service.engines.vits.voice import PiperVoiceConfig, VoiceFiles, read_voice_config


@dataclass(frozen=True)
class LoadedVoice:
    files: VoiceFiles
    config: PiperVoiceConfig
    model: VitsModel  # eval mode, fp32, on CPU

    @property
    def name(self) -> str:
        return self.files.name


def load_voice(files: VoiceFiles) -> LoadedVoice:
    """Read config and weights, build the model from the inferred architecture, load it strictly."""
    config = read_voice_config(files.config)
    weights = read_onnx_weights(files.model)
    hp = infer_hyperparams(weights)
    if config.num_symbols != hp.n_vocab:
        raise VoiceFileError(
            f"{files.config.name}: num_symbols {config.num_symbols} but the model's phoneme "
            f"embedding has {hp.n_vocab} rows"
        )
    if config.num_speakers > 1 and hp.n_speakers != config.num_speakers:
        raise VoiceFileError(
            f"{files.config.name}: num_speakers {config.num_speakers} but the model has "
            f"{hp.n_speakers} speaker embeddings"
        )
    model = VitsModel(hp)
    check_conv_attributes(weights, model)
    model.load_state_dict(state_dict_for(weights, model), strict=True)
    model.eval().requires_grad_(False)
    return LoadedVoice(files=files, config=config, model=model)


def parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
