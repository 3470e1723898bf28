"""The chart ships the operator's CRD byte for byte, plus kopf's peering CRDs."""

from __future__ import annotations

import yaml
from testsupport.chart import CHART_DIR, REPO_ROOT, by_kind, render

SOURCE_CRD = REPO_ROOT / "crds" / "voiceservice.yaml"
CHART_CRD = CHART_DIR / "crds" / "voiceservice.yaml"


def test_chart_crd_is_identical_to_the_operator_crd() -> None:
    assert SOURCE_CRD.is_file(), "crds/voiceservice.yaml is missing (voiceops-operator crd)"
    assert CHART_CRD.read_bytes() == SOURCE_CRD.read_bytes(), (
        "charts/voiceops/crds/voiceservice.yaml differs from crds/voiceservice.yaml: "
        "run `make chart-crd`"
    )


def test_chart_installs_the_voiceservice_crd_and_the_peering_crds() -> None:
    names = {crd["metadata"]["name"] for crd in by_kind(render({}), "CustomResourceDefinition")}
    assert names == {
        "voiceservices.voiceops.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev",
    }  # fmt: skip
    rendered = next(
        c for c in by_kind(render({}), "CustomResourceDefinition")
        if c["metadata"]["name"] == "voiceservices.voiceops.io"
    )  # fmt: skip
    assert rendered == yaml.safe_load(SOURCE_CRD.read_text())


def test_crds_live_in_the_crds_folder_and_not_in_templates() -> None:
    # Helm installs crds/ before templates and never deletes them on uninstall
    # (VoiceServices survive); the upgrade story is in the chart README.
    for template in (CHART_DIR / "templates").rglob("*"):
        if template.is_file():
            assert "kind: CustomResourceDefinition" not in template.read_text(), template


def test_peering_crds_match_what_kopf_looks_up() -> None:
    from kopf._cogs.structs import references  # kopf's own selectors for peering

    served = {
        (crd["spec"]["group"], crd["spec"]["names"]["plural"], crd["spec"]["scope"])
        for crd in yaml.safe_load_all((CHART_DIR / "crds" / "kopf-peering.yaml").read_text())
    }
    cluster, namespaced = references.CLUSTER_PEERINGS_K, references.NAMESPACED_PEERINGS_K
    assert (cluster.group, cluster.any_name, "Cluster") in served
    assert (namespaced.group, namespaced.any_name, "Namespaced") in served
