"""The torch VITS against onnxruntime running the same Piper voice file (the reference).

With every noise scale at 0 the model is deterministic, so the waveforms must
agree sample by sample (bar: 1e-3 max abs; typically ~3e-5 on CPU).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from voiceops_service.engines.vits.loader import LoadedVoice, load_voice
from voiceops_service.engines.vits.model import (
    PackedFrames,
    SynthesisScales,
    VitsHyperParams,
    VitsModel,
)
from voiceops_service.engines.vits.onnx_weights import VoiceFileError, read_onnx_weights
from voiceops_service.engines.vits.phonemes import phonemes_to_ids, split_phonemes
from voiceops_service.engines.vits.voice import (
    VoiceLoadError,
    bundled_voice_files,
    find_voice_files,
)

pytestmark = pytest.mark.slow
TOLERANCE = 1e-3
# Real espeak-style phoneme strings of clearly different lengths (5 .. ~90 symbols).
PHONEME_TEXTS = (
    "hˈaɪ.",
    "həlˈoʊ, wˈɜːld.",
    "ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps.",
    "aɪ wˈʌndɚ wˈɛðɚ ðə ɹˈeɪn wɪl stˈɑːp bɪfˌoːɹ ðə ɡˈeɪm bɪɡˈɪnz tənˈaɪt?",
    "ɪn ðə bɪɡˈɪnɪŋ, ðə sˈɪɾi wʌz kwˈaɪət; ðɛn ðə tɹˈeɪnz ɚɹˈaɪvd, ænd ˈɛvɹɪθˌɪŋ tʃˈeɪndʒd.",
)


@pytest.fixture(scope="module")
def voice() -> LoadedVoice:
    return load_voice(bundled_voice_files())


@pytest.fixture(scope="module")
def reference() -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    return onnxruntime.InferenceSession(
        str(bundled_voice_files().model), options, providers=["CPUExecutionProvider"]
    )


def ids_for(voice: LoadedVoice, phonemes: str) -> list[int]:
    return phonemes_to_ids(split_phonemes(phonemes), voice.config.phoneme_id_map).ids


def run_reference(session: onnxruntime.InferenceSession, ids: list[int]) -> np.ndarray:
    inputs = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),  # noise, length, noise_w
    }
    return session.run(None, inputs)[0].reshape(-1)


def run_torch(
    voice: LoadedVoice, batch: list[list[int]], length_scale: float = 1.0
) -> list[np.ndarray]:
    longest = max(len(ids) for ids in batch)
    padded = torch.zeros(len(batch), longest, dtype=torch.long)
    for row, ids in enumerate(batch):
        padded[row, : len(ids)] = torch.tensor(ids)
    lengths = torch.tensor([len(ids) for ids in batch])
    zeros = torch.zeros(len(batch))
    scales = SynthesisScales(
        noise=zeros, length=torch.full_like(zeros, length_scale), noise_w=zeros
    )
    with torch.inference_mode():
        audio, samples = voice.model.infer(padded, lengths, scales)
    return [audio[row, : int(samples[row])].numpy() for row in range(len(batch))]


def test_reference_graph_has_the_expected_inputs(reference: onnxruntime.InferenceSession) -> None:
    names = [i.name for i in reference.get_inputs()]
    assert names == ["input", "input_lengths", "scales"]  # single speaker: no sid input


@pytest.fixture(scope="module")
def one_by_one(voice: LoadedVoice) -> dict[str, np.ndarray]:
    """Torch output for each text alone (shared by the reference and batching tests)."""
    return {text: run_torch(voice, [ids_for(voice, text)])[0] for text in PHONEME_TEXTS}


@pytest.mark.parametrize("phonemes", PHONEME_TEXTS, ids=lambda text: f"{len(text)}-symbols")
def test_waveform_matches_onnxruntime(
    voice: LoadedVoice,
    reference: onnxruntime.InferenceSession,
    one_by_one: dict[str, np.ndarray],
    phonemes: str,
) -> None:
    expected = run_reference(reference, ids_for(voice, phonemes))
    ours = one_by_one[phonemes]
    assert ours.shape == expected.shape
    assert np.abs(expected).max() > 0.05  # real speech, not a silent match
    assert np.abs(ours - expected).max() < TOLERANCE


def test_length_scale_matches_onnxruntime(
    voice: LoadedVoice, reference: onnxruntime.InferenceSession
) -> None:
    ids = ids_for(voice, PHONEME_TEXTS[2])
    inputs = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([0.0, 1.5, 0.0], dtype=np.float32),
    }
    expected = reference.run(None, inputs)[0].reshape(-1)
    (ours,) = run_torch(voice, [ids], length_scale=1.5)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < TOLERANCE


def test_padded_batch_matches_one_by_one(
    voice: LoadedVoice, one_by_one: dict[str, np.ndarray]
) -> None:
    batched = run_torch(voice, [ids_for(voice, text) for text in PHONEME_TEXTS])
    for text, audio in zip(PHONEME_TEXTS, batched, strict=True):
        alone = one_by_one[text]
        assert audio.shape == alone.shape
        assert np.abs(audio - alone).max() < TOLERANCE


def test_gaps_between_packed_items_are_what_makes_batches_exact(
    voice: LoadedVoice, one_by_one: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: packed with no gap, neighbours leak into each other."""
    monkeypatch.setattr(VitsModel, "context_frames", property(lambda _model: 0))
    batched = run_torch(voice, [ids_for(voice, text) for text in PHONEME_TEXTS])
    worst = max(
        np.abs(audio - one_by_one[text]).max()
        for text, audio in zip(PHONEME_TEXTS, batched, strict=True)
    )
    assert worst > 100 * TOLERANCE


def test_packing_puts_short_items_beside_each_other() -> None:
    packing = PackedFrames.plan([100, 30, 60, 40, 100, 5], gap=5)
    assert (packing.rows, packing.width) == (4, 100)  # 6 items, 4 rows no wider than 100
    spans: dict[int, list[tuple[int, int]]] = {}
    for (row, start), length in zip(packing.places, packing.lengths, strict=True):
        spans.setdefault(row, []).append((start, start + length))
    for items in spans.values():
        items.sort()
        assert items[-1][1] <= packing.width
        for (_, end), (start, _) in itertools.pairwise(items):
            assert start - end >= 5  # every neighbour at least one gap away
    # Zeroed: the gaps and each row's tail, never an item's frames.
    for row, start, end in packing.gaps:
        assert all(end <= s or start >= e for s, e in spans[row])
    assert PackedFrames.plan([7, 7, 7], gap=5).rows == 3  # equal lengths: a plain batch


def test_multi_speaker_packed_batch_matches_one_by_one() -> None:
    """Speaker conditioning follows each item into its packed row (a small random model)."""
    torch.manual_seed(0)
    hp = VitsHyperParams(
        n_vocab=30,
        inter_channels=16,
        hidden_channels=16,
        filter_channels=32,
        n_layers=2,
        dp_filter_channels=16,
        upsample_initial_channel=32,
        n_speakers=3,
        gin_channels=8,
    )
    model = VitsModel(hp).eval()
    batch = [[1, 5, 7, 9, 2], [1, 3, 2], [1, 4, 4, 6, 8, 10, 2], [1, 11, 2]]
    speakers = [2, 0, 1, 2]
    zeros = torch.zeros(1)

    def infer(rows: list[list[int]], ids: list[int]) -> list[np.ndarray]:
        padded = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for row, tokens in enumerate(rows):
            padded[row, : len(tokens)] = torch.tensor(tokens)
        scales = SynthesisScales(
            noise=zeros.expand(len(rows)), length=zeros.expand(len(rows)) + 1,
            noise_w=zeros.expand(len(rows)),
        )  # fmt: skip
        with torch.inference_mode():
            audio, samples = model.infer(
                padded, torch.tensor([len(r) for r in rows]), scales, torch.tensor(ids)
            )
        return [audio[row, : int(samples[row])].numpy() for row in range(len(rows))]

    together = infer(batch, speakers)
    assert len({audio.size for audio in together}) > 1  # really mixed lengths
    for tokens, speaker, audio in zip(batch, speakers, together, strict=True):
        (alone,) = infer([tokens], [speaker])
        assert audio.shape == alone.shape
        assert np.abs(audio - alone).max() < TOLERANCE
    other_speaker = infer([batch[0]], [0])[0]
    assert np.abs(together[0] - other_speaker).max() > TOLERANCE  # speakers really differ


def test_architecture_is_read_from_the_file(voice: LoadedVoice) -> None:
    hp = voice.model.hp
    assert (hp.n_vocab, hp.hidden_channels, hp.filter_channels) == (256, 192, 768)
    assert (hp.n_heads, hp.n_layers, hp.window_size) == (2, 6, 4)
    assert hp.upsample_rates == (8, 8, 4)
    assert hp.hop_length == 256
    assert hp.resblock_dilations == ((1, 2), (2, 6), (3, 12))  # from the graph's Conv attributes
    assert hp.duration_predictor == "stochastic"
    assert hp.gin_channels == 0


def test_folded_constants_are_recovered() -> None:
    weights = read_onnx_weights(bundled_voice_files().model)
    # exp(-logs) was folded into a constant; logs comes back from it.
    model = onnx.load(str(bundled_voice_files().model))
    folded = next(t for t in model.graph.initializer if t.name == "/dp/flows.0/Exp_output_0")
    exp_neg_logs = onnx.numpy_helper.to_array(folded)
    assert np.allclose(np.exp(-weights.tensors["dp.flows.0.logs"]), exp_neg_logs)
    # The phoneme embedding hides behind the initializer named "sid".
    assert weights.tensors["enc_p.emb.weight"].shape == (256, 192)
    # Weight-norm-folded convolutions are named by their consumer node.
    assert weights.tensors["flow.flows.6.enc.in_layers.0.weight"].shape == (384, 192, 5)


def test_voice_from_a_directory(tmp_path: Path) -> None:
    bundled = bundled_voice_files()
    (tmp_path / "en_US-joe-medium.onnx").symlink_to(bundled.model)
    (tmp_path / "en_US-joe-medium.onnx.json").symlink_to(bundled.config)
    files = find_voice_files(tmp_path)
    assert files.name == "en_US-joe-medium"
    assert find_voice_files(tmp_path / "en_US-joe-medium.onnx") == files


def test_voice_path_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(VoiceLoadError, match="directory has no"):
        find_voice_files(tmp_path)
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    with pytest.raises(VoiceLoadError, match=r"missing its config x\.onnx\.json"):
        find_voice_files(tmp_path)
    config = json.loads(bundled_voice_files().config.read_text())
    (tmp_path / "x.onnx.json").write_text(json.dumps(config))
    with pytest.raises(VoiceFileError, match="not a readable ONNX model"):
        load_voice(find_voice_files(tmp_path))
    del config["phoneme_id_map"]
    (tmp_path / "x.onnx.json").write_text(json.dumps(config))
    with pytest.raises(VoiceLoadError, match="phoneme_id_map"):
        load_voice(find_voice_files(tmp_path))


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(reference**2) / np.mean((reference - other) ** 2)))


def test_half_precision_synthesis_stays_close(voice: LoadedVoice) -> None:
    """The fp16 path (flow + decoder; meant for CUDA) keeps lengths and stays near fp32.

    Runs on CPU here (slowly, hence the tiny input) so the dtype plumbing is
    exercised in CI; the CUDA test below measures it on a GPU.
    """
    half = load_voice(voice.files)
    half.model.use_half_precision_synthesis()
    ids = ids_for(voice, PHONEME_TEXTS[0])
    (full,) = run_torch(voice, [ids])
    (reduced,) = run_torch(half, [ids])
    assert reduced.dtype == np.float32
    assert reduced.shape == full.shape  # durations are computed in fp32: same frames
    assert snr_db(full, reduced) > 25


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_cuda_matches_onnxruntime(
    voice: LoadedVoice, reference: onnxruntime.InferenceSession, fp16: bool
) -> None:
    gpu = load_voice(voice.files)
    gpu.model.to("cuda")
    if fp16:
        gpu.model.use_half_precision_synthesis()
    for phonemes in PHONEME_TEXTS:
        ids = ids_for(voice, phonemes)
        expected = run_reference(reference, ids)
        tokens = torch.tensor([ids], device="cuda")
        zeros = torch.zeros(1, device="cuda")
        scales = SynthesisScales(noise=zeros, length=zeros + 1, noise_w=zeros)
        with torch.inference_mode():
            audio, samples = gpu.model.infer(
                tokens, torch.tensor([len(ids)], device="cuda"), scales
            )
        ours = audio[0, : int(samples[0])].cpu().numpy()
        assert ours.shape == expected.shape
        if fp16:
            assert snr_db(expected, ours) > 25
        else:
            assert np.abs(ours - expected).max() < TOLERANCE
