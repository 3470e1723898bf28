"""Parsing: a manifest, a spec or a status in; validated, defaulted models out. Pure: no I/O."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from voiceops_operator.spec.errors import InvalidSpec, SpecError
from voiceops_operator.spec.model_uri import parse_model_uri
from voiceops_operator.spec.models import VoiceServiceSpec
from voiceops_operator.spec.resource import API_VERSION, KIND
from voiceops_operator.spec.status import VoiceServiceStatus
from voiceops_operator.spec.validation import MAX_NAME_LENGTH, NAME_PATTERN


def _field_path(loc: tuple[int | str, ...], prefix: str) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _fill_indices(path: str, indices: list[int]) -> str:
    """spec.a[*].b with indices [2] → spec.a[2].b (rules on list items name no index)."""
    for index in indices:
        if "[*]" not in path:
            break
        path = path.replace("[*]", f"[{index}]", 1)
    return path


def errors_from_validation(exc: ValidationError, prefix: str = "spec") -> list[SpecError]:
    """One SpecError per pydantic error, each naming its field."""
    found = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in ("function-after[_cross_field()]",))
        field = _field_path(loc, prefix)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "cross_field":
            named = message.split(" ", 1)[0]
            if named.startswith(prefix + "."):  # the message names its field
                field = _fill_indices(named, [p for p in loc if isinstance(p, int)])
                message = message.replace(named, field, 1)
            else:  # a rule on a nested list item: named where it sits, like CEL errors
                field += (err.get("ctx") or {}).get("field", "")
                message = f"{field} {message}"
        found.append(SpecError(field, message))
    return found


def parse_spec(raw: Any) -> VoiceServiceSpec:
    """Validate and default a spec dict, checking also what the schema cannot (model.uri)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidSpec([SpecError("spec", "must be an object")])
    try:
        spec = VoiceServiceSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpec(errors_from_validation(exc)) from None
    try:
        parse_model_uri(spec.model.uri)
    except SpecError as exc:
        raise InvalidSpec([exc]) from None
    return spec


def parse_status(raw: Any) -> VoiceServiceStatus:
    """Read status leniently: unknown or malformed parts are dropped, never fatal."""
    if not isinstance(raw, dict):
        return VoiceServiceStatus()
    try:
        return VoiceServiceStatus.model_validate(raw)
    except ValidationError:
        cleaned: dict[str, Any] = {}
        for key, value in raw.items():
            try:
                VoiceServiceStatus.model_validate({key: value})
            except ValidationError:
                continue
            cleaned[key] = value
        return VoiceServiceStatus.model_validate(cleaned)


class VoiceService(BaseModel):
    """A parsed VoiceService object: identity plus its validated spec."""

    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str
    spec: VoiceServiceSpec
    uid: str = ""
    generation: int = 0


def parse_voiceservice(manifest: Any, default_namespace: str = "default") -> VoiceService:
    """Validate a whole manifest (apiVersion, kind, metadata.name, spec)."""
    if not isinstance(manifest, dict):
        raise InvalidSpec([SpecError("(document)", "must be a mapping")])
    if manifest.get("apiVersion") != API_VERSION:
        raise InvalidSpec(
            [SpecError("apiVersion", f"must be {API_VERSION}, got {manifest.get('apiVersion')!r}")]
        )
    if manifest.get("kind") != KIND:
        raise InvalidSpec([SpecError("kind", f"must be {KIND}, got {manifest.get('kind')!r}")])
    metadata = manifest.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidSpec([SpecError("metadata.name", "is required")])
    if len(name) > MAX_NAME_LENGTH or not re.fullmatch(NAME_PATTERN, name):
        raise InvalidSpec(
            [
                SpecError(
                    "metadata.name",
                    f"{name!r} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters",
                )
            ]
        )
    namespace = metadata.get("namespace") or default_namespace
    spec = parse_spec(manifest.get("spec"))
    return VoiceService(
        name=name,
        namespace=namespace,
        spec=spec,
        uid=str(metadata.get("uid") or ""),
        generation=int(metadata.get("generation") or 0),
    )
