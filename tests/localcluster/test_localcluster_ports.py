"""Ports handed to servers lie outside the range outgoing connections take theirs from."""

from __future__ import annotations

import socket

import pytest
from voiceops_localcluster import ports
from voiceops_localcluster.ports import LOWEST_PORT, ephemeral_range, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    low, _ = ephemeral_range()
    ports = {free_port() for _ in range(20)}
    for port in ports:
        assert LOWEST_PORT <= port < low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        taken = held.getsockname()[1]
        other = free_port()
        picks = iter([taken, taken, other])
        monkeypatch.setattr(ports.random, "randrange", lambda *_: next(picks))
        assert free_port() == other
