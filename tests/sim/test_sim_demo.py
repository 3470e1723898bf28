"""``python -m voiceops_sim.demo``: the whole product on the simulated cluster, end to end.

Real: the demo process, the operator process, vits and espeak service processes,
HTTP. Test doubles: the API emulator, the simulated kubelet and its Service proxy.
"""

from __future__ import annotations

import array
import base64
import json
import math
import os
import signal
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from voiceops_sim.demo import EXAMPLE_FILE, parse_args, secret_data, wav_facts

REPO = Path(__file__).resolve().parents[2]


def demo_command(output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "voiceops_sim.demo", "--output", str(output), *extra]


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


def test_secret_string_data_is_folded_like_the_api_server() -> None:
    secret = {"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"token": "abc"}}
    folded = secret_data(secret)
    assert "stringData" not in folded
    assert base64.b64decode(folded["data"]["token"]) == b"abc"
    other = {"kind": "ConfigMap", "data": {"a": "b"}}
    assert secret_data(other) is other


def test_options_reject_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args([]).scenario == "basic"
    assert parse_args(["--scenario", "all", "--keep-running"]).keep_running
    with pytest.raises(SystemExit):
        parse_args(["--ready-timeout", "0"])
    assert "--ready-timeout: must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--scenario", "everything"])
    assert EXAMPLE_FILE.exists()


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_demo_basic_scenario_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        demo_command(out, "--scenario", "basic"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "demo passed" in proc.stdout

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
    assert processes_using(out) == []


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_demo_missed_deadline_fails_clearly_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        demo_command(out, "--ready-timeout", "2"),
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout[-4000:]
    assert "DEMO FAILED at step 'Serving with a ready GPU pod" in proc.stdout
    assert "last VoiceService status: phase=" in proc.stdout
    assert "--- tail of" in proc.stdout
    assert processes_using(out) == []


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_demo_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        demo_command(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded by the test timeout
            if "waiting for the VoiceService" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest
    assert "interrupted: stopping the cluster" in rest
    assert processes_using(out) == []
