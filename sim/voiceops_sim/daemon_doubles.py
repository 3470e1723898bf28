"""Stand-ins for what kopf hands a daemon, for driving the healing loop without kopf.

Test doubles, named as such: the healing-loop tests and bench/healing_latency.py
run ``healing.run_loop`` directly against the API-server emulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

from .apiserver import KubeApiEmulator


class LiveObject(Mapping[str, Any]):
    """The object as the emulator has it now, read on every access (kopf's body is live)."""

    def __init__(self, emulator: KubeApiEmulator, resource: str, namespace: str, name: str) -> None:
        self._emulator = emulator
        self._key = (resource, name, namespace)

    def _obj(self) -> dict[str, Any]:
        return self._emulator.get(*self._key) or {}

    def __getitem__(self, key: str) -> Any:
        return self._obj()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._obj())

    def __len__(self) -> int:
        return len(self._obj())


class DaemonStopped:
    """Stands in for kopf's DaemonStopped flag: falsy until ``set()``."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()
