"""Torch VITS numbers: real-time factor against Piper's ONNX, and what dynamic batching buys.

1. RTF of one ~200-character request: our torch VITS (``VitsEngine``) and,
   in the same run on the same ids and scales, the voice's ONNX file through
   onnxruntime (the baseline Piper itself uses). Median of ``--repeats``.
2. Throughput at concurrency 1, 4 and 16: closed-loop async callers through the
   real ``DynamicBatcher`` + ``OomGuard`` + engine, batching on
   (``max_size`` 16, 10 ms delay, the service defaults' shape) vs off
   (``max_size`` 1: one request per forward pass), same texts, same run.
   Off and on alternate (``--trials``) and medians are reported, so drifting
   load from other processes hits both sides alike; the ratio is the number.
3. The ceiling batching can reach: the decoder's share of one request's
   time, and what batching buys the decoder alone (16 equal latents one by
   one vs as one batch). With share ``s`` and decoder gain ``d``, no batching
   of the rest can beat ``1 / (s / d)`` (Amdahl: the rest made free).

    .venv/bin/python bench/vits_cpu.py                      # CPU
    .venv/bin/python bench/vits_cpu.py --device cuda --fp16  # a GPU machine
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

import numpy as np
import torch
from _common import cpu_model
from voiceops_service.batching import DynamicBatcher
from voiceops_service.engines.base import SynthesisRequest
from voiceops_service.engines.vits import VitsEngine, VitsOptions
from voiceops_service.resilience import OomGuard, OomPolicy

TEXT_200 = (
    "The old lighthouse keeper climbed the winding stairs every evening at dusk, "
    "lit the great lamp, and watched the ships pass safely by the rocky coast "
    "until the morning sun rose over the sea."
)
# Mixed request lengths, as a chat or notification workload sends them.
MIXED_TEXTS = (
    "Your order has shipped.",
    "Turn left at the next intersection, then continue for two miles.",
    "Good morning! Here is today's weather: sunny, with a high of twenty four degrees.",
    "Meeting reminder.",
    "The quarterly report is ready for review; please send comments by Friday.",
    "Thanks for calling, how can I help you today?",
    "Battery low.",
    "Reading chapter three: the river ran quietly past the village, as it always had.",
)


def machine(engine: VitsEngine) -> dict[str, object]:
    facts: dict[str, object] = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": engine.device,
        "fp16": engine.fp16,
    }
    if engine.device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name()
    return facts


def sync(engine: VitsEngine) -> None:
    if engine.device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_rtf(engine: VitsEngine, repeats: int) -> dict[str, float]:
    import onnxruntime

    request = SynthesisRequest(text=TEXT_200)
    prepared = engine.prepare(request)
    noise, length, noise_w = prepared.scales
    providers = ["CPUExecutionProvider"]
    if engine.device.startswith("cuda") and "CUDAExecutionProvider" in (
        onnxruntime.get_available_providers()
    ):
        providers.insert(0, "CUDAExecutionProvider")
    session = onnxruntime.InferenceSession(str(engine.voice.files.model), providers=providers)
    inputs = {
        "input": np.array([prepared.ids], dtype=np.int64),
        "input_lengths": np.array([len(prepared.ids)], dtype=np.int64),
        "scales": np.array([noise, length, noise_w], dtype=np.float32),
    }
    torch_rtf: list[float] = []
    onnx_rtf: list[float] = []
    rate = engine.sample_rate
    engine.synthesize_prepared([prepared])  # warm both
    session.run(None, inputs)
    for _ in range(repeats):
        sync(engine)
        start = time.perf_counter()
        (audio,) = engine.synthesize_prepared([prepared])
        sync(engine)
        torch_rtf.append((time.perf_counter() - start) / (audio.size / rate))
        start = time.perf_counter()
        reference = session.run(None, inputs)[0].reshape(-1)
        onnx_rtf.append((time.perf_counter() - start) / (reference.size / rate))
    return {
        "chars": len(TEXT_200),
        "phoneme_ids": len(prepared.ids),
        "torch_rtf": statistics.median(torch_rtf),
        "onnxruntime_rtf": statistics.median(onnx_rtf),
        "onnxruntime_providers": providers[0],
    }


def measure_ceiling(engine: VitsEngine, repeats: int, batch: int = 16) -> dict[str, float]:
    """Decoder share of a request, and decoder time per item batched vs one by one."""
    model = engine.voice.model
    decoder_seconds: list[float] = []
    original = model.dec.forward

    def timed_decoder(*args: object, **kwargs: object) -> torch.Tensor:
        sync(engine)
        start = time.perf_counter()
        out = original(*args, **kwargs)
        sync(engine)
        decoder_seconds.append(time.perf_counter() - start)
        return out

    prepared = engine.prepare(SynthesisRequest(text=MIXED_TEXTS[0]))
    shares: list[float] = []
    model.dec.forward = timed_decoder  # type: ignore[method-assign]
    try:
        for _ in range(repeats):
            decoder_seconds.clear()
            sync(engine)
            start = time.perf_counter()
            engine.synthesize_prepared([prepared])
            sync(engine)
            shares.append(decoder_seconds[0] / (time.perf_counter() - start))
    finally:
        model.dec.forward = original  # type: ignore[method-assign]
    dtype = model.synthesis_dtype
    frames = 86  # ~1 s of audio, a short request
    one = torch.randn(1, model.hp.inter_channels, frames, device=engine.device, dtype=dtype)
    many = one.expand(batch, -1, -1).contiguous()

    def seconds(run: object) -> float:
        times = []
        for _ in range(repeats):
            sync(engine)
            start = time.perf_counter()
            run()  # type: ignore[operator]
            sync(engine)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with torch.inference_mode():
        model.dec(many)  # warm the shapes
        one_by_one = seconds(lambda: [model.dec(one) for _ in range(batch)])
        batched = seconds(lambda: model.dec(many))
    share = statistics.median(shares)
    gain = one_by_one / batched
    return {
        "decoder_share_of_request": round(share, 3),
        "decoder_batch_gain": round(gain, 3),
        "batching_ceiling": round(gain / share, 3),
    }


async def throughput(
    engine: VitsEngine, concurrency: int, max_size: int, total: int
) -> dict[str, float]:
    guard = OomGuard(OomPolicy())
    batcher = DynamicBatcher(engine, guard, max_size=max_size, max_delay_seconds=0.010)
    await batcher.start()
    queue = [MIXED_TEXTS[i % len(MIXED_TEXTS)] for i in range(total)]
    audio_seconds = 0.0

    async def client() -> None:
        nonlocal audio_seconds
        while queue:
            text = queue.pop()
            audio = await batcher.submit(SynthesisRequest(text=text))
            audio_seconds += audio.size / engine.sample_rate

    start = time.perf_counter()
    cpu_start = time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    passes = batcher.passes
    await batcher.stop()
    return {
        "requests_per_second": total / wall,
        "cpu_seconds_per_request": cpu / total,
        "audio_seconds_per_second": audio_seconds / wall,
        "forward_passes": passes,  # batches the batcher formed
    }


async def batching_table(
    engine: VitsEngine, levels: list[int], rounds: int, max_size: int, trials: int
) -> list[dict[str, object]]:
    """Off and on alternate ``trials`` times per level; medians, so load drift hits both."""
    rows: list[dict[str, object]] = []
    for concurrency in levels:
        total = max(concurrency * rounds, len(MIXED_TEXTS))
        off_rps: list[float] = []
        on_rps: list[float] = []
        off_cpu: list[float] = []
        on_cpu: list[float] = []
        passes: list[int] = []
        # Untimed: first passes of new padded shapes pay allocator and kernel set-up.
        await throughput(engine, concurrency, max_size, total)
        for _ in range(trials):
            off = await throughput(engine, concurrency, 1, total)
            on = await throughput(engine, concurrency, max_size, total)
            off_rps.append(off["requests_per_second"])
            on_rps.append(on["requests_per_second"])
            off_cpu.append(off["cpu_seconds_per_request"])
            on_cpu.append(on["cpu_seconds_per_request"])
            passes.append(int(on["forward_passes"]))
        ratios = [b / a for a, b in zip(off_rps, on_rps, strict=True)]
        rows.append(
            {
                "concurrency": concurrency,
                "requests": total,
                "off_rps": round(statistics.median(off_rps), 3),
                "on_rps": round(statistics.median(on_rps), 3),
                "on_batches": statistics.median(passes),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratios": [round(r, 3) for r in ratios],
                # CPU time per request (this process): capacity on a dedicated machine,
                # less sensitive than wall time to other processes sharing the cores.
                "off_cpu_s_per_req": round(statistics.median(off_cpu), 4),
                "on_cpu_s_per_req": round(statistics.median(on_cpu), 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument("--fp16", action="store_true", help="flow + decoder in fp16 (CUDA)")
    parser.add_argument("--repeats", type=int, default=5, help="RTF runs (median)")
    parser.add_argument("--rounds", type=int, default=3, help="requests per caller")
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels")
    parser.add_argument("--trials", type=int, default=3, help="alternating off/on trials")
    parser.add_argument("--max-size", type=int, default=16, help="batch size when on")
    parser.add_argument("--pass-budget", type=int, default=None, help="padded ids per pass")
    args = parser.parse_args()

    engine = VitsEngine(
        VitsOptions(device=args.device, fp16=args.fp16, pass_budget_ids=args.pass_budget, seed=0)
    )
    engine.load()
    engine.warm_up()
    print(json.dumps({"machine": machine(engine), "pass_budget_ids": engine.pass_budget_ids}))
    print(json.dumps({"rtf": measure_rtf(engine, args.repeats)}), flush=True)
    print(json.dumps({"ceiling": measure_ceiling(engine, args.repeats)}), flush=True)
    levels = [int(level) for level in args.levels.split(",")]
    asyncio.run(batching_table(engine, levels, args.rounds, args.max_size, args.trials))


if __name__ == "__main__":
    main()
