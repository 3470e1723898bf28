"""Fuzz the request schema (schemathesis, from the app's own OpenAPI) against the live server.

Valid (positive) and invalid (negative) requests for every operation must never
produce a 5xx. Fault injection is off on this server, so /admin/faults is not
in the schema. Drives schemathesis's strategies with hypothesis directly:
its pytest fixture loader does not work with pytest 9 (``_nodeid`` removed).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from testsupport.service_process import ServiceProcess

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 50


def operations(service: ServiceProcess) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def speech_codes(service: ServiceProcess) -> dict[str, float]:
    families = text_string_to_metric_families(httpx.get(f"{service.url}/metrics").text)
    return {
        sample.labels["code"]: sample.value
        for family in families
        for sample in family.samples
        if sample.name == "voiceops_requests_total" and sample.labels["route"] == "/v1/audio/speech"
    }


def has_inputs(operation: schemathesis.APIOperation) -> bool:
    parts = (operation.body, operation.query, operation.headers, operation.path_parameters)
    return any(len(part) for part in parts)


def test_schema_covers_every_route(espeak_service: ServiceProcess) -> None:
    paths = {(op.method.upper(), op.path) for op in operations(espeak_service)}
    assert ("POST", "/v1/audio/speech") in paths
    assert {("GET", "/v1/models"), ("GET", "/v1/audio/voices"), ("GET", "/readyz")} <= paths


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_makes_the_server_fail(
    espeak_service: ServiceProcess, mode: GenerationMode
) -> None:
    for operation in operations(espeak_service):
        if mode == GenerationMode.NEGATIVE and not has_inputs(operation):
            continue  # nothing to make invalid in a parameterless GET

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=espeak_service.url, timeout=30)
            assert response.status_code < 500, (case.method, case.path, case.body, response.text)
            case.validate_response(response, checks=[not_a_server_error])

        check()
    # The fuzzer really exercised the speech route (answers of several kinds).
    codes = speech_codes(espeak_service)
    assert sum(codes.values()) >= EXAMPLES_PER_OPERATION // 2, codes
    assert all(int(code) < 500 for code in codes), codes
