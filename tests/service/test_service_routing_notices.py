"""Routing notices: a pod routed away lets its keep-alive clients go, and takes them back.

The notices are signed by the operator's own code (``routing_notices.sign_notice``)
and checked by a real ``voiceops-service`` process over HTTP, so this is also the
contract between the two.
"""

from __future__ import annotations

import base64
import http.client
import socket
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from testsupport.service_process import (
    ServiceProcess,
    assert_envelope,
    metric_value,
    start_service,
    wait_for,
)
from voiceops_operator.routing_notices import sign_notice
from voiceops_service.errors import ApiError
from voiceops_service.routing import RoutingNotice, RoutingState, public_key, verify_notice

POD = "tts-fallback-7d9f-abcde"


def _public(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


KEY = Ed25519PrivateKey.generate()
PUBLIC = _public(KEY)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {
        "VOICEOPS_ENGINE": "espeak",
        "VOICEOPS_POD_NAME": POD,
        "VOICEOPS_ROUTING_PUBLIC_KEY": PUBLIC,
    }
    proc = start_service(tmp_path_factory.mktemp("routing"), env)
    yield proc
    proc.stop()


def notice(routed: bool, *, pod: str = POD, key: Ed25519PrivateKey = KEY, at: float = 0) -> str:
    return sign_notice(key, pod, routed, at or time.time())


def post_notice(service: ServiceProcess, token: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.request("POST", "/admin/routing", headers={"Authorization": f"Bearer {token}"})
    return conn.getresponse()


def keep_alive_request(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
    conn.request("GET", "/v1/models")
    response = conn.getresponse()
    response.read()
    return response


def closed_by_server(conn: http.client.HTTPConnection) -> bool:
    """The server closed this idle connection (a read sees EOF)."""
    sock = conn.sock
    if sock is None:
        return True
    sock.settimeout(0.05)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except TimeoutError:
        return False


def test_routed_away_closes_idle_keep_alive_and_says_close_until_routed_back(
    service: ServiceProcess,
) -> None:
    idle = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    assert keep_alive_request(idle).getheader("connection") != "close"
    assert not closed_by_server(idle)
    assert metric_value(service, "voiceops_routed") == 1

    answer = post_notice(service, notice(False))
    assert answer.status == 200, answer.read()
    # The idle keep-alive connection is let go: its client reconnects through the Service.
    wait_for(lambda: closed_by_server(idle), 5)
    assert metric_value(service, "voiceops_routed") == 0
    # A connection that still arrives (a proxy not caught up) gets one answer and a close.
    late = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    assert keep_alive_request(late).getheader("connection") == "close"
    wait_for(lambda: closed_by_server(late), 5)

    assert post_notice(service, notice(True)).status == 200
    again = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    assert keep_alive_request(again).getheader("connection") != "close"
    assert keep_alive_request(again).status == 200  # the same connection, kept
    assert metric_value(service, "voiceops_routed") == 1


def test_notices_that_are_not_the_operators_are_refused(service: ServiceProcess) -> None:
    forged = Ed25519PrivateKey.generate()
    for token in (notice(False, key=forged), notice(False, pod="another-pod"), "not-a-jwt"):
        response = post_notice(service, token)
        assert response.status == 401
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.request("POST", "/admin/routing")
    response = conn.getresponse()
    assert response.status == 401
    assert b"Authorization" in response.read()
    # Nothing changed: the pod is still routed to.
    assert metric_value(service, "voiceops_routed") == 1


def test_an_older_notice_never_undoes_a_newer_one(service: ServiceProcess) -> None:
    now = time.time()
    assert post_notice(service, notice(True, at=now)).status == 200
    stale = post_notice(service, notice(False, at=now - 1))
    assert stale.status == 409
    assert metric_value(service, "voiceops_routed") == 1


def test_without_a_key_there_is_no_routing_endpoint(espeak_service: ServiceProcess) -> None:
    with espeak_service.client() as client:
        assert_envelope(client.post("/admin/routing"), 404, None)


def test_verify_names_what_is_wrong() -> None:
    key = public_key(PUBLIC)
    at = time.time() - 2
    checked = verify_notice(notice(False, at=at), key, POD)
    assert (checked.sub, checked.routed, checked.t) == (POD, False, at)
    expired = sign_notice(KEY, POD, False, time.time() - 3600)
    with pytest.raises(ApiError, match="expired"):
        verify_notice(expired, key, POD)
    with pytest.raises(ApiError, match="another-pod"):
        verify_notice(notice(False, pod="another-pod"), key, POD)


def test_state_applies_notices_in_order_and_asks_connections_to_close() -> None:
    closed: list[int] = []
    state = RoutingState()
    state.close_connections = lambda: closed.append(1) or 3
    assert state.apply(RoutingNotice(sub=POD, routed=False, t=10.0))
    assert closed == [1]
    assert not state.apply(RoutingNotice(sub=POD, routed=False, t=11.0))  # no change
    assert closed == [1]
    assert state.apply(RoutingNotice(sub=POD, routed=True, t=12.0))
    assert closed == [1]  # routed back: nothing to close
    with pytest.raises(ApiError) as refused:
        state.apply(RoutingNotice(sub=POD, routed=False, t=11.5))
    assert refused.value.status_code == 409
    assert state.routed
