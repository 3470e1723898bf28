"""Routing notices: the operator tells a pod whether the front Service sends it traffic.

A Service selector switch moves new connections only: kube-proxy (like the local
cluster's Service proxy) keeps an established connection on its backend, so a
keep-alive client would stay on a tier the operator moved traffic away from. A
pod routed away therefore lets its clients go: it closes its idle keep-alive
connections at once, answers the requests it holds and closes those connections
after the answer (``Connection: close``), and keeps answering with
``Connection: close`` while routed away, so a connection that still reaches it
(a Service proxy that has not caught up yet) reconnects and lands where the
operator sends traffic now. The same holds in reverse when traffic moves back.

A notice is a JWT signed by the operator's Ed25519 key (``EdDSA``); the pod has
the public key (``VOICEOPS_ROUTING_PUBLIC_KEY``) and accepts a notice only for its
own name, for the routing audience, unexpired, and not older than the last one it
accepted. Without a key the endpoint does not exist. See docs/routing.md.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from typing import Annotated

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Header, Request
from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from voiceops_contract import pod

from voiceops_service.errors import ApiError

log = logging.getLogger(__name__)

# Notices carry their own expiry; this much clock skew between nodes is forgiven.
CLOCK_SKEW_SECONDS = 5.0


class RoutingNotice(BaseModel):
    """The claims of a routing notice (JWT), as the operator signs them."""

    model_config = ConfigDict(extra="ignore")

    sub: str  # the pod's name
    routed: bool  # does the front Service send this pod traffic?
    t: float  # when the operator decided (epoch seconds, sub-second): orders notices


class RoutingState:
    """Whether this pod is routed to, and the last notice that said so.

    ``close_connections`` is set by whoever runs the HTTP server (the CLI's
    uvicorn): it asks every open connection to close once its current answer
    is sent, and closes idle ones now.
    """

    def __init__(self, gauge: Gauge | None = None) -> None:
        self._lock = threading.Lock()
        self.routed = True  # a pod nobody told otherwise serves normally
        self.draining = False  # SIGTERM came: finish what is in flight, then exit
        self.last_notice: float | None = None
        self.close_connections: Callable[[], int] | None = None
        self._gauge = gauge
        if gauge is not None:
            gauge.set(1)

    def apply(self, notice: RoutingNotice) -> bool:
        """Take ``notice`` unless an older one; True when it changed the routing."""
        with self._lock:
            if self.last_notice is not None and notice.t < self.last_notice:
                raise ApiError(
                    409,
                    f"routing notice from t={notice.t:.3f} is older than the one already "
                    f"applied (t={self.last_notice:.3f})",
                    param="t",
                    code="stale_notice",
                )
            self.last_notice = notice.t
            changed = notice.routed != self.routed
            self.routed = notice.routed
            if self._gauge is not None:
                self._gauge.set(1 if notice.routed else 0)
        if changed and not notice.routed and self.close_connections is not None:
            closing = self.close_connections()
            log.info("routed away: closing %d keep-alive connections after their answer", closing)
        elif changed:
            log.info("routed %s", "to" if notice.routed else "away")
        return changed

    @property
    def keep_alive(self) -> bool:
        """Whether answers may keep their connection open (routed to, not draining)."""
        return self.routed and not self.draining

    def start_draining(self) -> None:
        """From now on every answer closes its connection; idle connections close now."""
        if self.draining:
            return
        self.draining = True
        if self.close_connections is not None:
            closing = self.close_connections()
            log.info("draining: closing %d keep-alive connections after their answer", closing)


def public_key(encoded: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded))


def verify_operator_token(
    token: str, key: Ed25519PublicKey, pod_name: str, audience: str
) -> dict[str, object]:
    """The claims of a JWT the operator signed for this pod and ``audience``, or ApiError 401."""
    try:
        claims: dict[str, object] = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            audience=audience,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "aud", "sub"]},
        )
    except jwt.InvalidTokenError as error:
        raise _unauthorized(f"operator token refused: {error}") from None
    if claims.get("sub") != pod_name:
        raise _unauthorized(
            f"operator token is for pod {claims.get('sub')!r}, this is {pod_name!r}"
        )
    return claims


def verify_notice(token: str, key: Ed25519PublicKey, pod_name: str) -> RoutingNotice:
    """The notice's claims, or ApiError 401 naming what is wrong with it."""
    claims = verify_operator_token(token, key, pod_name, pod.ROUTING_AUDIENCE)
    try:
        return RoutingNotice.model_validate(claims)
    except ValidationError as error:
        raise _unauthorized(f"routing notice refused: {error}") from None


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        message,
        param="Authorization",
        code="invalid_token",
        type_="authentication_error",
        headers={"WWW-Authenticate": "Bearer"},
    )


class ConnectionCloseWhileRoutedAway:
    """ASGI middleware: every answer says ``Connection: close`` while the pod is routed away
    or draining."""

    def __init__(self, app: ASGIApp, routing: RoutingState) -> None:
        self.app = app
        self.routing = routing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.routing.keep_alive:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def routing_router(key: Ed25519PublicKey, pod_name: str) -> APIRouter:
    """``POST /admin/routing`` with ``Authorization: Bearer <notice>``; mounted only with a key."""
    router = APIRouter(include_in_schema=False)

    @router.post(pod.PATH_ROUTING)
    async def post_routing(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, object]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("routing notices need Authorization: Bearer <notice>")
        notice = verify_notice(token.strip(), key, pod_name)
        routing: RoutingState = request.app.state.service.routing
        changed = routing.apply(notice)
        return {"routed": routing.routed, "changed": changed}

    return router
