"""Model hot swap (issue 17): swap time per pod, failed requests during swaps under load, and
the audio cache's hit latency beside a miss.

One real ``voiceops-service --engine vits`` process (the joe voice, model versions
derived from it as in the tests: ``tests/testsupport/model_versions.py``) serves
closed-loop callers (distinct texts, so every request reaches the engine) while
the script swaps the model ``--swaps`` times through ``POST /admin/models``,
alternating two versions. Reported per swap: its total time and the load,
validate and drain parts, and every non-200 answer during the run (goal 0).

Baseline, same run, same machine: what a Rolling update pays per pod instead,
the time from starting a new service process with the new version to its
``/readyz`` answering 200 (the pod's start behind its startup probe, without the
scheduling and image pull a cluster adds), while the old process keeps serving
the same load. The ratio swap / start is the number to compare across runs.

Cache: the same short text asked again (hits) against distinct texts of the
same length (misses), no other load, medians.

    .venv/bin/python bench/model_swap.py                 # defaults: --swaps 4 --callers 2
    .venv/bin/python bench/model_swap.py --device cuda   # a GPU machine
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
import threading
import time
from pathlib import Path

import httpx
from _common import cpu_model, percentile
from voiceops_localcluster.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # testsupport: the derived model versions
from testsupport.model_versions import file_uri, reexported  # noqa: E402

TOKEN = "bench-model-token"
AUTH = {"X-Voiceops-Model-Token": TOKEN}
RESULTS = Path(__file__).parent / "results" / "model_swap.json"


class Service:
    def __init__(self, work: Path, model_dir: Path, version: str, device: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEOPS_")}
        env.update(
            VOICEOPS_HOST="127.0.0.1",
            VOICEOPS_PORT=str(self.port),
            VOICEOPS_ENGINE="vits",
            VOICEOPS_DEVICE=device,
            VOICEOPS_MODEL_PATH=str(model_dir),
            VOICEOPS_MODEL_VERSION=version,
            VOICEOPS_MODEL_ADMIN="true",
            VOICEOPS_MODEL_ADMIN_TOKEN=TOKEN,
            VOICEOPS_MODEL_SWAP_MAX_RTF="50",  # a loaded CPU; the rule is tested, not benched
            VOICEOPS_LOG_LEVEL="warning",
        )
        self.log = (work / f"service-{self.port}.log").open("wb")
        self.started = time.perf_counter()
        executable = Path(sys.executable).with_name("voiceops-service")
        self.process = subprocess.Popen(
            [str(executable)], env=env, stdout=self.log, stderr=self.log
        )

    def wait_ready(self, deadline_seconds: float = 180.0) -> float:
        """Seconds from process start to /readyz 200."""
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"service exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise SystemExit("service not ready in time")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


class Load:
    """Closed-loop callers with distinct short texts; every answer's code and time kept."""

    def __init__(self, url: str, callers: int) -> None:
        self.url = url
        self.answers: list[tuple[float, int, float]] = []  # (start, code, seconds)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call, args=(n,)) for n in range(callers)]

    def _call(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=120.0) as client:
            count = 0
            while not self._stop.is_set():
                count += 1
                body = {"model": "tts-1", "input": f"Caller {worker} asks for item {count}."}
                started = time.perf_counter()
                try:
                    code = client.post("/v1/audio/speech", json=body).status_code
                except httpx.HTTPError:
                    code = 0  # a refused or broken connection counts as failed
                self.answers.append((started, code, time.perf_counter() - started))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def swap(url: str, directory: Path, version: str) -> dict[str, object]:
    body = {"uri": file_uri(directory), "version": version}
    response = httpx.post(f"{url}/admin/models", json=body, headers=AUTH, timeout=300.0)
    if response.status_code != 200:
        raise SystemExit(f"swap to {version} failed: {response.status_code} {response.text}")
    return response.json()


def cache_latencies(url: str, rounds: int) -> dict[str, float]:
    text = "Thank you for calling, please hold."
    hits: list[float] = []
    misses: list[float] = []
    with httpx.Client(base_url=url, timeout=120.0) as client:
        for n in range(rounds):
            for wanted, kept in (
                (f"Thank you for calling, please hold {n:02d}.", misses),
                (text, hits),
            ):
                started = time.perf_counter()
                response = client.post("/v1/audio/speech", json={"model": "tts-1", "input": wanted})
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise SystemExit(f"speech failed: {response.status_code}")
                state = response.headers.get("X-Voiceops-Audio-Cache")
                if wanted == text and state != "hit" and n > 0:
                    raise SystemExit(f"expected a cache hit, got {state}")
                if n > 0 or wanted != text:
                    kept.append(elapsed)
    miss, hit = statistics.median(misses), statistics.median(hits)
    return {"miss_p50_ms": miss * 1000, "hit_p50_ms": hit * 1000, "miss_over_hit": miss / hit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=4)
    parser.add_argument("--callers", type=int, default=2)
    parser.add_argument("--starts", type=int, default=2, help="Rolling baseline: pod starts")
    parser.add_argument("--cache-rounds", type=int, default=15)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="model-swap-") as tmp:
        work = Path(tmp)
        v1, v2 = reexported(work / "v1"), reexported(work / "v2", length_scale=1.1)
        service = Service(work, v1, "v1", args.device)
        startup = service.wait_ready()
        try:
            reports: list[dict[str, object]] = []
            starts: list[float] = []
            with Load(service.url, args.callers) as load:
                time.sleep(3.0)  # steady load before the first swap
                swap_windows: list[tuple[float, float]] = []
                for n in range(args.swaps):
                    target, version = (v2, f"v2-{n}") if n % 2 == 0 else (v1, f"v1-{n}")
                    began = time.perf_counter()
                    reports.append(swap(service.url, target, version))
                    swap_windows.append((began, time.perf_counter()))
                    time.sleep(1.0)
                for _ in range(args.starts):  # Rolling baseline under the same load
                    fresh = Service(work, v2, "rolling", args.device)
                    try:
                        starts.append(fresh.wait_ready())
                    finally:
                        fresh.stop()
            answers = load.answers
            cache = cache_latencies(service.url, args.cache_rounds)
        finally:
            service.stop()

    failed = [a for a in answers if a[1] != 200]
    during = [a for a in answers if any(b <= a[0] <= e for b, e in swap_windows)]
    latencies = [a[2] for a in answers if a[1] == 200]
    swap_seconds = [float(r["total_seconds"]) for r in reports]  # type: ignore[arg-type]
    result = {
        "cpu": cpu_model(),
        "device": args.device,
        "callers": args.callers,
        "first_start_seconds": round(startup, 2),
        "swap_seconds": swap_seconds,
        "swap_parts": [
            {k: r[k] for k in ("load_seconds", "validate_seconds", "drain_seconds")}
            for r in reports
        ],
        "swap_p50_seconds": statistics.median(swap_seconds),
        "rolling_start_seconds": [round(s, 2) for s in starts],
        "rolling_start_p50_seconds": statistics.median(starts),
        "swap_over_start": statistics.median(swap_seconds) / statistics.median(starts),
        "requests": len(answers),
        "requests_started_during_swaps": len(during),
        "failed_requests": len(failed),
        "latency_p50_ms": percentile(latencies, 0.5) * 1000,
        "latency_p99_ms": percentile(latencies, 0.99) * 1000,
        "cache": cache,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
