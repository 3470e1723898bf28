"""Chaos testing under load for voiceops (``voiceops-chaos``; docs/chaos.md)."""
