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
from voiceops_service.settings import ServiceSettings
from voiceops_service.state import StateDep

TokenGuard = Callable[..., Awaitable[None]]


def token_guard(
    token_of: Callable[[ServiceSettings], SecretStr], header: str, what: str, env: str
) -> TokenGuard:
    """A dependency answering 401 unless ``Authorization: Bearer <token>`` or ``header: <token>``.

    The header form passes the API server's pod proxy, which drops Authorization.
    Both are compared in constant time.
    """

    async def require_token(
        state: StateDep,
        authorization: Annotated[str | None, Header()] = None,
        given: Annotated[str | None, Header(alias=header)] = None,
    ) -> None:
        token = token_of(state.settings).get_secret_value().encode()
        bearer = hmac.compare_digest((authorization or "").encode(), b"Bearer " + token)
        in_header = hmac.compare_digest((given or "").encode(), token)
        if not (bearer or in_header):
            raise ApiError(
                401,
                f"{what} needs Authorization: Bearer <{env}> or {header}: <{env}>",
                param="Authorization",
                code="invalid_token",
                type_="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_token
