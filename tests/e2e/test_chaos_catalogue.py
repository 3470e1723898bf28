"""The chaos catalogue: the shipped one validates; a bad one names every bad field."""

from __future__ import annotations

import pytest
from voiceops_chaos import catalogue as c
from voiceops_chaos.cli import catalogue_table, exit_code, parser
from voiceops_chaos.targets import ApiFaults, merge_patches, undo_patch

ISSUE_CATALOGUE = {
    "gpu-memory-pressure",
    "cuda-oom-storm",
    "gpu-pod-killed",
    "gpu-crash-loop",
    "hung-engine",
    "gpus-unschedulable",
    "node-lost",
    "operator-killed-mid-failover",
    "apiserver-restart-failed-over",
    "slow-network-gpu",
    "fallback-lost-failed-over",
    "load-spike",
    "rolling-update",
    "scale-down",
    "worker-killed-mid-job",  # issue 16
    "model-update-in-place",  # issue 17
}


def test_the_shipped_catalogue_has_every_scenario_of_the_issue() -> None:
    catalogue = c.load_catalogue()
    assert {s.id for s in catalogue.scenarios} == ISSUE_CATALOGUE
    classes = {s.id: s.fault_class for s in catalogue.scenarios}
    predictive = {
        "gpu-memory-pressure",
        "gpus-unschedulable",
        "rolling-update",
        "scale-down",
        "model-update-in-place",
    }
    assert {k for k, v in classes.items() if v == "predictive"} == predictive
    assert {"gpu-pod-killed", "node-lost"} <= {k for k, v in classes.items() if v == "crash"}
    for scenario in catalogue.scenarios:
        assert scenario.method, scenario.id


def test_the_catalogue_table_lists_each_scenario_once() -> None:
    table = catalogue_table(c.load_catalogue()).splitlines()
    assert len(table) == 1 + len(ISSUE_CATALOGUE)


BAD = """
scenarios:
  - id: pressure
    title: bad ratio and an unknown action
    budget: {kind: zero_loss}
    method:
      - do: {action: gpu_memory, ratio: 1.5}
      - do: {action: melt_gpu}
  - id: pressure
    title: a repeated id, an expectation with nothing to check
    budget: {kind: everything}
    method:
      - do: {action: observe}
        expect: [{within: 5}]
"""


def test_a_bad_catalogue_names_every_bad_field_with_its_scenario() -> None:
    with pytest.raises(c.CatalogueError) as caught:
        c.parse_catalogue(BAD, "bad.yaml")
    text = str(caught.value)
    assert text.startswith("bad.yaml: ")
    first, second = "(scenario 'pressure'): ", "(scenario 'pressure'): "
    assert f"scenarios[0].method[0].do.gpu_memory.ratio {first}Input should be less than" in text
    assert f"scenarios[0].method[1].do {first}Input tag 'melt_gpu' found using 'action'" in text
    assert f"scenarios[1].budget.kind {second}Input should be" in text
    assert f"scenarios[1].method[0].expect[0] {second}Value error, an expectation needs" in text


def test_repeated_ids_unknown_fields_and_unknown_selections_are_refused() -> None:
    twice = """
scenarios:
  - {id: a, title: t, budget: {kind: report}, method: [{do: {action: observe}}]}
  - {id: a, title: t, budget: {kind: report}, method: [{do: {action: observe}}]}
"""
    with pytest.raises(c.CatalogueError, match="repeated: a"):
        c.parse_catalogue(twice)
    extra = (
        "scenarios: [{id: a, title: t, budget: {kind: report}, colour: red, "
        "method: [{do: {action: observe}}]}]"
    )
    with pytest.raises(c.CatalogueError, match=r"scenarios\[0\]\.colour .*Extra inputs"):
        c.parse_catalogue(extra)
    with pytest.raises(c.CatalogueError, match="not YAML"):
        c.parse_catalogue("scenarios: [")
    with pytest.raises(c.CatalogueError, match="unknown scenario"):
        c.load_catalogue().select(["gpu-memory-pressure", "no-such-thing"])
    chosen = c.load_catalogue().select(["gpu-pod-killed", "gpu-memory-pressure"])
    assert [s.id for s in chosen] == ["gpu-pod-killed", "gpu-memory-pressure"]


def test_undoing_a_spec_patch_restores_old_values_and_removes_new_keys() -> None:
    spec = {"replicas": 1, "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}
    patch = {"replicas": 2, "resources": {"requests": {"cpu": "150m"}, "limits": {"cpu": "1"}}}
    undo = undo_patch(spec, patch)
    assert undo == {"replicas": 1, "resources": {"requests": {"cpu": "100m"}, "limits": None}}
    # Two patches of one field: undone to the value before the first.
    first = undo_patch(spec, {"replicas": 2})
    second = undo_patch({**spec, "replicas": 2}, {"replicas": 3, "model": {"voice": "x"}})
    assert merge_patches(first, second) == {"replicas": 1, "model": None}


class _NoApi:
    token = None


class _NoObserver:
    namespace, name = "ns", "tts"


def test_the_api_target_says_why_it_cannot_do_what_needs_a_node() -> None:
    target = ApiFaults(_NoApi(), _NoObserver())  # type: ignore[arg-type]
    target.fault_endpoint_problem = "faultInjection off"
    target.operator_problem = None
    assert target.unsupported(c.NodeLost(action="node_lost", lost=True)) is not None
    assert target.unsupported(c.ApiServerRestart(action="apiserver_restart")) is not None
    assert target.unsupported(c.SlowNetwork(action="slow_network", delay_ms=5)) is not None
    assert target.unsupported(c.GpuMemory(action="gpu_memory", ratio=0.9)) == "faultInjection off"
    assert target.unsupported(c.KillPods(action="kill_pods", tier="gpu")) is None
    assert target.unsupported(c.PatchSpec(action="patch_spec", patch={"replicas": 2})) is None
    assert target.unsupported(c.OperatorProcess(action="operator", state="killed")) is None
    autoscale = c.Autoscale(action="autoscale")
    target.metrics_problem = "no metrics.k8s.io/v1beta1 API in this cluster"
    assert target.unsupported(autoscale) == target.metrics_problem
    target.metrics_problem = None
    assert target.unsupported(autoscale) is None


def test_the_cli_parses_its_options_and_fails_on_failures() -> None:
    args = parser().parse_args(
        ["--kubeconfig", "k", "--scenarios", "a,b", "--clients", "2", "--rate", "5",
         "--duration", "40", "--report", "out"]
    )  # fmt: skip
    assert (args.clients, args.rate, args.duration, str(args.report)) == (2, 5.0, 40.0, "out")
    assert exit_code({"scenarios": [{"status": "passed"}, {"status": "skipped"}]}, False) == 0
    assert exit_code({"scenarios": [{"status": "skipped"}]}, True) == 1
    assert exit_code({"scenarios": [{"status": "failed"}]}, False) == 1
