"""The "worker killed mid-job" chaos scenario (issue 16): its declaration, and that the API
target skips it with the reason (the local cluster runs it: docs/chaos.md)."""

from __future__ import annotations

import pytest
from voiceops_chaos import catalogue as c
from voiceops_chaos.targets import ApiFaults


def test_the_scenario_kills_the_gpu_pod_while_it_makes_a_jobs_chunks() -> None:
    scenario = c.load_catalogue().select(["worker-killed-mid-job"])[0]
    assert scenario.fault_class == "crash"
    assert scenario.budget.kind == "crash"
    action = scenario.method[0].do
    assert isinstance(action, c.KillJobWorker)
    assert (action.tier, action.chars, action.job_within) == ("gpu", 20_000, 180)
    assert scenario.method[0].traffic_moves_to == "fallback"
    assert scenario.method[1].expect[0].restarted == "gpu"


def test_a_kill_job_worker_action_is_checked_like_every_other() -> None:
    with pytest.raises(c.CatalogueError, match=r"do\.kill_job_worker\.chars"):
        c.parse_catalogue(
            "scenarios: [{id: a, title: t, budget: {kind: crash}, "
            "method: [{do: {action: kill_job_worker, chars: 10}}]}]"
        )


class _NoApi:
    pass


class _NoObserver:
    namespace, name = "ns", "tts"


def test_the_api_target_skips_it_saying_why() -> None:
    target = ApiFaults(_NoApi(), _NoObserver())  # type: ignore[arg-type]
    target.fault_endpoint_problem = None
    target.operator_problem = None
    reason = target.unsupported(c.KillJobWorker(action="kill_job_worker"))
    assert reason is not None
    assert "Redis" in reason
    assert "local cluster" in reason
