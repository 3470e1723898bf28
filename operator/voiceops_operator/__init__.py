"""voiceops operator: runs TTS models as self-healing Kubernetes services."""

__version__ = "0.1.0"
