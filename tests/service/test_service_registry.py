"""The engine registry builds engines by name and imports heavy ones only on demand."""

from __future__ import annotations

import subprocess
import sys

import pytest
from voiceops_service.engines.espeak import EspeakEngine
from voiceops_service.engines.registry import EngineUnavailableError, create_engine
from voiceops_service.settings import ServiceSettings


def test_espeak_engine_uses_the_voice_setting() -> None:
    engine = create_engine("espeak", ServiceSettings(engine="espeak", voice="en-gb"))
    assert isinstance(engine, EspeakEngine)
    assert engine.default_voice == "en-gb"


def test_fallback_espeak_uses_the_fallback_voice() -> None:
    settings = ServiceSettings(engine="vits", voice="en_US-joe-medium", fallback_voice="en-us")
    assert create_engine("espeak", settings).default_voice == "en-us"


def test_unknown_engine_names_the_known_ones() -> None:
    with pytest.raises(EngineUnavailableError, match="espeak, vits"):
        create_engine("kokoro", ServiceSettings())


def test_espeak_service_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from voiceops_service.app import create_app\n"
        "from voiceops_service.engines.registry import create_engine\n"
        "from voiceops_service.settings import ServiceSettings\n"
        "create_app(ServiceSettings())\n"
        "create_engine('espeak', ServiceSettings()).load()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
