"""``/admin/models``: load a model version aside, validate it, swap it in, or roll back.

Mounted only when ``model_admin`` is on with a token or the operator's public key
(like ``/admin/faults``); otherwise these paths 404. The token comes as
``Authorization: Bearer`` or in ``X-Voiceops-Model-Token`` (the API server's pod
proxy drops Authorization); the operator sends a JWT it signed for this pod
(an InPlace model update, docs/hot-swap.md).
A swap answers when it is over: 200 with its report (``swapped`` or
``unchanged``), or an error whose ``code`` is the result (``refused_memory``
507, ``load_failed`` 400/422, ``validation_failed`` 422, ``busy`` 409) while the
active version keeps serving.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from voiceops_contract import pod

from voiceops_service.admin_tokens import token_guard
from voiceops_service.errors import ApiError
from voiceops_service.models import ModelSwapper, SwapFailedError, SwapReport, SwapRequest
from voiceops_service.state import ServiceState, StateDep

require_model_token = token_guard(
    lambda settings: settings.model_admin_token,
    pod.MODEL_ADMIN_TOKEN_HEADER,
    "the model admin API",
    "VOICEOPS_MODEL_ADMIN_TOKEN",
    operator_audience=pod.MODEL_ADMIN_AUDIENCE,
)


def swapper(state: ServiceState) -> ModelSwapper:
    if state.models is None:
        reason = state.load_error or f"the {state.settings.engine} engine is still loading"
        raise ApiError(
            503, reason, code="not_ready", type_="server_error", headers={"Retry-After": "5"}
        )
    return state.models


def _failed(error: SwapFailedError) -> ApiError:
    param = "uri" if error.report.result == "load_failed" else None
    return ApiError(error.status, error.report.message, param=param, code=error.report.result)


models_admin_router = APIRouter(
    dependencies=[Depends(require_model_token)], include_in_schema=False
)


@models_admin_router.get(pod.PATH_MODELS_ADMIN)
async def get_models(state: StateDep) -> dict[str, Any]:
    return swapper(state).describe()


@models_admin_router.post(pod.PATH_MODELS_ADMIN)
async def post_model(request: SwapRequest, state: StateDep) -> SwapReport:
    try:
        return await swapper(state).swap(request)
    except SwapFailedError as error:
        raise _failed(error) from None


@models_admin_router.post(pod.PATH_MODELS_ROLLBACK)
async def post_rollback(state: StateDep) -> SwapReport:
    try:
        return await swapper(state).rollback()
    except SwapFailedError as error:
        raise _failed(error) from None
