"""Model versions for the hot-swap tests and bench, all derived from the bundled joe voice.

No hub downloads: every version is the bundled ``en_US-joe-medium`` weights, with
a config of our own (a "re-export": same weights, another config, so another
digest and audibly other audio) or with weights broken on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from voiceops_service.engines.vits.voice import BUNDLED_VOICE, bundled_voice_files

VOICE_FILE = f"{BUNDLED_VOICE}.onnx"


def reexported(directory: Path, *, length_scale: float = 1.0) -> Path:
    """The bundled weights with noise scales 0 (deterministic audio) and ``length_scale``.

    A directory holding ``en_US-joe-medium.onnx`` (a link to the bundled file) and its
    config; a longer ``length_scale`` speaks slower, so its audio is longer.
    """
    directory.mkdir(parents=True, exist_ok=True)
    bundled = bundled_voice_files()
    (directory / VOICE_FILE).symlink_to(bundled.model)
    config = json.loads(bundled.config.read_text(encoding="utf-8"))
    config["inference"].update(noise_scale=0.0, noise_w=0.0, length_scale=length_scale)
    (directory / f"{VOICE_FILE}.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


def nan_weights(directory: Path) -> Path:
    """A well-formed export whose decoder output layer is NaN: it loads, but speaks NaN."""
    directory.mkdir(parents=True, exist_ok=True)
    bundled = bundled_voice_files()
    model = onnx.load(str(bundled.model))
    conv_post = next(node for node in model.graph.node if node.name == "/dec/conv_post/Conv")
    for tensor in model.graph.initializer:
        if tensor.name == conv_post.input[1]:
            broken = np.full(numpy_helper.to_array(tensor).shape, np.nan, dtype=np.float32)
            tensor.CopyFrom(numpy_helper.from_array(broken, tensor.name))
    onnx.save(model, str(directory / VOICE_FILE))
    (directory / f"{VOICE_FILE}.json").write_bytes(bundled.config.read_bytes())
    return directory


def truncated(directory: Path) -> Path:
    """The first MiB of the weights only: not a readable ONNX model."""
    directory.mkdir(parents=True, exist_ok=True)
    bundled = bundled_voice_files()
    with bundled.model.open("rb") as source:
        (directory / VOICE_FILE).write_bytes(source.read(2**20))
    (directory / f"{VOICE_FILE}.json").write_bytes(bundled.config.read_bytes())
    return directory


def file_uri(directory: Path) -> str:
    return f"file://{directory.resolve()}"
