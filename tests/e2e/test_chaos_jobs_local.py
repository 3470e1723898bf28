"""worker-killed-mid-job on the local cluster (issue 16): a long-text job through the front
Service, the GPU pod SIGKILLed while it holds one of its chunks, and the job still succeeds
with every chunk once, the lost chunk retaken by the fallback pod; clients within budget.

Real: the control plane, the operator (spec.jobs wired into both tiers), the service pods
(VITS on the GPU tier, on CPU here; espeak on the fallback), a redis-server at the pod
network's gateway, both client kinds. Double: the node agent (pods in network
namespaces, needs root). About a minute on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_chaos_local_subset import need_local_cluster
from testsupport.needs import missing
from voiceops_chaos.catalogue import load_catalogue
from voiceops_chaos.cli import run_local
from voiceops_chaos.load import LoadSpec
from voiceops_chaos.runner import RunSettings
from voiceops_localcluster.redis_server import RedisServerMissingError, find_redis_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


async def test_a_job_survives_its_gpu_pod_being_killed(tmp_path: Path) -> None:
    need_local_cluster()
    try:
        find_redis_server()
    except RedisServerMissingError as error:
        missing(str(error))
    work = tmp_path / "work"
    work.mkdir()
    document = await run_local(
        load_catalogue().select(["worker-killed-mid-job"]),
        RunSettings(duration=10, load=LoadSpec(clients=1, rate=10)),
        tmp_path / "report",
        work,
    )
    (scenario,) = document["scenarios"]
    assert scenario["status"] == "passed", scenario["problems"]
    done = scenario["steps"][0]["done"]
    assert "the job succeeded" in done
    assert "by espeak" in done  # the fallback tier made the chunks the dead pod held
    assert scenario["clients"]["openai"]["failures"] == 0
