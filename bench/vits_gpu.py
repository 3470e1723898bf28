"""VITS on a CUDA GPU without the voice file: joe-medium's architecture, random weights.

A lent GPU machine takes at most 64 MiB of files per call and the bundled voice is
61 MiB, so this bench needs no voice: ``--hp hp.json`` gives the architecture (the
joe voice's, written here with ``--write-hp``), the weights are random (fixed seed),
and the same weights run on the CPU and on CUDA. What it measures, in one run:

* agreement: CUDA fp32 against CPU fp32 (max |Δ| of the samples), and CUDA with the
  flow and decoder in fp16 against CUDA fp32 (SNR in dB), zero noise;
* throughput: real-time factor (compute seconds / audio seconds) of one request and
  of batches of 4, 16 and 64 on CUDA, fp32 and fp16, as a ratio against the CPU's
  one request measured in the same run.

It imports only the model (torch, numpy): no pydantic, espeak or voice package.

    .venv/bin/python bench/vits_gpu.py --write-hp .gpu/hp.json        # here, once
    python3 bench/vits_gpu.py --hp .gpu/hp.json                       # on the GPU machine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from voiceops_service.engines.vits.model import (
    SynthesisScales,
    VitsHyperParams,
    VitsModel,
)

SAMPLE_RATE = 22050
TOKENS = 120  # about a sentence of phonemes


def write_hp(path: Path) -> None:
    from voiceops_service.engines.vits.loader import load_voice
    from voiceops_service.engines.vits.voice import bundled_voice_files

    hp = load_voice(bundled_voice_files()).model.hp
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(hp)))


def read_hp(path: Path) -> VitsHyperParams:
    raw = json.loads(path.read_text())
    for key, value in raw.items():
        if isinstance(value, list):
            raw[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return VitsHyperParams(**raw)


def batch(hp: VitsHyperParams, size: int, device: str) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(1, hp.n_vocab, (size, TOKENS), generator=generator).to(device)
    lengths = torch.full((size,), TOKENS, device=device)
    zeros = torch.zeros(size, device=device)
    return ids, lengths, zeros


def synthesize(model: VitsModel, hp: VitsHyperParams, size: int, device: str) -> np.ndarray:
    ids, lengths, zeros = batch(hp, size, device)
    scales = SynthesisScales(noise=zeros, length=zeros + 1, noise_w=zeros)
    with torch.inference_mode():
        audio, samples = model.infer(ids, lengths, scales)
    if device == "cuda":
        torch.cuda.synchronize()
    return audio[0, : int(samples[0])].float().cpu().numpy()


def rtf(model: VitsModel, hp: VitsHyperParams, size: int, device: str, repeats: int) -> float:
    synthesize(model, hp, size, device)  # warm-up (kernels, allocator)
    times, audio_seconds = [], 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        audio = synthesize(model, hp, size, device)
        times.append(time.perf_counter() - started)
        audio_seconds = size * len(audio) / SAMPLE_RATE
    return statistics.median(times) / audio_seconds


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference - other) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(reference**2)) / noise)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--hp", type=Path, help="architecture JSON (from --write-hp)")
    parser.add_argument("--write-hp", type=Path, help="write the bundled voice's and stop")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.write_hp:
        write_hp(args.write_hp)
        return 0
    hp = read_hp(args.hp) if args.hp else VitsHyperParams(n_vocab=256)
    torch.manual_seed(0)
    cpu = VitsModel(hp).eval()
    result: dict[str, object] = {"torch": torch.__version__}
    cpu_rtf = rtf(cpu, hp, 1, "cpu", max(1, args.repeats // 2))
    result["cpu fp32, 1 request: RTF"] = round(cpu_rtf, 4)
    if not torch.cuda.is_available():
        result["cuda"] = "not available"
        print(json.dumps(result, indent=2))
        return 0
    result["gpu"] = torch.cuda.get_device_name()
    gpu = VitsModel(hp).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    reference = synthesize(cpu, hp, 1, "cpu")
    on_gpu = synthesize(gpu, hp, 1, "cuda")
    result["cuda fp32 vs cpu fp32: samples"] = [len(reference), len(on_gpu)]
    if len(reference) == len(on_gpu):
        result["cuda fp32 vs cpu fp32: max |Δ|"] = float(np.max(np.abs(reference - on_gpu)))
    for size in (1, 4, 16, 64):
        value = rtf(gpu, hp, size, "cuda", args.repeats)
        result[f"cuda fp32, batch {size}: RTF"] = round(value, 5)
        result[f"cuda fp32, batch {size}: speed vs cpu 1 request"] = round(cpu_rtf / value, 1)
    half = VitsModel(hp).eval()
    half.load_state_dict(cpu.state_dict())
    half.to("cuda")
    half.use_half_precision_synthesis()
    reduced = synthesize(half, hp, 1, "cuda")
    if len(reduced) == len(on_gpu):
        result["cuda fp16 vs cuda fp32: SNR dB"] = round(snr_db(on_gpu, reduced), 1)
    for size in (1, 16, 64):
        value = rtf(half, hp, size, "cuda", args.repeats)
        result[f"cuda fp16, batch {size}: RTF"] = round(value, 5)
        result[f"cuda fp16, batch {size}: speed vs cpu 1 request"] = round(cpu_rtf / value, 1)
    result["cuda max memory allocated (MiB)"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
