"""The token check in front of every admin API (fault injection, model swaps).

No ``from __future__ import annotations`` here: FastAPI reads the guard's
``Header(alias=...)`` from annotations evaluated where the guard is made.
"""

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Header
from pydantic import SecretStr

from voiceops_service.errors import ApiError
from voiceops_service.routing import public_key, verify_operator_token
from voiceops_service.settings import ServiceSettings
from voiceops_service.state import StateDep

TokenGuard = Callable[..., Awaitable[None]]


def token_guard(
    token_of: Callable[[ServiceSettings], SecretStr],
    header: str,
    what: str,
    env: str,
    operator_audience: str | None = None,
) -> TokenGuard:
    """A dependency answering 401 unless ``Authorization: Bearer <token>`` or ``header: <token>``.

    The header form passes the API server's pod proxy, which drops Authorization.
    Both are compared in constant time. With ``operator_audience``, a Bearer JWT
    the operator signed for this pod and that audience passes too (the pod has the
    operator's public key: the routing notices' key), so the operator needs no
    shared secret to command the pod.
    """

    async def require_token(
        state: StateDep,
        authorization: Annotated[str | None, Header()] = None,
        given: Annotated[str | None, Header(alias=header)] = None,
    ) -> None:
        settings = state.settings
        token = token_of(settings).get_secret_value().encode()
        if token:
            bearer = hmac.compare_digest((authorization or "").encode(), b"Bearer " + token)
            in_header = hmac.compare_digest((given or "").encode(), token)
            if bearer or in_header:
                return
        scheme, _, jwt_text = (authorization or "").partition(" ")
        if operator_audience and settings.routing_notices_enabled and scheme.lower() == "bearer":
            key = public_key(settings.routing_public_key)
            verify_operator_token(jwt_text.strip(), key, settings.pod_name, operator_audience)
            return
        raise ApiError(
            401,
            f"{what} needs Authorization: Bearer <{env}> or {header}: <{env}>",
            param="Authorization",
            code="invalid_token",
            type_="authentication_error",
            headers={"WWW-Authenticate": "Bearer"},
        )

    return require_token
