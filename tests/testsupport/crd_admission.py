"""Checks a VoiceService against the CRD the way an API server would (test helper).

Order as in kube-apiserver: structural defaulting, OpenAPI schema validation
(unknown fields refused, as with `kubectl --validate=strict`), then the CEL
`x-kubernetes-validations` rules, evaluated with cel-python.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema
from voiceops_operator import crd


def _strict(schema: Any) -> Any:
    """Refuse unknown fields (strict field validation) in a Draft-4 copy of the schema."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if "properties" in schema:
        out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if schema.get("type") == "object" and schema["properties"]:
            out["additionalProperties"] = False
    return out


def _cel_errors(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        env = celpy.Environment()
        program = env.program(env.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception) or not bool(result):
            field = path + rule.get("fieldPath", "")
            errors.append(f"{field}: Invalid value: {rule['message']}")
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors.extend(_cel_errors(value[key], sub, f"{path}.{key}" if path else key))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                errors.extend(_cel_errors(item, extra, f"{path}[{key}]"))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors.extend(_cel_errors(item, schema["items"], f"{path}[{index}]"))
    return errors


def admit(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the defaulted object, the errors an API server would answer with)."""
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    defaulted = crd.apply_defaults(copy.deepcopy(obj), schema)
    validator = jsonschema.Draft4Validator(_strict(schema))
    errors = [
        ".".join(str(p) for p in err.absolute_path) + ": " + err.message
        for err in validator.iter_errors(defaulted)
    ]
    if errors:
        return defaulted, errors  # CEL runs only on schema-valid objects
    return defaulted, _cel_errors(defaulted, schema, "")
