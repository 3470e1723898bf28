"""Long-text jobs on the CPU tier (espeak): throughput with 1 and 2 worker pods, and the
time from a worker's SIGKILL to its chunk being resumed.

Starts a real redis-server (append-only file on) and real ``voiceops-service``
processes (espeak, one chunk worker each) on loopback ports, all sharing the Redis:

* audio seconds per wall second of one job of ``--chars`` characters (default 20,000),
  from POST to ``succeeded``, with 1 and with 2 service processes ("pods"), medians of
  ``--rounds`` runs each; the
  baseline in the same run is the same text through ``POST /v1/audio/speech`` on one
  pod, 4,096 characters at a time, one request after another (what a client could do
  without jobs, with nothing checkpointed);
* resume after SIGKILL (``--kills`` runs): pod A's engine calls are made to hang (its
  fault endpoint), one-chunk jobs are sent until A holds one, then A is SIGKILLed;
  measured from the kill to pod B holding that chunk (XAUTOCLAIM) and to the chunk's
  audio being committed, with the visibility timeout ``--visibility`` (a deployment's
  default is 30 s). The chunk is retaken between (timeout - A's last renewal of its
  hold, renewed every third of the timeout) and (timeout + one XREADGROUP block, 1 s).

    .venv/bin/python bench/jobs_throughput.py [--chars 20000] [--rounds 5] [--kills 5]
        [--visibility 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
from _common import cpu_model
from voiceops_localcluster.ports import free_port
from voiceops_localcluster.redis_server import RedisServer

FAULT_TOKEN = "bench-fault-token"
RESULTS = Path(__file__).parent / "results" / "jobs_throughput.json"
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Meanwhile, the farmer counts his sheep and wonders whether rain will come.",
    "An audiobook chapter is far longer than one request may be.",
    "Each chunk is committed to Redis as soon as it is made, so nothing is lost.",
    "Nobody knows what tomorrow brings, but the job will still be there!",
)


def text_of(chars: int) -> str:
    words: list[str] = []
    n = 0
    while sum(len(w) + 1 for w in words) < chars:
        words.append(SENTENCES[n % len(SENTENCES)])
        n += 1
        if n % 7 == 0:
            words.append("\n\n")
    return " ".join(words)[:chars].rsplit(" ", 1)[0] + "."


class Pod:
    def __init__(self, folder: Path, redis_url: str, name: str, visibility: float) -> None:
        self.port = free_port()
        self.name = name
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEOPS_")}
        env.update(
            VOICEOPS_HOST="127.0.0.1",
            VOICEOPS_PORT=str(self.port),
            VOICEOPS_ENGINE="espeak",
            VOICEOPS_POD_NAME=name,
            VOICEOPS_JOBS_REDIS_URL=redis_url,
            VOICEOPS_JOBS_VISIBILITY_TIMEOUT_SECONDS=str(visibility),
            VOICEOPS_FAULT_INJECTION="true",
            VOICEOPS_FAULT_TOKEN=FAULT_TOKEN,
            VOICEOPS_WEB_UI="false",
            VOICEOPS_LOG_LEVEL="warning",
        )
        executable = Path(sys.executable).with_name("voiceops-service")
        log = (folder / f"{name}.log").open("wb")
        self.process = subprocess.Popen([str(executable)], env=env, stdout=log, stderr=log)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited: {(folder / f'{name}.log').read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"{name} not ready in 60 s")

    def consumer(self) -> str:
        return f"{self.name}-{self.process.pid}-0"

    def delay(self, seconds: float) -> None:
        httpx.post(
            f"{self.url}/admin/faults",
            json={"engine_delay_seconds": seconds},
            headers={"Authorization": f"Bearer {FAULT_TOKEN}"},
        ).raise_for_status()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_job(url: str, text: str) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        job = client.post("/v1/audio/jobs", json={"input": text, "response_format": "pcm"})
        job.raise_for_status()
        job_id = job.json()["id"]
        while True:
            state = client.get(f"/v1/audio/jobs/{job_id}").json()
            if state["state"] == "succeeded":
                break
            if state["state"] in ("failed", "cancelled"):
                raise RuntimeError(state)
            time.sleep(0.02)
        wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "audio_s": state["audio_seconds"],
        "chunks": state["chunks"]["total"],
        "audio_per_wall": state["audio_seconds"] / wall,
        "pods": len({maker["pod"] for maker in state["made_by"]}),
    }


def speech_baseline(url: str, text: str) -> dict[str, float]:
    pieces, rest = [], text
    while rest:
        cut = rest[:4096].rsplit(". ", 1)[0] + "." if len(rest) > 4096 else rest
        pieces.append(cut)
        rest = rest[len(cut) :].lstrip()
    samples = 0
    with httpx.Client(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        for piece in pieces:
            answer = client.post(
                "/v1/audio/speech",
                json={"model": "tts-1", "input": piece, "response_format": "pcm"},
            )
            answer.raise_for_status()
            samples += len(answer.content) // 2
            rate = int(answer.headers["x-voiceops-sample-rate"])
        wall = time.perf_counter() - started
    return {"wall_s": wall, "audio_s": samples / rate, "audio_per_wall": samples / rate / wall}


def resume_after_kill(folder: Path, server: RedisServer, visibility: float) -> dict[str, float]:
    """One kill: one-chunk jobs until the doomed pod (engine calls hang) holds one, then
    SIGKILL it; the survivor (no delay) makes the others meanwhile and resumes this one."""
    store = redis.Redis.from_url(server.url)
    doomed = Pod(folder, server.url, "doomed", visibility)
    survivor = Pod(folder, server.url, "survivor", visibility)
    stream = "voiceops:jobs:chunks"
    try:
        doomed.delay(600)
        deadline = time.monotonic() + 60
        held: list[dict[str, object]] = []
        with httpx.Client(base_url=doomed.url, timeout=30) as client:
            while not held:
                if time.monotonic() > deadline:
                    raise RuntimeError("the doomed pod never took a chunk")
                job = client.post("/v1/audio/jobs", json={"input": SENTENCES[0]}).json()
                job_id = job["id"]
                state = ""
                while not held and state != "succeeded":  # taken by one of the two
                    held = store.xpending_range(stream, "workers", "-", "+", 10, doomed.consumer())
                    state = client.get(f"/v1/audio/jobs/{job_id}").json()["state"]
                    time.sleep(0.005)
        entry = held[0]["message_id"]
        fields = store.xrange(stream, entry, entry)[0][1]
        job_id, index = fields[b"job"].decode(), int(fields[b"index"])
        killed = time.perf_counter()
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
        retaken: float | None = None
        committed: float | None = None
        while committed is None:
            now = time.perf_counter()
            if now - killed > visibility + 60:
                raise RuntimeError("the chunk was not resumed")
            if retaken is None:
                rows = store.xpending_range(stream, "workers", entry, entry, 1)
                if rows and rows[0]["consumer"].decode() == survivor.consumer():
                    retaken = now - killed
            if store.hexists(f"voiceops:jobs:job:{job_id}:audio", str(index)):
                committed = now - killed
            time.sleep(0.002)
        return {
            "retaken_s": retaken if retaken is not None else committed,
            "committed_s": committed,
        }
    finally:
        doomed.stop()
        survivor.stop()
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--visibility", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each throughput case")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the processes on the way out
    text = text_of(args.chars)
    results: dict[str, object] = {"cpu": cpu_model(), "cores": os.cpu_count(), "chars": len(text)}
    with tempfile.TemporaryDirectory(prefix="jobs-bench-") as tmp:
        folder = Path(tmp)
        server = RedisServer(folder / "redis")
        server.start()
        try:
            pods = [Pod(folder, server.url, "pod-0", args.visibility)]
            try:
                run_job(pods[0].url, text_of(800))  # warm up
                baseline, one_pod, two_pods = [], [], []
                for _ in range(args.rounds):  # interleaved: drift hits both alike
                    baseline.append(speech_baseline(pods[0].url, text))
                    one_pod.append(run_job(pods[0].url, text))
                pods.append(Pod(folder, server.url, "pod-1", args.visibility))
                for _ in range(args.rounds):
                    two_pods.append(run_job(pods[0].url, text))
                results["speech_baseline_1_pod"] = baseline
                results["job_1_pod"] = one_pod
                results["job_2_pods"] = two_pods
            finally:
                for pod in pods:
                    pod.stop()
            kills = [resume_after_kill(folder, server, args.visibility) for _ in range(args.kills)]
            results["kills"] = kills
        finally:
            server.stop()
    base = statistics.median(r["audio_per_wall"] for r in baseline)
    one = statistics.median(r["audio_per_wall"] for r in one_pod)
    two = statistics.median(r["audio_per_wall"] for r in two_pods)
    retaken = [k["retaken_s"] for k in kills]
    committed = [k["committed_s"] for k in kills]
    results["summary"] = {
        "audio_per_wall_median": {"speech": base, "job_1_pod": one, "job_2_pods": two},
        "job_1_pod_vs_speech": one / base,
        "job_2_pods_vs_1_pod": two / one,
        "retaken_median_s": statistics.median(retaken),
        "retaken_max_s": max(retaken),
        "committed_median_s": statistics.median(committed),
        "visibility_s": args.visibility,
    }
    print(json.dumps(results, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
