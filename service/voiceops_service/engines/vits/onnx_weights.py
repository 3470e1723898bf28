"""Read a Piper ``.onnx`` voice's weights into our module tree, without onnxruntime.

What the exported graph looks like:
- most initializers keep their PyTorch names (``enc_p.*``, ``dp.*``, ``flow.*``, ``dec.*``);
- weight-normed convolutions were folded into anonymous ``onnx::Conv_N``
  initializers; the consuming node's name carries the module path
  (``/flow/flows.6/enc/in_layers.0/Conv`` -> ``flow.flows.6.enc.in_layers.0``);
- the phoneme embedding is whatever initializer the ``Gather`` on the ``input``
  graph input reads (in Piper exports it is named ``sid``), the speaker
  embedding the one the ``Gather`` on the ``sid`` input reads;
- the duration predictor's first (elementwise affine) flow has ``logs`` folded
  into the constant ``/dp/flows.0/Exp_output_0`` = exp(-logs).
Architecture numbers come from tensor shapes and convolution attributes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from voiceops_service.engines.vits.model import VitsHyperParams

PHONEME_INPUT = "input"
SPEAKER_INPUT = "sid"
AFFINE_EXP_CONSTANT = "/dp/flows.0/Exp_output_0"
_CONV_OPS = {"Conv", "ConvTranspose"}


class VoiceFileError(ValueError):
    """The voice file is not a VITS export this loader understands."""


@dataclass(frozen=True)
class ConvAttributes:
    kernel: int
    dilation: int
    stride: int
    groups: int


@dataclass(frozen=True)
class OnnxVoiceWeights:
    tensors: dict[str, np.ndarray]  # module-path names -> arrays
    convs: dict[str, ConvAttributes]  # module path -> attributes from the graph
    graph_inputs: tuple[str, ...]


def _module_path(node_name: str) -> str:
    """``/flow/flows.6/enc/in_layers.0/Conv`` -> ``flow.flows.6.enc.in_layers.0``."""
    parts = [part for part in node_name.split("/") if part]
    return ".".join(parts[:-1])


def read_onnx_weights(path: Path) -> OnnxVoiceWeights:
    """All weights of a Piper VITS ``.onnx`` under their module names."""
    try:
        model = onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError and friends
        raise VoiceFileError(f"{path}: not a readable ONNX model ({error})") from error
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}

    def array(name: str) -> np.ndarray:
        return np.array(numpy_helper.to_array(initializers[name]), copy=True)

    tensors: dict[str, np.ndarray] = {}
    for name in initializers:
        if re.match(r"^(enc_p|dp|flow|dec|emb_g)\.", name):
            tensors[name] = array(name)

    convs: dict[str, ConvAttributes] = {}
    for node in graph.node:
        if node.op_type in _CONV_OPS:
            module = _module_path(node.name)
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            weight_name = node.input[1]
            if weight_name in initializers:
                tensors[f"{module}.weight"] = array(weight_name)
            if len(node.input) > 2 and node.input[2] in initializers:
                tensors[f"{module}.bias"] = array(node.input[2])
            kernel = attrs.get("kernel_shape") or [tensors[f"{module}.weight"].shape[-1]]
            convs[module] = ConvAttributes(
                kernel=int(kernel[0]),
                dilation=int((attrs.get("dilations") or [1])[0]),
                stride=int((attrs.get("strides") or [1])[0]),
                groups=int(attrs.get("group", 1)),
            )
        elif node.op_type == "Gather" and len(node.input) == 2:
            data, index = node.input
            if data in initializers and index == PHONEME_INPUT:
                tensors["enc_p.emb.weight"] = array(data)
            elif data in initializers and index == SPEAKER_INPUT:
                tensors["emb_g.weight"] = array(data)

    if AFFINE_EXP_CONSTANT in initializers and "dp.flows.0.logs" not in tensors:
        tensors["dp.flows.0.logs"] = -np.log(array(AFFINE_EXP_CONSTANT))
    if "enc_p.emb.weight" not in tensors:
        raise VoiceFileError(f"{path}: no phoneme embedding (Gather on input {PHONEME_INPUT!r})")
    return OnnxVoiceWeights(
        tensors=tensors,
        convs=convs,
        graph_inputs=tuple(i.name for i in graph.input),
    )


def _indices(tensors: dict[str, np.ndarray], pattern: str) -> list[int]:
    found = {int(m.group(1)) for name in tensors if (m := re.match(pattern, name))}
    return sorted(found)


def _require(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in tensors:
        raise VoiceFileError(f"voice file lacks tensor {name!r}; not a Piper VITS export?")
    return tensors[name]


def infer_hyperparams(weights: OnnxVoiceWeights) -> VitsHyperParams:
    """Architecture numbers from the weights' shapes and the graph's conv attributes."""
    t = weights.tensors
    emb = _require(t, "enc_p.emb.weight")
    n_vocab, hidden = emb.shape
    attn_layers = _indices(t, r"^enc_p\.encoder\.attn_layers\.(\d+)\.")
    rel_k = _require(t, "enc_p.encoder.attn_layers.0.emb_rel_k")
    shared_heads, span, head_channels = rel_k.shape
    ffn_1 = _require(t, "enc_p.encoder.ffn_layers.0.conv_1.weight")
    inter = _require(t, "enc_p.proj.weight").shape[0] // 2

    stochastic = "dp.flows.0.m" in t
    if stochastic:
        dp_filter, _, dp_kernel = _require(t, "dp.convs.convs_sep.0.weight").shape
        dp_layers = len(_indices(t, r"^dp\.convs\.convs_sep\.(\d+)\."))
        conv_flows = _indices(t, r"^dp\.flows\.(\d+)\.pre\.")
        if not conv_flows:
            raise VoiceFileError("stochastic duration predictor without spline flows")
        # Flows: affine, then (spline, flip) pairs; the first spline is training-only.
        dp_flows = (max(conv_flows) + 1) // 2
        half = _require(t, f"dp.flows.{conv_flows[0]}.pre.weight").shape[1]
        proj_out = _require(t, f"dp.flows.{conv_flows[0]}.proj.weight").shape[0]
        num_bins = (proj_out // half + 1) // 3
    else:
        dp_filter, _, dp_kernel = _require(t, "dp.conv_1.weight").shape
        dp_layers, dp_flows, num_bins = 0, 0, 10

    couplings = _indices(t, r"^flow\.flows\.(\d+)\.pre\.")
    first = couplings[0]
    flow_layers = len(_indices(t, rf"^flow\.flows\.{first}\.enc\.in_layers\.(\d+)\."))
    flow_kernel = _require(t, f"flow.flows.{first}.enc.in_layers.0.weight").shape[-1]
    flow_dilation = 1
    if flow_layers > 1:
        flow_dilation = weights.convs[f"flow.flows.{first}.enc.in_layers.1"].dilation

    ups = _indices(t, r"^dec\.ups\.(\d+)\.")
    rates = tuple(weights.convs[f"dec.ups.{i}"].stride for i in ups)
    up_kernels = tuple(int(t[f"dec.ups.{i}.weight"].shape[-1]) for i in ups)
    blocks_per_up = len(_indices(t, r"^dec\.resblocks\.(\d+)\.")) // len(ups)
    resblock_type = "1" if "dec.resblocks.0.convs1.0.weight" in t else "2"
    conv_name = "convs1" if resblock_type == "1" else "convs"
    kernels: list[int] = []
    dilations: list[tuple[int, ...]] = []
    for block in range(blocks_per_up):
        steps = _indices(t, rf"^dec\.resblocks\.{block}\.{conv_name}\.(\d+)\.")
        kernels.append(int(t[f"dec.resblocks.{block}.{conv_name}.0.weight"].shape[-1]))
        dilations.append(
            tuple(weights.convs[f"dec.resblocks.{block}.{conv_name}.{s}"].dilation for s in steps)
        )

    speakers, gin = t["emb_g.weight"].shape if "emb_g.weight" in t else (1, 0)
    return VitsHyperParams(
        n_vocab=int(n_vocab),
        inter_channels=int(inter),
        hidden_channels=int(hidden),
        filter_channels=int(ffn_1.shape[0]),
        n_heads=int(hidden // head_channels),
        n_layers=len(attn_layers),
        kernel_size=int(ffn_1.shape[-1]),
        window_size=int((span - 1) // 2),
        shared_rel_heads=int(shared_heads),
        duration_predictor="stochastic" if stochastic else "deterministic",
        dp_filter_channels=int(dp_filter),
        dp_kernel_size=int(dp_kernel),
        dp_layers=dp_layers,
        dp_flows=dp_flows,
        dp_num_bins=int(num_bins),
        flow_count=len(couplings),
        flow_kernel_size=int(flow_kernel),
        flow_dilation_rate=int(flow_dilation),
        flow_layers=flow_layers,
        resblock_type=resblock_type,
        resblock_kernel_sizes=tuple(kernels),
        resblock_dilations=tuple(dilations),
        upsample_rates=rates,
        upsample_initial_channel=int(t["dec.conv_pre.weight"].shape[0]),
        upsample_kernel_sizes=up_kernels,
        post_bias="dec.conv_post.bias" in t,
        n_speakers=int(speakers),
        gin_channels=int(gin),
    )


def state_dict_for(weights: OnnxVoiceWeights, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict from the voice file; errors name what is missing or off."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights.tensors))
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise VoiceFileError(f"voice file lacks {len(missing)} weights the model needs: {shown}")
    state: dict[str, torch.Tensor] = {}
    for name, target in expected.items():
        source = weights.tensors[name]
        if tuple(source.shape) != tuple(target.shape):
            raise VoiceFileError(
                f"weight {name}: voice file has shape {tuple(source.shape)}, "
                f"model expects {tuple(target.shape)}"
            )
        state[name] = torch.from_numpy(source).to(target.dtype)
    return state


def check_conv_attributes(weights: OnnxVoiceWeights, model: torch.nn.Module) -> None:
    """Every graph convolution must match our module's dilation, stride and groups."""
    modules = dict(model.named_modules())
    for path, attrs in weights.convs.items():
        module = modules.get(path)
        if module is None:
            continue  # e.g. the training-only duration flow, not part of inference
        if not isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d):
            raise VoiceFileError(f"graph convolution {path} maps to a {type(module).__name__}")
        ours = (module.dilation[0], module.stride[0], module.groups)
        theirs = (attrs.dilation, attrs.stride, attrs.groups)
        if ours != theirs:
            raise VoiceFileError(
                f"convolution {path}: voice file has (dilation, stride, groups) = {theirs}, "
                f"model built {ours}"
            )
