"""Pure deployment-controller decisions of the simulated cluster."""

from __future__ import annotations

from voiceops_sim.deployments import (
    HASH_LABEL,
    deployment_status,
    new_pod,
    plan_pods,
    template_hash,
)


def _deployment(replicas: int, image: str = "a:1", strategy: dict | None = None) -> dict:
    spec = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "x"}},
        "template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": image}]},
        },
    }
    if strategy:
        spec["strategy"] = strategy
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": spec,
    }


def _pods(dep: dict, count: int, ready: bool) -> list[dict]:
    pods = []
    for n in range(count):
        pod = new_pod(dep, template_hash(dep["spec"]["template"]), suffix=f"p{n}{ready}")
        pod["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:0{n}Z"
        pod["spec"]["nodeName"] = "node"
        pod["status"] = {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        }
        pods.append(pod)
    return pods


def test_scale_up_and_down() -> None:
    dep = _deployment(3)
    assert plan_pods(dep, _pods(dep, 1, True)).create == 2
    down = plan_pods(_deployment(1), _pods(dep, 2, True) + _pods(dep, 1, False))
    assert len(down.delete) == 2
    assert down.delete[0]["status"]["conditions"][0]["status"] == "False"  # not-ready first


def test_rolling_update_surges_then_retires_old_pods() -> None:
    old = _deployment(2, "a:1")
    new = _deployment(2, "a:2")
    old_pods = _pods(old, 2, True)
    first = plan_pods(new, old_pods)
    assert (first.create, first.delete) == (1, [])  # maxSurge 25% of 2 rounds up to 1
    new_ready = _pods(new, 1, True)
    second = plan_pods(new, old_pods + new_ready)
    assert second.create == 0
    assert len(second.delete) == 1
    assert second.delete[0]["metadata"]["labels"][HASH_LABEL] == template_hash(
        old["spec"]["template"]
    )


def test_recreate_deletes_old_pods_first() -> None:
    old = _deployment(2, "a:1")
    new = _deployment(2, "a:2", {"type": "Recreate"})
    plan = plan_pods(new, _pods(old, 2, True))
    assert (plan.create, len(plan.delete)) == (0, 2)
    assert plan_pods(new, []).create == 2


def test_status_counts_and_conditions() -> None:
    dep = _deployment(2)
    status = deployment_status(dep, _pods(dep, 1, True) + _pods(dep, 1, False), "T")
    assert status["replicas"] == 2
    assert status["readyReplicas"] == 1
    assert status["unavailableReplicas"] == 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "False"  # maxUnavailable 25% of 2 is 0
    assert conditions["Progressing"]["reason"] == "ReplicaSetUpdated"
    stuck = deployment_status(dep, [], "T", deadline_exceeded=True)
    assert {c["type"]: c["reason"] for c in stuck["conditions"]}["Progressing"] == (
        "ProgressDeadlineExceeded"
    )
    assert "readyReplicas" not in stuck
