"""``python -m voiceops_localcluster.demo``: the whole product on a local cluster, end to end.

Real: the control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler), kubectl, the demo process, the operator process, vits and espeak
service processes, HTTP. Test doubles: the node agent (kubelet and kube-proxy) and,
for pods on loopback addresses, the Prometheus stand-in the operator reads through.
"""

from __future__ import annotations

import array
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from testsupport.needs import missing as missing_resource
from testsupport.needs import network_namespaces
from voiceops_contract import metrics as m
from voiceops_localcluster import kube_binaries
from voiceops_localcluster.demo import EXAMPLE_FILE, parse_args, printer_value, wav_facts
from voiceops_localcluster.demo.cluster import kubectl_binary
from voiceops_localcluster.demo.prometheus import PrometheusStandIn, parse_samples, parse_selector
from voiceops_localcluster.demo.report import printer_columns
from voiceops_operator.observe import PrometheusSource

REPO = Path(__file__).resolve().parents[2]


def demo_command(output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "voiceops_localcluster.demo", "--output", str(output), *extra]


def processes_using(path: Path) -> list[str]:
    """Processes with a file under ``path`` open or ``path`` in their environment (leaks)."""
    needle = str(path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if any(link.startswith(needle) for link in links) or needle.encode() in environ:
            found.append(f"{entry.name}: {cmdline}")
    return found


def read_wav(path: Path) -> tuple[float, float, int]:
    """(seconds, RMS of the int16 samples, sample rate), read independently of the demo."""
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2
        samples = array.array("h", wav.readframes(wav.getnframes()))
        rate = wav.getframerate()
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    return len(samples) / rate, rms, rate


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    it = iter(seen)
    return all(phase in it for phase in wanted)


@pytest.fixture
def cluster_tools() -> None:
    """The demo's Kubernetes binaries and kubectl; skip without them (fail under CI=true,
    where ``make test`` installs both first)."""
    try:
        binaries = kube_binaries.find()
    except kube_binaries.BinariesError as error:
        binaries, problem = None, str(error)
    else:
        problem = "run `make kube-binaries` once"
    missing = [] if binaries is not None else [f"Kubernetes binaries ({problem})"]
    if kubectl_binary() is None:
        missing.append("kubectl (run `make tools`)")
    if missing:
        missing_resource(f"the demo needs {' and '.join(missing)}")


@contextlib.contextmanager
def running_demo(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    """The demo as a child process (stdout and stderr together); killed if it outlives us."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_until(proc: subprocess.Popen[str], marker: str) -> str:
    """Its output up to the line with ``marker`` (bounded by the test's timeout)."""
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"the demo never printed {marker!r}:\n{''.join(seen)[-4000:]}")


# ------------------------------------------------------------------ unit


def test_wav_facts_tells_speech_from_silence(tmp_path: Path) -> None:
    def wav_bytes(samples: list[int]) -> bytes:
        path = tmp_path / "x.wav"
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(array.array("h", samples).tobytes())
        return path.read_bytes()

    tone = [int(8000 * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(8000)]
    loud = wav_facts(wav_bytes(tone))
    assert loud.seconds == pytest.approx(1.0)
    assert loud.rms == pytest.approx(8000 / math.sqrt(2), rel=0.01)
    assert wav_facts(wav_bytes([0] * 4000)).rms == 0.0
    with pytest.raises(ValueError, match="not a WAV file"):
        wav_facts(b'{"error": "busy"}')


def test_printer_columns_read_what_kubectl_get_shows() -> None:
    vs = {
        "status": {
            "activeTier": "fallback",
            "phase": "FailedOver",
            "gpu": {"memoryUsedRatio": 0.99},
            "model": {"current": {"version": "joe-2"}, "state": "Updated"},
            "conditions": [
                {"type": "Degraded", "status": "True"},
                {"type": "Ready", "status": "False"},
            ],
        }
    }
    values = {c["name"]: printer_value(vs, c["jsonPath"]) for c in printer_columns()}
    assert values == {
        "Tier": "fallback",
        "Phase": "FailedOver",
        "Ready": None,
        "GPU-Mem": 0.99,
        "Model": "joe-2",
        "Available": "False",
    }
    assert printer_value({}, '.status.conditions[?(@.type=="Ready")].status') is None


def test_options_reject_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args([]).scenario == "basic"
    assert parse_args([]).pod_network == "auto"
    assert parse_args(["--scenario", "all", "--keep-running"]).keep_running
    assert parse_args(["--pod-network", "loopback"]).pod_network == "loopback"
    with pytest.raises(SystemExit):
        parse_args(["--ready-timeout", "0"])
    assert "--ready-timeout: must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--scenario", "everything"])
    with pytest.raises(SystemExit):
        parse_args(["--pod-network", "host"])
    assert EXAMPLE_FILE.exists()


def test_example_failover_seconds_are_integers() -> None:
    # The real API server's CEL sees 1.0 as a double where the schema says integer and
    # fails the rule comparing them: the example must say 1, not 1.0.
    vs = next(
        d for d in yaml.safe_load_all(EXAMPLE_FILE.read_text()) if d["kind"] == "VoiceService"
    )
    seconds = {k: v for k, v in vs["spec"]["failover"].items() if k.endswith("Seconds")}
    assert seconds
    assert all(type(v) is int for v in seconds.values()), seconds


def test_prometheus_selector_and_text_parsing() -> None:
    assert parse_selector('{__name__=~"a|b", namespace="ns",pod=~"p-1"}') == {
        "__name__": ("=~", "a|b"),
        "namespace": ("=", "ns"),
        "pod": ("=~", "p-1"),
    }
    with pytest.raises(ValueError, match="bare selector"):
        parse_selector("sum(x)")
    text = '# HELP x y\nvoiceops_degraded 0\nvoiceops_gpu_healthy{gpu="0",reason="ok"} 1.0\n'
    assert parse_samples(text) == [
        ("voiceops_degraded", {}, "0"),
        ("voiceops_gpu_healthy", {"gpu": "0", "reason": "ok"}, "1.0"),
    ]


async def test_prometheus_stand_in_answers_the_operators_query() -> None:
    """The operator's own Prometheus client reads a pod's GPU memory through the stand-in."""
    exposition = (
        f'{m.GPU_MEMORY_USED_BYTES.name}{{gpu="0"}} 930\n'
        f'{m.GPU_MEMORY_TOTAL_BYTES.name}{{gpu="0"}} 1000\n'
        f"{m.REQUESTS_IN_FLIGHT.name} 2\n"
        "voiceops_queue_depth 5\n"
    )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=exposition)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]

    def pod(name: str, ip: str) -> dict[str, object]:
        ready = [{"type": "Ready", "status": "True"}]
        meta = {"name": name, "namespace": "ns"}
        return {"metadata": meta, "status": {"podIP": ip, "conditions": ready}}

    pods = [pod("gpu-a", "10.244.0.9"), pod("gpu-b", "10.244.0.10"), pod("other", "10.244.0.11")]
    reachable = {"gpu-a": f"127.0.0.1:{port}"}  # gpu-b answers nothing: unknown, not healthy
    stand_in = PrometheusStandIn(lambda: pods, lambda p: reachable.get(p["metadata"]["name"]))
    url = await stand_in.start()
    try:
        async with aiohttp.ClientSession() as session:
            result = await PrometheusSource(session, url, 2).scrape("ns", pods[:2])
    finally:
        await stand_in.stop()
        await runner.cleanup()
    assert result.metrics["gpu-a"] is not None
    assert result.metrics["gpu-a"].memory_used_ratio == pytest.approx(0.93)
    assert result.metrics["gpu-a"].in_flight == 2
    assert result.metrics["gpu-b"] is None
    assert result.errors == {"gpu-b": "no samples in Prometheus"}
    assert stand_in.queries == 1


def test_demo_says_what_to_install_without_kubernetes_binaries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, kube_binaries.ENV_BIN_DIR: str(tmp_path / "no-binaries")}
    proc = subprocess.run(
        demo_command(out), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DEMO FAILED at step 'find the Kubernetes binaries'" in proc.stdout
    assert "make kube-binaries" in proc.stdout
    assert "install Go >=" in proc.stdout
    assert processes_using(out) == []


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("pod_net", ["loopback", "namespaces"])
def test_demo_basic_scenario_end_to_end(tmp_path: Path, cluster_tools: None, pod_net: str) -> None:
    if pod_net == "namespaces":
        network_namespaces()
    out = tmp_path / "out"
    proc = subprocess.run(
        demo_command(out, "--scenario", "basic", "--pod-network", pod_net),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "demo passed" in proc.stdout
    assert "serverside-applied" in proc.stdout  # the real kubectl applied the example

    for name in ("01-gpu-tier.wav", "02-failed-over.wav", "03-recovered.wav"):
        seconds, rms, rate = read_wav(out / name)
        assert rate == 22050, name
        assert 0.5 < seconds < 10, (name, seconds)
        assert rms > 300, (name, rms)  # speech, not silence

    timeline = json.loads((out / "timeline.json").read_text())
    phases = timeline["phases"]
    assert is_subsequence(["Serving", "Degraded", "FailedOver", "Recovering", "Serving"], phases), (
        phases
    )
    requests = [e["text"] for e in timeline["entries"] if e["kind"] == "request"]
    assert requests == [
        "01-gpu-tier.wav: answered by the GPU tier (vits)",
        "02-failed-over.wav: answered by the fallback tier (espeak)",
        "03-recovered.wav: answered by the GPU tier (vits)",
    ]
    events = " ".join(e["text"] for e in timeline["entries"] if e["kind"] == "event")
    assert "Warning GPUMemoryCritical on VoiceService/tts-local" in events
    assert len(timeline["latencies"]) == 4
    assert all(0 < lat["seconds"] < 40 for lat in timeline["latencies"]), timeline["latencies"]
    assert processes_using(out) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_missed_deadline_fails_clearly_and_cleans_up(
    tmp_path: Path, cluster_tools: None
) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        demo_command(out, "--ready-timeout", "2"),
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout[-4000:]
    assert "DEMO FAILED at step 'Serving with a ready GPU pod" in proc.stdout
    assert "last VoiceService status: phase=" in proc.stdout
    assert "deployment.apps/tts-local-gpu" in proc.stdout  # listed from the API server
    assert "--- tail of" in proc.stdout
    assert processes_using(out) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_names_a_dead_control_plane_component(tmp_path: Path, cluster_tools: None) -> None:
    out = tmp_path / "out"
    with running_demo(demo_command(out)) as proc:
        read_until(proc, "waiting for the VoiceService")
        pid_file = out / "control-plane" / "pids" / "kube-scheduler.pid"
        os.kill(int(pid_file.read_text()), signal.SIGKILL)  # started by the demo we started
        rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1, rest[-4000:]
    assert "a control-plane component died: kube-scheduler exited" in rest
    assert "--- control-plane component died: kube-scheduler" in rest
    assert processes_using(out) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_stops_everything_on_ctrl_c(tmp_path: Path, cluster_tools: None) -> None:
    out = tmp_path / "out"
    with running_demo(demo_command(out)) as proc:
        read_until(proc, "waiting for the VoiceService")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest[-4000:]
    assert "interrupted: stopping the cluster" in rest
    assert processes_using(out) == []
