"""spec.model.uri: where a pod finds its weights. Pure: no I/O."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal

from voiceops_contract.pod import MODEL_MOUNT_PATH

from voiceops_operator.spec.errors import SpecError
from voiceops_operator.spec.validation import PVC_NAME_PATTERN

__all__ = ["MODEL_MOUNT_PATH", "ModelSource", "parse_model_uri"]


@dataclass(frozen=True)
class ModelSource:
    """Where a pod finds its weights."""

    scheme: Literal["bundled", "file", "pvc"]
    container_path: str = ""  # VOICEOPS_MODEL_PATH ("" = bundled)
    claim_name: str = ""  # pvc only
    sub_path: str = ""  # pvc only: path inside the claim


def parse_model_uri(uri: str) -> ModelSource:
    """Turn spec.model.uri into a ModelSource, or raise SpecError naming the field."""
    field = "spec.model.uri"
    if uri == "":
        return ModelSource(scheme="bundled")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise SpecError(field, f"{uri!r} is not a URI; use file:///abs/path or pvc://claim/path")
    if scheme == "file":
        if not rest.startswith("/") or rest == "/":
            raise SpecError(field, f"{uri!r}: file URIs need an absolute path (file:///models/x)")
        path = posixpath.normpath(rest)
        if path != rest.rstrip("/") or ".." in rest.split("/"):
            raise SpecError(field, f"{uri!r}: the path must be normalised (no '..', '//')")
        return ModelSource(scheme="file", container_path=path)
    if scheme == "pvc":
        claim, _, sub_path = rest.partition("/")
        if not re.fullmatch(PVC_NAME_PATTERN, claim) or len(claim) > 253:
            raise SpecError(field, f"{uri!r}: {claim!r} is not a valid PersistentVolumeClaim name")
        sub_path = sub_path.strip("/")
        if sub_path and (
            posixpath.normpath(sub_path) != sub_path or sub_path.split("/")[0] == ".."
        ):
            raise SpecError(field, f"{uri!r}: the path inside the claim must be normalised")
        container_path = (
            posixpath.join(MODEL_MOUNT_PATH, sub_path) if sub_path else MODEL_MOUNT_PATH
        )
        return ModelSource(
            scheme="pvc", container_path=container_path, claim_name=claim, sub_path=sub_path
        )
    raise SpecError(
        field,
        f"unsupported scheme {scheme + '://'!r} in {uri!r}; supported: empty (bundled voice), "
        "file:///abs/path, pvc://claim/path",
    )
