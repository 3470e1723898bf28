"""GPU hardware faults (an XID, a lost GPU): fail over at once and replace the pod."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voiceops_operator import healing, observe, reasons
from voiceops_operator.events import Note
from voiceops_operator.policy import (
    GPUFault,
    GPUMetrics,
    Observation,
    PodObservation,
    PolicyConfig,
    PolicyState,
    decide,
)
from voiceops_operator.settings import OperatorSettings

CFG = PolicyConfig(window_seconds=10, recover_after_seconds=30)
T0 = 1_800_000_000.0
XID_79 = GPUFault("0", "GPU-5a1b", "xid_79")
METRICS = """\
# HELP voiceops_gpu_healthy 1 while healthy
# TYPE voiceops_gpu_healthy gauge
voiceops_gpu_healthy{gpu="0",uuid="GPU-5a1b",reason="xid_79"} 0.0
voiceops_gpu_healthy{gpu="1",uuid="GPU-77c0",reason="ok"} 1.0
voiceops_gpu_memory_used_bytes{gpu="0"} 10.0
voiceops_gpu_memory_total_bytes{gpu="0"} 100.0
"""


def test_an_unhealthy_gpu_in_the_metrics_is_a_fault_naming_gpu_uuid_and_reason() -> None:
    parsed = observe.parse_gpu_metrics(METRICS)
    assert parsed.faults == (XID_79,)
    assert parsed.memory_used_ratio == 0.1


def test_an_unready_pod_keeps_its_faults_and_its_node() -> None:
    pod = {
        "metadata": {"name": "tts-gpu-a"},
        "spec": {"nodeName": "gpu-node-3"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]},
    }
    seen = observe.classify_pod(pod, T0, GPUMetrics(0.1, faults=(XID_79,)))
    assert seen.metrics is None  # memory of an unready pod is not read
    assert seen.gpu_faults == (XID_79,)
    assert seen.node == "gpu-node-3"


def gpu(name: str, faults: tuple[GPUFault, ...] = (), ready: bool = True) -> PodObservation:
    metrics = GPUMetrics(0.2, faults=faults)
    return PodObservation(name=name, ready=ready, metrics=metrics, node="n1", gpu_faults=faults)


def serving(**kw: Any) -> PolicyState:
    return PolicyState(phase="Serving", active_tier="gpu", fallback_replicas=1, **kw)


def test_a_fault_on_the_only_gpu_pod_fails_over_at_once_even_inside_the_cooldown() -> None:
    for ready in (True, False):  # before and after the pod's readiness says so
        obs = Observation(T0, (gpu("tts-gpu-a", (XID_79,), ready),), fallback_ready=1)
        d = decide(CFG, serving(last_transition_time=T0 - 1), obs)
        assert (d.phase, d.active_tier) == ("FailedOver", "fallback")
        assert d.reason == reasons.GPU_HARDWARE_FAULT
        assert "tts-gpu-a on n1: GPU 0 (GPU-5a1b): xid_79" in d.message
        assert [r.pod for r in d.replace] == ["tts-gpu-a"]


def test_a_fault_on_one_of_two_gpu_pods_replaces_it_and_waits_to_degrade() -> None:
    obs = Observation(T0, (gpu("tts-gpu-a", (XID_79,)), gpu("tts-gpu-b")), fallback_ready=1)
    d = decide(CFG, serving(), obs)
    assert d.phase == "Serving"  # the healthy pod serves; pressure waits its window
    assert d.assessment.reason == reasons.GPU_HARDWARE_FAULT
    assert [r.pod for r in d.replace] == ["tts-gpu-a"]
    assert d.replace[0].message == "replacing pod tts-gpu-a on node n1: GPU 0 (GPU-5a1b): xid_79"


class Recorder:
    """The parts of HealingRuntime that replacing a pod uses."""

    def __init__(self) -> None:
        self.settings = OperatorSettings(_env_file=None)
        self.instance = "operator-0"
        self.deleted: list[str] = []
        self.notes: list[Note] = []
        self.api = self

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.deleted.append(f"{kind}/{namespace}/{name}")
        return True

    async def events(self, body: Mapping[str, Any], note: Note) -> None:
        self.notes.append(note)


async def test_the_loop_deletes_a_faulty_pod_once_and_says_why() -> None:
    runtime = Recorder()
    loop = healing.HealingLoop(runtime, "speech", "tts", pods=list)  # type: ignore[arg-type]
    body = {"metadata": {"name": "tts", "namespace": "speech", "uid": "u"}}
    pods = [{"metadata": {"name": "tts-gpu-a", "uid": "pod-1"}}]
    obs = Observation(T0, (gpu("tts-gpu-a", (XID_79,)),), fallback_ready=1)
    decision = decide(CFG, serving(), obs)
    await loop._replace_faulty(body, pods, decision)
    await loop._replace_faulty(body, pods, decision)  # the next pass: already deleted
    assert runtime.deleted == ["Pod/speech/tts-gpu-a"]
    (note,) = runtime.notes
    assert (note.type, note.reason, note.action) == ("Warning", "GPUHardwareFault", "ReplacePod")
    assert "tts-gpu-a on node n1: GPU 0 (GPU-5a1b): xid_79" in note.message
