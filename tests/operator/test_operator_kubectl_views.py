"""What a user sees with kubectl: our CRD on a real API server, driven by the real kubectl.

Real: kube-apiserver (Tables built from the CRD's printer columns, the CRD's schema
published at ``/openapi/v3`` for ``kubectl explain``, server-side field validation,
the status subresource) and ``kubectl`` from ``make tools``. The CRD is
``crds/voiceservice.yaml``; the manifests are the ones in ``examples/``. No operator
runs: the status is what the test writes through the status subresource.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from testsupport.kubectl import CRD, KUBECTL, Kubectl
from testsupport.needs import missing
from voiceops_localcluster.control_plane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """kubectl with our CRD established: missing kubectl fails under CI=true, else skips."""
    if not KUBECTL.exists():
        missing(f"kubectl is missing at {KUBECTL}: run `make tools`")
    k = Kubectl(control_plane)
    k.apply_crd()
    return k


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    ns = f"kc-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


def in_namespace(path: Path, ns: str) -> tuple[list[dict[str, Any]], str]:
    """The example's objects, moved into ``ns`` (some name ``default`` or ``speech``)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = ns
    return docs, yaml.safe_dump_all(docs)


def one_line(text: str) -> str:
    """kubectl explain wraps descriptions; compare with whitespace folded."""
    return " ".join(text.split())


def table_rows(out: str) -> list[dict[str, str]]:
    """kubectl's column-aligned table as dicts; cells may hold spaces (READY does)."""
    header, *lines = out.splitlines()
    names = header.split()
    starts = [header.index(f"{name} ") if name != names[-1] else header.rindex(name)
              for name in names]  # fmt: skip
    bounds = [*starts[1:], None]
    return [
        {
            name: line[start:end].strip()
            for name, start, end in zip(names, starts, bounds, strict=True)
        }
        for line in lines
    ]


STATUS = {
    "phase": "FailedOver",
    "activeTier": "fallback",
    "ready": "gpu 0/1 · cpu 2/2",
    "gpu": {"memoryUsedRatio": 0.99},
    "model": {"current": {"version": "joe-2"}, "state": "Updated"},
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "ServingTierReady",
            "message": "the fallback tier serves",
            "lastTransitionTime": "2025-01-01T00:00:00Z",
        }
    ],
}


def test_get_shows_the_printer_columns_with_the_status_values(
    kubectl: Kubectl, namespace: str
) -> None:
    _, manifest = in_namespace(ROOT / "examples" / "minimal.yaml", namespace)
    kubectl("apply", "-f", "-", stdin=manifest)
    # The admin writes status through the status subresource, as the operator does.
    patch = json.dumps({"status": STATUS})
    kubectl("-n", namespace, "patch", "voiceservice", "tts-minimal", "--subresource=status",
            "--type=merge", "-p", patch)  # fmt: skip

    out = kubectl("-n", namespace, "get", "voiceservices").stdout
    assert out.split("\n", 1)[0].split() == [
        "NAME", "TIER", "PHASE", "READY", "GPU-MEM", "MODEL", "AVAILABLE", "AGE"
    ]  # fmt: skip
    (row,) = table_rows(out)
    assert row["NAME"] == "tts-minimal"
    assert row["TIER"] == "fallback"
    assert row["PHASE"] == "FailedOver"
    assert row["READY"] == "gpu 0/1 · cpu 2/2"
    assert row["GPU-MEM"] == "0.99"
    assert row["MODEL"] == "joe-2"
    assert row["AVAILABLE"] == "True"
    # The short names and the category reach the same table (AGE may have ticked).
    for alias in ("vsvc", "voicesvc", "voiceops"):
        (same,) = table_rows(kubectl("-n", namespace, "get", alias).stdout)
        assert {**same, "AGE": ""} == {**row, "AGE": ""}, alias

    # The status schema holds for the status subresource too.
    refused = kubectl("-n", namespace, "patch", "voiceservice", "tts-minimal",
                      "--subresource=status", "--type=merge",
                      "-p", '{"status": {"phase": "Broken"}}', check=False)  # fmt: skip
    assert refused.returncode != 0
    assert 'status.phase: Unsupported value: "Broken"' in refused.stderr, refused.stderr
    # Status written through the main resource is ignored: status has its own writers.
    kubectl("-n", namespace, "patch", "voiceservice", "tts-minimal", "--type=merge",
            "-p", '{"status": {"phase": "Serving"}}')  # fmt: skip
    got = kubectl.json("-n", namespace, "get", "voiceservice", "tts-minimal")
    assert got["status"]["phase"] == "FailedOver"


def test_explain_shows_our_field_descriptions(kubectl: Kubectl) -> None:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    failover = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["failover"]
    out = kubectl("explain", "voiceservice.spec.failover").stdout
    assert "KIND:       VoiceService" in out
    assert "FIELD: failover <Object>" in out
    text = one_line(out)
    assert one_line(failover["description"]) in text
    for name, field in failover["properties"].items():
        kind = {"integer": "<integer>", "number": "<number>"}[field["type"]]
        assert f"{name} {kind} {one_line(field['description'])}" in text, name

    out = kubectl("explain", "voiceservice.spec.failover.windowSeconds").stdout
    assert "FIELD: windowSeconds <integer>" in out
    assert failover["properties"]["windowSeconds"]["description"] in one_line(out)


def test_openapi_v3_publishes_the_crd_schema(kubectl: Kubectl) -> None:
    """What kubectl explain reads: the API server's OpenAPI v3 document of our group."""
    group = "apis/voiceops.io/v1alpha1"
    deadline = time.monotonic() + 30  # the API server publishes a new CRD's schema shortly after
    while True:
        index = json.loads(kubectl("get", "--raw", "/openapi/v3").stdout)
        if group in index["paths"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "api/v1" in index["paths"]
    ref = index["paths"][group]["serverRelativeURL"]
    doc = json.loads(kubectl("get", "--raw", ref).stdout)
    schema = doc["components"]["schemas"]["io.voiceops.v1alpha1.VoiceService"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "voiceops.io", "version": "v1alpha1", "kind": "VoiceService"}
    ]
    window = schema["properties"]["spec"]["properties"]["failover"]["properties"]["windowSeconds"]
    assert (window["type"], window["minimum"], window["maximum"]) == ("integer", 1, 3600)


def test_strict_field_validation_refuses_an_unknown_field_naming_it(
    kubectl: Kubectl, namespace: str
) -> None:
    typo = yaml.safe_dump(
        {
            "apiVersion": "voiceops.io/v1alpha1",
            "kind": "VoiceService",
            "metadata": {"name": "typo", "namespace": namespace},
            "spec": {"failover": {"windowSecond": 5}},  # windowSeconds, misspelt
        }
    )
    refused = kubectl("apply", "--validate=strict", "-f", "-", stdin=typo, check=False)
    assert refused.returncode != 0
    assert 'unknown field "spec.failover.windowSecond"' in refused.stderr, refused.stderr
    assert kubectl("-n", namespace, "get", "voiceservices", "-o", "name").stdout == ""

    # kubectl's default is strict too.
    refused = kubectl("apply", "-f", "-", stdin=typo, check=False)
    assert 'unknown field "spec.failover.windowSecond"' in refused.stderr, refused.stderr

    # Warn: admitted with the field pruned, and the user told which field.
    warned = kubectl("apply", "--validate=warn", "-f", "-", stdin=typo)
    assert 'Warning: unknown field "spec.failover.windowSecond"' in warned.stderr
    failover = kubectl.json("-n", namespace, "get", "voiceservice", "typo")["spec"]["failover"]
    assert "windowSecond" not in failover
    assert failover["windowSeconds"] == 10  # the CRD's default, not the misspelt 5


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_applies_strictly_and_round_trips(
    kubectl: Kubectl, namespace: str, example: Path
) -> None:
    docs, manifest = in_namespace(example, namespace)
    created = kubectl("apply", "--validate=strict", "-f", "-", stdin=manifest).stdout
    (vs,) = [d for d in docs if d["kind"] == "VoiceService"]
    name = vs["metadata"]["name"]
    assert f"voiceservice.voiceops.io/{name} created" in created
    for secret in [d for d in docs if d["kind"] == "Secret"]:  # local.yaml's fault token
        assert f"secret/{secret['metadata']['name']} created" in created
    got = kubectl.json("-n", namespace, "get", "voiceservice", name)
    # Applying it again changes nothing. (kubectl may still say "configured": a list
    # whose items the API server defaults, spec.gpu.tolerations' value, differs from
    # the manifest, so client-side apply sends the list again, a no-op.)
    kubectl("apply", "--validate=strict", "-f", "-", stdin=manifest)
    again = kubectl.json("-n", namespace, "get", "voiceservice", name)
    assert again["metadata"]["resourceVersion"] == got["metadata"]["resourceVersion"]
    assert again["metadata"]["generation"] == 1

    # What the example sets is kept; what it leaves out takes the CRD's defaults.
    for key, value in (vs.get("spec") or {}).items():
        assert _contains(got["spec"][key], value), key
    assert got["spec"]["failover"]["windowSeconds"] == (
        (vs.get("spec") or {}).get("failover", {}).get("windowSeconds", 10)
    )
    listed = kubectl("-n", namespace, "get", "voiceservices").stdout
    assert [r["NAME"] for r in table_rows(listed)] == [name]

    deleted = kubectl("delete", "-f", "-", "--wait=true", stdin=manifest).stdout
    assert f'voiceservice.voiceops.io "{name}" deleted' in deleted
    gone = kubectl("-n", namespace, "get", "voiceservice", name, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr


def test_an_invalid_value_is_refused_naming_the_field_and_the_limit(
    kubectl: Kubectl, namespace: str
) -> None:
    too_long = yaml.safe_dump(
        {
            "apiVersion": "voiceops.io/v1alpha1",
            "kind": "VoiceService",
            "metadata": {"name": "slow", "namespace": namespace},
            "spec": {"failover": {"windowSeconds": 4000, "recoverAfterSeconds": 4000}},
        }
    )
    refused = kubectl("apply", "-f", "-", stdin=too_long, check=False)
    assert refused.returncode != 0
    assert "spec.failover.windowSeconds: Invalid value: 4000" in refused.stderr, refused.stderr
    assert "less than or equal to 3600" in refused.stderr


def _contains(found: Any, wanted: Any) -> bool:
    """``wanted`` is in ``found``: the API server adds defaults, never drops what was set."""
    if isinstance(wanted, dict):
        return isinstance(found, dict) and all(
            k in found and _contains(found[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(found, list)
            and len(found) == len(wanted)
            and all(_contains(f, w) for f, w in zip(found, wanted, strict=True))
        )
    if isinstance(wanted, float) or isinstance(found, float):
        return float(found) == float(wanted)
    return found == wanted
