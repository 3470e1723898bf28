"""OpenAI's error envelope ``{"error": {"message", "type", "param", "code"}}`` for every error.

FastAPI's own handlers (422 ``{"detail": ...}``, 404/405 ``{"detail": ...}``)
are replaced so every 4xx/5xx a client sees has the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered in OpenAI's envelope."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.type = type_
        self.headers = headers or {}


def envelope(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        envelope(error.message, error.type, error.param, error.code),
        status_code=error.status_code,
        headers=error.headers,
    )


def _param_of(location: tuple[Any, ...]) -> str | None:
    """``("body", "speed")`` -> ``"speed"``; a whole-body problem -> ``"body"``."""
    fields = [str(part) for part in location[1:] if not isinstance(part, int)]
    if location and location[0] == "body":
        return ".".join(fields) if fields else "body"
    return ".".join(str(part) for part in location) or None


def validation_error(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {}
    location = tuple(first.get("loc", ()))
    param = _param_of(location)
    kind = str(first.get("type", "invalid_value"))
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "invalid JSON")
        return ApiError(400, f"request body is not valid JSON: {detail}", param="body", code=kind)
    if kind == "model_attributes_type" and param == "body":
        return ApiError(400, "request body must be a JSON object", param="body", code=kind)
    message = str(first.get("msg", "invalid request"))
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    return ApiError(400, f"{param}: {message}{suffix}", param=param, code=kind)


_HTTP_CODES = {
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "method not allowed on this route"),
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, default = _HTTP_CODES.get(exc.status_code, ("http_error", "request failed"))
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else default
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(
            ApiError(
                exc.status_code, message, code=code, type_=type_, headers=dict(exc.headers or {})
            )
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc)


def unexpected_error_response(exc: BaseException) -> JSONResponse:
    """A 500 in the envelope; the details go to the log, not to the client."""
    log.exception("unhandled error", exc_info=exc)
    return error_response(
        ApiError(500, "internal error", code="internal_error", type_="server_error")
    )
