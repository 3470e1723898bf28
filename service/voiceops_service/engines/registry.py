"""Engines by name, imported lazily so an engine's heavy imports (torch) load only when used.

Contract for an engine module: it exposes ``create_engine(settings) -> Engine``
or a class ``<Name>Engine`` whose constructor takes the settings object
(``VitsEngine(settings)``). The app calls ``create_engine(settings.engine, settings)``
then ``engine.load()`` and ``engine.warm_up()`` in a worker thread.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from voiceops_service.engines.base import Engine

if TYPE_CHECKING:
    from voiceops_service.settings import ServiceSettings

ENGINE_MODULES: dict[str, tuple[str, str]] = {
    # name -> (module, class tried when the module has no create_engine)
    "espeak": ("voiceops_service.engines.espeak", "EspeakEngine"),
    "vits": ("voiceops_service.engines.vits", "VitsEngine"),
}


class EngineUnavailableError(RuntimeError):
    """The named engine is unknown or its module cannot be imported."""


def create_engine(name: str, settings: ServiceSettings) -> Engine:
    """A new, not yet loaded engine called ``name`` configured from ``settings``."""
    if name not in ENGINE_MODULES:
        raise EngineUnavailableError(
            f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINE_MODULES))}"
        )
    module_name, class_name = ENGINE_MODULES[name]
    if name == "espeak":
        from voiceops_service.engines.espeak import EspeakEngine

        voice = settings.voice if settings.engine == "espeak" else settings.fallback_voice
        return EspeakEngine(default_voice=voice)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise EngineUnavailableError(f"engine {name!r} cannot be imported: {error}") from error
    factory = getattr(module, "create_engine", None) or getattr(module, class_name, None)
    if factory is None:
        raise EngineUnavailableError(f"{module_name} has neither create_engine nor {class_name}")
    engine = factory(settings)
    if not isinstance(engine, Engine):
        raise EngineUnavailableError(f"{module_name} built {type(engine).__name__}, not an Engine")
    return engine
