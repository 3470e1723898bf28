"""Field types and patterns: label keys and values, quantities, object names. Pure: no I/O.

Each type checks the same rule twice: as an OpenAPI ``pattern``/``maxLength`` (and,
where a pattern cannot say it, CEL) for the API server, and as a pydantic
validator for the operator, worded like the API server's own messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

# Children are named <name>-fallback (longest suffix) and Service names are
# DNS-1035 labels of at most 63 characters.
MAX_NAME_LENGTH = 63 - len("-fallback")
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
RESOURCE_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
# A model version becomes a response header and a metric label in the pods (the
# service's own rule), so: letters, digits and . _ : + @ / -, starting with a letter or digit.
MODEL_VERSION_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._:+@/-]*)?$"
PVC_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
_IPV4 = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CIDR_PATTERN = (
    rf"^({_IPV4}\.){{3}}{_IPV4}/(3[0-2]|[12]?[0-9])$"
    r"|^[0-9a-fA-F]*:[0-9a-fA-F:.]*/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_VALUE_MAX_LENGTH = 63

# Label keys (and annotation keys) are Kubernetes "qualified names"
# (k8s.io/apimachinery/pkg/util/validation.IsQualifiedName): an optional prefix
# and "/", then a name. The prefix is a DNS-1123 subdomain of at most 253
# characters, the name at most 63 characters of [-A-Za-z0-9_.], alphanumeric at
# both ends. The patterns are RE2 (OpenAPI `pattern` and CEL `matches()` in the
# API server) and Python re alike: no lookahead, no escapes (`[.]`, not `\.`).
LABEL_NAME_MAX_LENGTH = 63
LABEL_PREFIX_MAX_LENGTH = 253
LABEL_KEY_MAX_LENGTH = LABEL_PREFIX_MAX_LENGTH + 1 + LABEL_NAME_MAX_LENGTH
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = rf"{_DNS1123_LABEL}([.]{_DNS1123_LABEL})*"
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"  # 1 to 63 characters
# The whole rule but the prefix's 253-character limit: a regular expression without
# lookahead cannot bound the length of one part while it checks that part's form
# (maxLength bounds only the whole key, to 317). LABEL_KEY_PREFIX_PATTERN does, so
# the CRD checks it in CEL and pydantic in label_key_problems().
LABEL_KEY_PATTERN = rf"^({_DNS1123_SUBDOMAIN}/)?{_LABEL_NAME}$"
LABEL_KEY_PREFIX_PATTERN = rf"^([^/]{{1,{LABEL_PREFIX_MAX_LENGTH}}}/)?[^/]*$"
LABEL_KEY_RULE = (
    f"a label key, [prefix/]name: the optional prefix a DNS-1123 subdomain of at most "
    f"{LABEL_PREFIX_MAX_LENGTH} characters (lower-case alphanumerics, '-' and '.', each "
    "'.'-separated part starting and ending with an alphanumeric), the name 1 to "
    f"{LABEL_NAME_MAX_LENGTH} characters of alphanumerics, '-', '_' and '.', starting and "
    "ending with an alphanumeric (e.g. app, kubernetes.io/metadata.name)"
)
LABEL_VALUE_RULE = (
    f"a label value: empty, or at most {LABEL_VALUE_MAX_LENGTH} characters of alphanumerics, "
    "'-', '_' and '.', starting and ending with an alphanumeric"
)

_LABEL_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN)
_LABEL_VALUE_RE = re.compile(LABEL_VALUE_PATTERN)


def label_key_problems(key: str) -> list[str]:
    """Why key is not a label key, worded like the API server's IsQualifiedName; [] if it is."""
    parts = key.split("/")
    if len(parts) > 2:
        return ["has more than one '/' (a label key is [prefix/]name)"]
    problems = []
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            problems.append("prefix part must be non-empty")
        elif len(prefix) > LABEL_PREFIX_MAX_LENGTH:
            problems.append(
                f"prefix part must be no more than {LABEL_PREFIX_MAX_LENGTH} characters"
            )
        if prefix and not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix):
            problems.append(
                "prefix part must be a DNS-1123 subdomain: lower-case alphanumerics, '-' and "
                "'.', each '.'-separated part starting and ending with an alphanumeric"
            )
    name = parts[-1]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > LABEL_NAME_MAX_LENGTH:
        problems.append(f"name part must be no more than {LABEL_NAME_MAX_LENGTH} characters")
    if name and not _LABEL_NAME_RE.fullmatch(name):
        problems.append(
            "name part must consist of alphanumerics, '-', '_' and '.', and start and end "
            "with an alphanumeric"
        )
    return problems


def bad_label_keys(labels: dict[str, str]) -> str:
    """What a cross-field rule adds to its message: the keys that are not label keys, and why."""
    bad = [f"{k!r} ({'; '.join(p)})" for k in labels if (p := label_key_problems(k))]
    return "got " + ", ".join(bad)


def _label_key(allow_empty: bool) -> Callable[[str], str]:
    def check(key: str) -> str:
        problems = [] if allow_empty and key == "" else label_key_problems(key)
        if problems:
            raise PydanticCustomError(
                "label_key",
                "{key} is not a label key ([prefix/]name, e.g. app or "
                "kubernetes.io/metadata.name): {problems}",
                {"key": repr(key), "problems": "; ".join(problems)},
            )
        return key

    return check


def _label_value(value: str) -> str:
    if len(value) > LABEL_VALUE_MAX_LENGTH or not _LABEL_VALUE_RE.fullmatch(value):
        raise PydanticCustomError(
            "label_value", "{value} is not {rule}", {"value": repr(value), "rule": LABEL_VALUE_RULE}
        )
    return value


# The OpenAPI schema checks the form (pattern) and the length; CEL rules on the
# owning object check the prefix's length (LABEL_KEY_PREFIX_PATTERN).
LabelKey = Annotated[
    str,
    AfterValidator(_label_key(allow_empty=False)),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": LABEL_KEY_MAX_LENGTH,
            "pattern": LABEL_KEY_PATTERN,
        }
    ),
]
LabelKeyOrEmpty = Annotated[
    str,
    AfterValidator(_label_key(allow_empty=True)),
    WithJsonSchema(
        {"type": "string", "maxLength": LABEL_KEY_MAX_LENGTH, "pattern": f"^$|{LABEL_KEY_PATTERN}"}
    ),
]
LabelValue = Annotated[
    str,
    AfterValidator(_label_value),
    WithJsonSchema(
        {"type": "string", "maxLength": LABEL_VALUE_MAX_LENGTH, "pattern": LABEL_VALUE_PATTERN}
    ),
]


def _quantity_to_str(value: Any) -> Any:
    # YAML users write `cpu: 1`; Kubernetes stores quantities as strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    Field(pattern=QUANTITY_PATTERN),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
