"""values.yaml and values.schema.json: strict, documented, and enforced by helm."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from testsupport.chart import CHART_DIR, helm_template

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
VALUES_TEXT = (CHART_DIR / "values.yaml").read_text()


def _object_schemas(node: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((path, node))
        for key, value in node.items():
            found += _object_schemas(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _object_schemas(value, f"{path}[{index}]")
    return found


def test_every_object_in_the_schema_closes_its_properties() -> None:
    for path, schema in _object_schemas(SCHEMA):
        assert "additionalProperties" in schema, f"{path} lacks additionalProperties"
        extra = schema["additionalProperties"]
        if "properties" in schema:
            # Fixed fields: closed.
            assert extra is False, f"{path} has properties but is open"
        elif extra is True:
            # Only embedded Kubernetes types (checked by the API server and
            # by kubernetes-validate in test_chart_render) may stay open.
            assert schema["description"].startswith(("Kubernetes ", "A NetworkPolicy")), path
        else:
            assert isinstance(extra, dict), f"{path}: untyped map"
            assert extra.get("type") or extra.get("anyOf"), f"{path}: untyped map"


def test_every_value_in_the_schema_has_a_description() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        for name, child in node.get("properties", {}).items():
            assert child.get("description", "").strip(), f"{path}.{name} has no description"
            walk(child, f"{path}.{name}")
        items = node.get("items")
        if isinstance(items, dict):
            assert items.get("description"), f"{path}[] has no description"
            walk(items, f"{path}[]")

    walk(SCHEMA, "$")


def _documented_keys(node: yaml.Node, lines: list[str], path: str = "") -> dict[str, bool]:
    """Each key path -> whether a `# --` comment block sits right above it."""
    found: dict[str, bool] = {}
    if not isinstance(node, yaml.MappingNode):
        return found
    for key_node, value_node in node.value:
        key_path = f"{path}.{key_node.value}".lstrip(".")
        above = key_node.start_mark.line - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            if lines[above].strip().startswith("# --"):
                break
            above -= 1
        found[key_path] = above >= 0 and lines[above].strip().startswith("# --")
        found |= _documented_keys(value_node, lines, key_path)
    return found


def test_every_value_in_values_yaml_has_a_doc_comment() -> None:
    """Each leaf, or a map documented as a whole (e.g. resources), has a `# --` comment."""
    documented = _documented_keys(yaml.compose(VALUES_TEXT), VALUES_TEXT.splitlines())
    for path, has_comment in documented.items():
        if has_comment:
            continue
        children = [p for p in documented if p.startswith(f"{path}.")]
        ancestors = [".".join(path.split(".")[:i]) for i in range(1, path.count(".") + 1)]
        assert children or any(documented[a] for a in ancestors), (
            f"{path} in values.yaml has no `# --` comment"
        )


def test_schema_knows_every_default_value() -> None:
    values = yaml.safe_load(VALUES_TEXT)
    properties = SCHEMA["properties"]
    assert set(values) == set(properties)
    assert set(SCHEMA["required"]) == set(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bogus": 1}, "additional properties 'bogus' not allowed"),
        ({"image": {"reposity": "typo"}}, "additional properties 'reposity' not allowed"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "'enable' not allowed"),
        ({"replicas": 0}, "/replicas"),
        ({"replicas": "two"}, "/replicas"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"prometheusRule": {"degradedFor": "ten minutes"}}, "/prometheusRule/degradedFor"),
        (
            {"prometheusRule": {"gpuMemoryCriticalRatio": 1.5}},
            "/prometheusRule/gpuMemoryCriticalRatio",
        ),
        ({"networkPolicy": {"apiServerPorts": [70000]}}, "/networkPolicy/apiServerPorts/0"),
        # The API server's toleration rules, so `helm install` fails, not the Deployment.
        ({"tolerations": [{"effect": "NoSchedule"}]}, "/tolerations/0"),
        ({"tolerations": [{"key": "", "operator": "Equal"}]}, "/tolerations/0"),
        ({"tolerations": [{"operator": "Exists", "value": "x"}]}, "/tolerations/0"),
        ({"tolerations": [{"key": "k", "value": "v", "tolerationSeconds": 5}]}, "/tolerations/0"),
        (
            {"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]},
            "/tolerations/0",
        ),
    ],
)
def test_schema_rejects_bad_values_with_the_field_named(
    values: dict[str, Any], message: str
) -> None:
    result = helm_template(values, check=False)
    assert result.returncode != 0, f"helm accepted {values}"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "toleration",
    [
        {"operator": "Exists"},
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"},
        {"key": "dedicated", "value": "ops", "effect": "NoSchedule"},
        {"key": "k", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30},
    ],
)
def test_schema_admits_tolerations_the_api_server_admits(toleration: dict[str, Any]) -> None:
    result = helm_template({"tolerations": [toleration]}, check=False)
    assert result.returncode == 0, result.stderr
    assert "tolerations:" in result.stdout
