"""voiceops inference service: OpenAI-compatible text-to-speech over HTTP."""

__version__ = "0.1.0"
