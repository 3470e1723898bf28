"""The espeak engine through HTTP: latency, real-time factor, throughput, shedding, overhead.

Starts a real ``voiceops-service --engine espeak`` on a loopback port and, in
the same run, measures the engine called directly in this process (the
baseline), so every ratio compares numbers from the same machine and moment:

* p50/p95 latency and real-time factor of one 200-character request, over
  HTTP (client-observed, keep-alive connection) and directly. The direct
  baseline is the cheapest engine call that yields the answer's bytes,
  ``engine.synthesize_pcm16`` (espeak's native output); the float call
  ``engine.synthesize`` is shown beside it;
* HTTP overhead at p50: (HTTP p50 - direct p50) / direct p50 (goal <= 10 %),
  and a paired estimate (median of each HTTP time minus the direct call of the
  same round, over direct p50) that is robust to load drift on a shared box.
  Every round runs the paths, the direct calls included, in a new random order.
  The HTTP client is a lean keep-alive socket client (what curl or a Go client
  costs); the stdlib ``http.client`` row shows what a Python client adds;
* the same for ``_asgi_floor_server.py``, a bare ASGI app that does only
  "HTTP + engine in a worker thread + PCM": this machine's floor for any
  threaded Python server, so the service's own share of the overhead shows;
* /healthz latency while one client sends speech back to back (every engine
  call runs in a worker thread, so a probe should not wait for one);
* requests/s at increasing concurrency with 200 and 429 counts: the server runs
  with a small admission limit so the point where it starts shedding shows.

Loopback only; request counts and durations are bounded.

    .venv/bin/python bench/service_espeak.py [--requests 200] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _common import cpu_model, percentile
from voiceops_localcluster.ports import free_port
from voiceops_service.engines.base import SynthesisRequest
from voiceops_service.engines.espeak import EspeakEngine

TEXT_200 = (
    "The quick brown fox jumps over the lazy dog near the river bank. "
    "Meanwhile, the farmer counts his sheep and wonders whether rain will come "
    "before the harvest is in. Nobody knows what tomorrow brings!!"
)
CONCURRENCY_LEVELS = (1, 2, 4, 8, 16, 32)
SAMPLE_RATE = 22050
RESULTS = Path(__file__).parent / "results" / "service_espeak.json"


def start_server(port: int, max_concurrency: int, max_queue: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEOPS_")}
    env.update(
        VOICEOPS_ENGINE="espeak",
        VOICEOPS_HOST="127.0.0.1",
        VOICEOPS_PORT=str(port),
        VOICEOPS_MAX_CONCURRENCY=str(max_concurrency),
        VOICEOPS_MAX_QUEUE=str(max_queue),
        VOICEOPS_LOG_LEVEL="warning",
        VOICEOPS_AUDIO_CACHE_MAX_BYTES="0",  # measure synthesis: one text, asked again and again
    )
    script = Path(sys.executable).with_name("voiceops-service")
    return wait_ready([str(script)], env, port)


def start_floor_server(port: int) -> subprocess.Popen[bytes]:
    script = Path(__file__).with_name("_asgi_floor_server.py")
    return wait_ready([sys.executable, str(script), str(port)], dict(os.environ), port)


def wait_ready(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"service exited with {process.returncode}")
        time.sleep(0.05)
    process.kill()
    raise SystemExit("service did not become ready within 60 s")


def summarise(latencies: list[float], audio_seconds: float) -> dict[str, float]:
    p50 = statistics.median(latencies)
    return {
        "p50_ms": p50 * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "audio_seconds": audio_seconds,
        "rtf_p50": p50 / audio_seconds,
    }


class LeanClient:
    """Keep-alive HTTP/1.1 POSTs over one socket, the answer read into a reused buffer.

    The client's own cost is part of every HTTP sample; this one costs what a
    C or Go client would (one send, a few recv_into), so the samples measure
    the server. ``http.client`` parses and copies in Python: ~0.25 ms more for
    the 485 KB answer (shown as its own row).
    """

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray(4 << 20)
        self.view = memoryview(self.buffer)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, the first 200 bytes of the body)."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.socket.sendall(head + body)
        received, total, header_end = 0, None, -1
        while total is None or received < total:
            count = self.socket.recv_into(self.view[received:])
            if count == 0:
                raise ConnectionError("server closed the connection")
            received += count
            if total is None and (header_end := self.buffer.find(b"\r\n\r\n", 0, received)) >= 0:
                lines = bytes(self.buffer[:header_end]).split(b"\r\n")
                fields = dict(line.lower().split(b":", 1) for line in lines[1:])
                total = header_end + 4 + int(fields[b"content-length"])
        status = int(self.buffer[9:12])
        return status, bytes(self.buffer[header_end + 4 : header_end + 204])

    def close(self) -> None:
        self.socket.close()


def measure_latency(port: int, floor_port: int, requests: int) -> dict[str, dict[str, float]]:
    """Direct engine calls and HTTP requests, interleaved so both see the same machine load.

    Each path keeps its own keep-alive connection; the first rounds warm every
    path and are not counted.
    """
    engine = EspeakEngine()
    engine.load()
    engine.warm_up()
    request = SynthesisRequest(text=TEXT_200)
    headers = {"Content-Type": "application/json"}
    bodies = {
        fmt: json.dumps({"model": "tts-1", "input": TEXT_200, "response_format": fmt}).encode()
        for fmt in ("wav", "pcm")
    }
    lean = {
        "wav": LeanClient(port),
        "pcm": LeanClient(port),
        "floor": LeanClient(floor_port),
    }
    stdlib = http.client.HTTPConnection("127.0.0.1", port, 30)

    def over_stdlib() -> None:
        stdlib.request("POST", "/v1/audio/speech", body=bodies["pcm"], headers=headers)
        response = stdlib.getresponse()
        payload = response.read()
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status}: {payload[:200]!r}")

    def over_lean(path: str) -> Callable[[], None]:
        body = bodies["wav" if path == "wav" else "pcm"]

        def call() -> None:
            status, start = lean[path].post("/v1/audio/speech", body)
            if status != 200:
                raise SystemExit(f"HTTP {status} from {path}: {start!r}")

        return call

    def direct_pcm16() -> None:
        engine.synthesize_pcm16(request)

    def direct_float() -> None:
        engine.synthesize(request)

    paths: dict[str, Callable[[], None]] = {
        "direct": direct_pcm16,
        "float": direct_float,
        "wav": over_lean("wav"),
        "pcm": over_lean("pcm"),
        "pcm_stdlib": over_stdlib,
        "floor": over_lean("floor"),
    }
    http_paths = [name for name in paths if name not in ("direct", "float")]
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    audio_seconds = len(engine.synthesize_pcm16(request)) / 2 / engine.sample_rate
    warmup = 5
    order = list(paths.items())
    shuffler = random.Random(20261125)
    for index in range(requests + warmup):
        # A new random order every round, the direct calls included. Each call evicts
        # the others' caches and an espeak call right after another in the same
        # process runs ~10 % faster, so in any fixed order (even rotated) the path
        # that follows its own kind (pcm after wav on one server, say) looks cheaper.
        shuffler.shuffle(order)
        elapsed: dict[str, float] = {}
        for name, call in order:
            started = time.perf_counter()
            call()
            elapsed[name] = time.perf_counter() - started
        if index >= warmup:
            for name, seconds in elapsed.items():
                latencies[name].append(seconds)
    for client in lean.values():
        client.close()
    stdlib.close()
    summary = {name: summarise(values, audio_seconds) for name, values in latencies.items()}
    # Paired estimate: each HTTP request against the direct call of the same round,
    # so machine-load drift between rounds cancels out (p50s alone swing ±10 %).
    direct_p50 = statistics.median(latencies["direct"])
    for name in http_paths:
        extra = [h - d for h, d in zip(latencies[name], latencies["direct"], strict=True)]
        summary[name]["paired_overhead"] = statistics.median(extra) / direct_p50
    return summary


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams.

    httpx's async client costs several ms of CPU per request, which on a
    2-core machine steals the server's CPU and measures the client instead.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[bytes, bytes]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        return status, headers

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


def measure_probe_latency(port: int, probes: int) -> dict[str, float]:
    """/healthz latency while one client sends speech requests back to back.

    Engine calls run in a worker thread, so a probe shares the CPU with the call
    in progress but never waits for it to end. Probes go every 7 ms, out of step
    with the requests.
    """
    stop = threading.Event()
    body = json.dumps({"model": "tts-1", "input": TEXT_200, "response_format": "pcm"}).encode()

    def speak() -> None:
        client = LeanClient(port)
        try:
            while not stop.is_set():
                client.post("/v1/audio/speech", body)
        finally:
            client.close()

    speaker = threading.Thread(target=speak, daemon=True)
    speaker.start()
    probe = http.client.HTTPConnection("127.0.0.1", port, 10)
    times: list[float] = []
    try:
        for _ in range(probes):
            started = time.perf_counter()
            probe.request("GET", "/healthz")
            response = probe.getresponse()
            response.read()
            times.append(time.perf_counter() - started)
            if response.status != 200:
                raise SystemExit(f"/healthz answered {response.status}")
            time.sleep(0.007)
    finally:
        stop.set()
        speaker.join(timeout=30)
        probe.close()
    return {
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": percentile(times, 0.99) * 1000,
        "max_ms": max(times) * 1000,
    }


async def measure_throughput(
    port: int, concurrency: int, seconds: float, *, honour_retry_after: bool
) -> dict[str, float]:
    """``concurrency`` closed-loop clients for ``seconds``, counting 200s and 429s.

    Greedy clients resend at once after a 429 (the worst case); polite ones wait
    the ``Retry-After`` the server sent, as OpenAI's SDKs do.
    """
    body = json.dumps({"model": "tts-1", "input": TEXT_200, "response_format": "pcm"}).encode()
    codes: dict[int, int] = {}
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        connection = RawConnection(port)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                status, headers = await connection.post("/v1/audio/speech", body)
                codes[status] = codes.get(status, 0) + 1
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                elif status == 429 and honour_retry_after:
                    wait = float(headers.get(b"retry-after", b"1"))
                    await asyncio.sleep(min(wait, max(0.0, stop_at - time.perf_counter())))
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ok = codes.get(200, 0)
    return {
        "concurrency": concurrency,
        "ok": ok,
        "shed_429": codes.get(429, 0),
        "other": sum(v for k, v in codes.items() if k not in (200, 429)),
        "ok_per_second": ok / wall,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="latency samples per path")
    parser.add_argument("--seconds", type=float, default=4.0, help="per concurrency level")
    parser.add_argument("--probes", type=int, default=300, help="/healthz samples per server")
    parser.add_argument("--max-concurrency", type=int, default=2, help="server admission limit")
    parser.add_argument("--max-queue", type=int, default=8, help="server queue bound")
    args = parser.parse_args()
    assert len(TEXT_200) == 200, len(TEXT_200)

    machine = {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version()}
    print(f"machine: {machine['nproc']} CPUs, {machine['cpu']}")
    port, floor_port = free_port(), free_port()
    server = start_server(port, args.max_concurrency, args.max_queue)
    floor_server = start_floor_server(floor_port)
    try:
        latency = measure_latency(port, floor_port, args.requests)
        probe_latency = measure_probe_latency(port, args.probes)
        floor_server.terminate()
        floor_server.wait(timeout=10)
        throughput = {
            mode: [
                asyncio.run(
                    measure_throughput(
                        port, level, args.seconds, honour_retry_after=mode == "polite"
                    )
                )
                for level in CONCURRENCY_LEVELS
            ]
            for mode in ("greedy", "polite")
        }
    finally:
        for process in (server, floor_server):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)

    direct = latency["direct"]
    for row in latency.values():
        row["p50_overhead"] = (row["p50_ms"] - direct["p50_ms"]) / direct["p50_ms"]
    print(f"\n200-character request, {direct['audio_seconds']:.2f} s of audio")
    print(f"{'path':<44}{'p50 ms':>8}{'p95 ms':>8}{'RTF':>8}{'p50 +':>8}{'paired +':>10}")
    rows = (
        ("engine, direct: synthesize_pcm16 (baseline)", "direct"),
        ("engine, direct: synthesize (float32)", "float"),
        ("HTTP wav", "wav"),
        ("HTTP pcm", "pcm"),
        ("HTTP pcm, stdlib http.client", "pcm_stdlib"),
        ("floor server (_asgi_floor_server.py), pcm", "floor"),
    )
    for label, name in rows:
        row = latency[name]
        paired = f"{row['paired_overhead']:>+10.1%}" if "paired_overhead" in row else " " * 10
        print(
            f"{label:<44}{row['p50_ms']:>8.2f}{row['p95_ms']:>8.2f}{row['rtf_p50']:>8.4f}"
            f"{row['p50_overhead']:>+8.1%}{paired}"
        )
    print(
        "HTTP overhead at p50 (goal <= 10%): "
        f"wav {latency['wav']['p50_overhead']:+.1%}, pcm {latency['pcm']['p50_overhead']:+.1%}; "
        f"paired: wav {latency['wav']['paired_overhead']:+.1%}, "
        f"pcm {latency['pcm']['paired_overhead']:+.1%}"
    )
    print(
        "paired = median of (HTTP time - the direct call in the same round) / direct p50; "
        "floor = a bare ASGI app + one worker thread"
    )
    print(
        "\n/healthz while one client sends speech requests back to back: "
        f"p50 {probe_latency['p50_ms']:.2f} ms, p99 {probe_latency['p99_ms']:.2f} ms, "
        f"max {probe_latency['max_ms']:.2f} ms"
    )
    print(
        f"\nthroughput (server max_concurrency={args.max_concurrency}, "
        f"max_queue={args.max_queue}, {args.seconds:g} s per level)"
    )
    shedding_from: dict[str, int | None] = {}
    for mode, rows in throughput.items():
        retry = "resend at once" if mode == "greedy" else "wait Retry-After"
        print(f"\n{mode} clients ({retry} after a 429)")
        print(f"{'clients':>8}{'ok/s':>10}{'ok':>8}{'429':>8}{'other':>8}{'p50 ms':>10}")
        for row in rows:
            print(
                f"{row['concurrency']:>8}{row['ok_per_second']:>10.1f}{row['ok']:>8}"
                f"{row['shed_429']:>8}{row['other']:>8}{row['p50_ms']:>10.2f}"
            )
        shedding_from[mode] = next((r["concurrency"] for r in rows if r["shed_429"]), None)
        shed_text = f"from {shedding_from[mode]} clients" if shedding_from[mode] else "never"
        print(f"shedding (429): {shed_text}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": machine,
                "text_chars": len(TEXT_200),
                "latency": latency,
                "probe_latency": probe_latency,
                "throughput": throughput,
                "shedding_from_clients": shedding_from,
                "server": {"max_concurrency": args.max_concurrency, "max_queue": args.max_queue},
            },
            indent=2,
        )
    )
    print(f"\nresults: {RESULTS}")


if __name__ == "__main__":
    main()
