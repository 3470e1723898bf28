"""CI's chaos subset: the runner in-process on the local cluster, two scenarios, budgets held.

Real: etcd, kube-apiserver, controller manager, scheduler, the operator process, the
``voiceops-service`` pods (VITS on the GPU tier, on CPU here; espeak on the fallback)
and both client kinds (raw, and the official ``openai`` client with its retries)
through the front Service. Test double: the node agent (kubelet and kube-proxy; pods in
network namespaces, needs root, which CI has) and the fake NVML library through which
the GPU memory pressure enters. A regression in failover, routing or drain shows as a
failed request or a missed phase here. About two minutes on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from testsupport.needs import missing
from voiceops_chaos.catalogue import load_catalogue
from voiceops_chaos.cli import run_local
from voiceops_chaos.load import LoadSpec
from voiceops_chaos.runner import RunSettings
from voiceops_localcluster import pod_network
from voiceops_localcluster.kube_binaries import BinariesError, find

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

SUBSET = ["gpu-memory-pressure", "gpu-pod-killed"]


def need_local_cluster() -> None:
    """Skip where the local cluster cannot run; fail under CI=true, where it must."""
    problem = pod_network.available()
    if problem is None:
        try:
            find()
        except BinariesError as error:
            problem = f"the control plane's binaries are missing: {error}"
    if problem is not None:
        missing(problem)


async def test_memory_pressure_and_a_killed_gpu_pod_stay_within_budget(tmp_path: Path) -> None:
    need_local_cluster()
    report = tmp_path / "report"
    work = tmp_path / "work"
    work.mkdir()
    document = await run_local(
        load_catalogue().select(SUBSET),
        RunSettings(duration=16, load=LoadSpec(clients=1, rate=10)),
        report,
        work,
    )
    by_id = {s["id"]: s for s in document["scenarios"]}
    for scenario in SUBSET:
        assert by_id[scenario]["status"] == "passed", by_id[scenario]["problems"]
    pressure = by_id["gpu-memory-pressure"]["clients"]
    assert pressure["plain"]["failures"] == 0
    assert pressure["openai"]["failures"] == 0
    assert pressure["plain"]["requests"] > 0
    assert pressure["openai"]["requests"] > 0
    # Both clients saw both tiers answer: the failover and the fail-back reached them.
    assert set(pressure["openai"]["answered_by"]) == {"vits", "espeak"}
    killed = by_id["gpu-pod-killed"]
    assert killed["clients"]["openai"]["failures"] == 0
    goals = document["goals"]
    assert goals["crash"]["met"], goals["crash"]
    assert goals["leftovers"]["met"], goals["leftovers"]
    assert goals["leftovers"]["teardown_checked"]
    phases = {p["phase"] for p in by_id["gpu-memory-pressure"]["fault_to_phase"]}
    assert phases == {"Degraded", "FailedOver", "Recovering", "Serving"}
    assert (report / "report.json").is_file()
    assert "| gpu-pod-killed | ✅ passed |" in (report / "report.md").read_text()
    for scenario in SUBSET:
        png = report / f"timeline-{scenario}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
