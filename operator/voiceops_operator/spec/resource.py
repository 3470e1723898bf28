"""The VoiceService resource: its API group, version, kind and names. Pure: constants only."""

from __future__ import annotations

GROUP = "voiceops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VoiceService"
PLURAL = "voiceservices"
SINGULAR = "voiceservice"
SHORT_NAMES = ("voicesvc", "vsvc")
