"""Stable Diffusion pipelines on ONNX Runtime: export once, then serve through the same diffusers pipeline.

Export (`export_pipeline`) writes the UNet, the VAE decoder and encoder and the text encoder(s)
(SD 1.x/2.x: one; SDXL: two) as ONNX graphs with dynamic batch, height and width::

    <export>/export.json                   what was exported, by which versions
    <export>/unet/model.onnx               (+ model.onnx.data when over 2 GB, protobuf's limit)
    <export>/vae_decoder/model.onnx        and vae_decoder_tiled/ (see tiling below)
    <export>/vae_encoder/model.onnx        and vae_encoder_tiled/
    <export>/text_encoder/model.onnx
    <export>/text_encoder_2/model.onnx     SDXL only

A ControlNet is exported on its own (`export_controlnet`), into an export of its own keyed by
its weights: <export>/controlnet/model.onnx and export.json. It takes what the UNet takes plus
the control image and a strength, and gives the residuals that the UNet adds to its skip
connections and middle block. The UNet graph always takes those residuals as inputs: a job
without controls feeds a 1 x 1 x 1 x 1 zero for each, which broadcasts, so one UNet graph serves
both and a full-size UNet is not held twice. The additions cost nothing measurable: an SD 1.5
guided step took 9.54 s with them and 9.72 s without, in turns (see README), with identical
outputs.

Serving (`use_onnx`) keeps the diffusers pipeline object, with its scheduler, tokenizers,
img2img/inpaint logic, step callbacks and cancel, and swaps its torch modules for small
module-like wrappers whose forward runs an ONNX Runtime session. Everything around the
networks is the same code on both backends, so they cannot drift apart there.

Why the graphs look the way they do:
- Attention is exported as ONNX Runtime's fused MultiHeadAttention (com.microsoft), which on
  the CPU runs a flash-attention kernel: it never materializes the 4096 x 4096 score matrices
  of a 512x512 image, whose MatMuls and Softmax cost a third of an unfused UNet step.
- Seamless tiling is an input, `tile` = [x, y] (0 or 1), rather than one export per tiling
  mode (a full-size SD UNet is 3.4 GB): every padded convolution pads explicitly, with a Pad
  in "wrap" mode by the tiled axes and one with zeros by the others, exactly as
  `torch_diffusion.seamless` pads. At latent sizes that costs the UNet about 1%; at image
  sizes it costs a VAE a fifth of its time (copies of 270 MB tensors, convolutions no longer
  chained in ONNX Runtime's blocked layout), so each VAE part is exported twice: plainly,
  for the usual untiled image, and with the `tile` input (`*_tiled`), 0.3 GB more in all.
  CUDA exports stay at opset 17 and concatenate the edges instead: ONNX Runtime's CUDA
  provider had no Pad kernel past opset 18 until 2026, and ran such Pads on the CPU.
- On CUDA the UNet and text encoders are converted to float16 (their inputs and outputs stay
  float32, so the pipeline around them is the same on both devices); the VAE stays float32,
  since fp16 VAEs overflow into black images. Inputs and outputs are bound to GPU memory (IO
  binding), so latents never travel through the host. THE CUDA PATH IS UNTESTED: no GPU was
  available where it was written.
- On the CPU, most 3x3 convolutions are exported in Winograd's form (`_WinogradConv`), which
  needs 2.25x (F(2x2, 3x3)) to 4x (F(4x4, 3x3)) fewer multiplications: this is what brought a
  full-size SD 2.1 UNet step at 512x512 on 2 cores from 1.3x to 1.6x eager PyTorch (see
  README). The price is memory: the transformed kernels are 16/9 or 36/9 the size of the plain
  ones, so the UNet's deepest level stays plain (`_winograd_tiles`), and the SD 2.1 UNet's
  session holds 4.7 GiB where a plain export's holds 3.1 GiB. Each convolution stays within
  about 1e-4 (relative) of the direct one, and the pipelines within the parity tests' bounds as
  before; the whole UNet step's output moved by 1e-5 of its range.
- On the CPU, ONNX Runtime runs every graph optimization (NCHWc blocked convolutions, GELU,
  LayerNorm and bias fusions), one intra-op thread per core, and hands out the parts of each
  parallel loop dynamically: on a machine with other work (or a noisy virtual machine) a
  slowed core then does less of each step instead of holding up the other.
"""

from __future__ import annotations

import functools
import json
import logging
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from diffusers import ControlNetModel

from artforge.runtimes.onnx import CUDA, providers_for, session_options, shrinking_run_options
from artforge.runtimes.torch_diffusion import padded_convs

log = logging.getLogger(__name__)

# Bump when the exported graphs change: exports of another format are then made again.
# v3: the UNet takes ControlNet residuals.
EXPORT_FORMAT = "v3"
OPSET = 19  # Pad's "wrap" mode, for the tiling of CPU exports
OPSET_CUDA = 17  # no "wrap" Pads: see the module's docstring
PROTOBUF_LIMIT = 2_000_000_000  # bytes: bigger graphs keep their weights in external data
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
VAE_PARTS = ("vae_decoder", "vae_encoder", "vae_decoder_tiled", "vae_encoder_tiled")


class UnsupportedModel(Exception):
    """A pipeline part the exporter does not cover; the message says which and why."""


def export_variant(device: str) -> str:
    """The ExportCache variant for a device: the export format and its precision."""
    return f"diffusion-{EXPORT_FORMAT}-fp16-cuda" if device.startswith("cuda") else f"diffusion-{EXPORT_FORMAT}-fp32-cpu"


def controlnet_files(path: Path) -> list[Path]:
    """The files a ControlNet's export is made from: its folder's weights and config."""
    return sorted(p for p in path.glob("*") if p.suffix in (".json", ".safetensors", ".bin"))


def source_files(path: Path, single_file: bool, config: Path | None) -> list[Path]:
    """The files an export is made from: the weights and configs of the exported networks."""
    if single_file:
        # The weights are all in the file; the config folder (if any) only describes them.
        configs = [config / name / "config.json" for name in ("unet", "vae", *TEXT_ENCODERS)] if config else []
        return [path, *(c for c in configs if c.is_file())]
    files = []
    for name in ("unet", "vae", *TEXT_ENCODERS):
        files += sorted(p for p in (path / name).glob("*") if p.suffix in (".json", ".safetensors", ".bin"))
    return files


# -- export -----------------------------------------------------------------------------------


def export_pipeline(pipeline: object, folder: Path, cuda: bool = False, fp16: bool | None = None) -> None:
    """Export a float32 PyTorch pipeline on the CPU into `folder`, for ONNX Runtime's CPU or CUDA
    provider; UnsupportedModel when it cannot be. CUDA exports are fp16 (the VAE fp32) unless
    `fp16` says otherwise: the tests run the CUDA graphs in fp32 on the CPU."""
    fp16 = cuda if fp16 is None else fp16
    opset = OPSET_CUDA if cuda else OPSET
    check_exportable(pipeline)
    unet, vae = pipeline.unet, pipeline.vae
    # A latent side that the UNet's levels cannot halve evenly: the UNet then sizes each upsampling
    # by its skip connection, and that path, traced, serves every size (multiples of 8 pixels).
    side = 2 ** len(unet.config.block_out_channels) + 1
    latent = torch.randn(1, unet.config.in_channels, side, side)
    pixels = torch.randn(1, 3, side * pipeline.vae_scale_factor, side * pipeline.vae_scale_factor)
    tile = torch.zeros(2)
    tokens = pipeline.text_encoder.config.max_position_embeddings  # 77 for CLIP
    encoders = {name: getattr(pipeline, name, None) for name in TEXT_ENCODERS}
    image_axes = {0: "batch", 2: "height", 3: "width"}

    unet_inputs = {
        "sample": latent,
        "timestep": torch.full((1,), 500.0),
        "encoder_hidden_states": torch.randn(1, tokens, unet.config.cross_attention_dim),
    }
    # Prompts longer than 77 tokens (prompt weighting tools) come as more tokens of context.
    context_axes = {0: "batch", 1: "tokens"}
    unet_axes = {"sample": image_axes, "timestep": {0: "batch"}, "encoder_hidden_states": context_axes, "out_sample": image_axes}
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled text embeddings and size/crop ids
        unet_inputs["text_embeds"] = torch.randn(1, encoders["text_encoder_2"].config.projection_dim)
        unet_inputs["time_ids"] = torch.randn(1, 6)
        unet_axes |= {"text_embeds": {0: "batch"}, "time_ids": {0: "batch"}}
    # Every axis of a residual is free, so that a 1 x 1 x 1 x 1 zero broadcasts where no ControlNet runs.
    residuals = _residual_names(len(_residual_levels(unet)))
    unet_inputs |= {name: torch.zeros(1, 1, 1, 1) for name in residuals}
    unet_axes |= {name: {axis: f"{name}_{axis}" for axis in range(4)} for name in residuals}
    graphs = {"unet": (_UNetGraph(unet, len(residuals)), unet_inputs | {"tile": tile}, ["out_sample"], unet_axes)}
    vae_inputs = {"vae_decoder": {"latent_sample": latent[:, : vae.config.latent_channels]}, "vae_encoder": {"sample": pixels}}
    vae_outputs = {"vae_decoder": "sample", "vae_encoder": "moments"}
    for part, inputs in vae_inputs.items():
        graph = _VaeDecoderGraph(vae) if part == "vae_decoder" else _VaeEncoderGraph(vae)
        axes = {name: image_axes for name in (*inputs, vae_outputs[part])}
        graphs[part] = (graph, inputs, [vae_outputs[part]], axes)
        graphs[f"{part}_tiled"] = (graph, inputs | {"tile": tile}, [vae_outputs[part]], axes)
    for name, encoder in encoders.items():
        if encoder is not None:
            ids = torch.zeros(1, tokens, dtype=torch.int64)
            axes = {"input_ids": {0: "batch"}} | {out: {0: "batch"} for out in _TEXT_OUTPUTS}
            graphs[name] = (_TextEncoderGraph(encoder), {"input_ids": ids}, list(_TEXT_OUTPUTS), axes)

    with _exportable((unet, vae), cuda, {} if cuda else _winograd_tiles(pipeline)), torch.no_grad():
        for name, (graph, inputs, outputs, axes) in graphs.items():
            log.info("exporting %s to ONNX", name)
            _export_graph(graph, inputs, outputs, axes, folder / name, opset, fp16 and name not in VAE_PARTS)
    info = {
        "format": EXPORT_FORMAT,
        "precision": "fp16 (VAE fp32)" if fp16 else "fp32",
        "opset": opset,
        "pipeline": type(pipeline).__name__,
        "components": list(graphs),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }
    (folder / "export.json").write_text(json.dumps(info, indent=1) + "\n")


def check_exportable(pipeline: object) -> None:
    """UnsupportedModel naming the part of `pipeline` that the export does not cover, if any."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet, vae = pipeline.unet, pipeline.vae
    if not isinstance(unet, UNet2DConditionModel):
        raise UnsupportedModel(f"the UNet is a {type(unet).__name__}; the export covers UNet2DConditionModel")
    if not isinstance(vae, AutoencoderKL):
        raise UnsupportedModel(f"the VAE is an {type(vae).__name__}; the export covers AutoencoderKL")
    if unet.config.time_cond_proj_dim is not None:
        raise UnsupportedModel("the UNet takes a guidance embedding (time_cond_proj_dim, LCM-distilled); the export does not cover it")
    if unet.config.addition_embed_type not in (None, "text_time") or unet.config.class_embed_type is not None:
        raise UnsupportedModel("the UNet takes class or image embeddings; the export covers text conditioning")
    for model in (unet, vae):
        for name, processor in model.attn_processors.items():
            if type(processor) not in (AttnProcessor, AttnProcessor2_0):
                raise UnsupportedModel(f"{name} uses {type(processor).__name__} (an adapter?), which the export does not cover")


def export_controlnet(controlnet: torch.nn.Module, folder: Path, cuda: bool = False, fp16: bool | None = None) -> None:
    """Export a float32 diffusers ControlNetModel on the CPU into `folder` (as `export_pipeline`
    exports a pipeline's networks); UnsupportedModel when it cannot be."""
    fp16 = cuda if fp16 is None else fp16
    opset = OPSET_CUDA if cuda else OPSET
    check_controlnet_exportable(controlnet)
    config = controlnet.config
    side = 2 ** len(config.block_out_channels) + 1  # as in export_pipeline
    image_side = side * 2 ** (len(config.conditioning_embedding_out_channels) - 1)  # the control image is at pixel size
    inputs = {
        "sample": torch.randn(1, config.in_channels, side, side),
        "timestep": torch.full((1,), 500.0),
        "encoder_hidden_states": torch.randn(1, 77, config.cross_attention_dim),
        "controlnet_cond": torch.rand(1, config.conditioning_channels, image_side, image_side),
        "conditioning_scale": torch.ones(1),
    }
    image_axes = {0: "batch", 2: "height", 3: "width"}
    axes = {"sample": image_axes, "controlnet_cond": image_axes, "timestep": {0: "batch"}}
    axes["encoder_hidden_states"] = {0: "batch", 1: "tokens"}
    if config.addition_embed_type == "text_time":  # SDXL: the pooled text embedding is what the time ids leave of the projection
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        inputs |= {"text_embeds": torch.randn(1, pooled), "time_ids": torch.randn(1, 6)}
        axes |= {"text_embeds": {0: "batch"}, "time_ids": {0: "batch"}}
    levels = _residual_levels(controlnet)
    outputs = _residual_names(len(levels))
    axes |= {name: image_axes for name in outputs}
    winograd = {} if cuda else _unet_winograd_tiles(controlnet)
    with _exportable((controlnet,), cuda, winograd), torch.no_grad():
        log.info("exporting a ControlNet to ONNX")
        graph = _ControlNetGraph(controlnet)
        _export_graph(graph, inputs | {"tile": torch.zeros(2)}, outputs, axes, folder / "controlnet", opset, fp16)
    info = {
        "format": EXPORT_FORMAT,
        "precision": "fp16" if fp16 else "fp32",
        "opset": opset,
        "components": ["controlnet"],
        # Each residual's channels and how often the latent was halved for it: its shape, for IO binding.
        "residuals": levels,
        "config": dict(config),  # what the pipelines read off the ControlNet they are given
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }
    (folder / "export.json").write_text(json.dumps(info, indent=1) + "\n")


def check_controlnet_exportable(controlnet: torch.nn.Module) -> None:
    """UnsupportedModel naming what of `controlnet` the export does not cover, if any."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if type(controlnet) is not ControlNetModel:
        raise UnsupportedModel(f"the ControlNet is a {type(controlnet).__name__}; the export covers ControlNetModel")
    config = controlnet.config
    if config.global_pool_conditions:
        raise UnsupportedModel("the ControlNet pools its conditions (global_pool_conditions, as shuffle's does); the export does not")
    if config.addition_embed_type not in (None, "text_time") or config.class_embed_type is not None:
        raise UnsupportedModel("the ControlNet takes class or image embeddings; the export covers text conditioning")
    for name, processor in controlnet.attn_processors.items():
        if type(processor) not in (AttnProcessor, AttnProcessor2_0):
            raise UnsupportedModel(f"{name} uses {type(processor).__name__}, which the export does not cover")


def _residual_levels(model: torch.nn.Module) -> list[list[int]]:
    """[channels, halvings] of each skip connection of a UNet (or its ControlNet), then of its middle block."""
    levels = [[model.config.block_out_channels[0], 0]]  # conv_in
    halvings = 0
    for block in model.down_blocks:
        channels = block.resnets[-1].out_channels
        levels += [[channels, halvings]] * len(block.resnets)
        if block.downsamplers:
            halvings += 1
            levels.append([channels, halvings])
    return [*levels, [model.config.block_out_channels[-1], halvings]]


def _residual_names(count: int) -> list[str]:
    """The residual inputs of the UNet graph (the outputs of a ControlNet's): the skips', then the middle block's."""
    return [*(f"down_residual_{i}" for i in range(count - 1)), "mid_residual"]


def _export_graph(graph: torch.nn.Module, inputs: dict, outputs: list[str], axes: dict, folder: Path, opset: int, fp16: bool) -> None:
    scratch = folder / "scratch"  # the TorchScript exporter writes one file per tensor over 2 GB
    scratch.mkdir(parents=True)
    with warnings.catch_warnings():
        # The tracer warns about every Python branch on a shape; the sizes that matter are
        # dynamic by construction (see `side` in export_pipeline), and the parity tests check it.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        # TorchScript export is deprecated in favour of torch.export (dynamo), which takes minutes
        # where this takes seconds, and would need onnxscript translations of the two custom ops.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            graph,
            tuple(inputs.values()),
            str(scratch / "model.onnx"),
            dynamo=False,  # TorchScript: exports these models 20x faster than dynamo does
            opset_version=opset,
            input_names=list(inputs),
            output_names=outputs,
            dynamic_axes=axes,
            custom_opsets={} if isinstance(graph, _TextEncoderGraph) else {"com.microsoft": 1},  # fused attention
        )
    model = onnx.load(str(scratch / "model.onnx"))
    if fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # Inputs and outputs stay float32 (a Cast at each edge): the pipeline is the same on every device.
        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    weights = sum(t.ByteSize() for t in model.graph.initializer)
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=weights > PROTOBUF_LIMIT,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
    )
    for file in scratch.iterdir():
        file.unlink()
    scratch.rmdir()


@contextmanager
def _exportable(models: tuple[torch.nn.Module, ...], cuda: bool, winograd: dict[torch.nn.Conv2d, int]) -> Iterator[None]:
    """`models` (a UNet, a VAE, a ControlNet) with fused attention, `tile`-driven padding (on the
    CPU with ONNX Pads in "wrap" mode, on CUDA by concatenating the edges) and the convolutions in
    `winograd` as Winograd's; as they were afterwards. cuDNN chooses its own algorithms on CUDA,
    where fp16 would also lose Winograd's precision: CUDA exports take none."""
    processors = [model.attn_processors for model in models]
    convs = list(padded_convs(*models))
    for conv in convs:
        if conv.padding_mode != "zeros":
            raise UnsupportedModel(f"a convolution pads with {conv.padding_mode!r}; the export covers zero padding")
    for model in models:
        model.set_attn_processor(_FusedAttentionProcessor())
    for conv in convs:
        # An instance attribute shadows the method.
        conv._conv_forward = functools.partial(_export_conv_forward, conv, wrap_pads=not cuda, winograd=winograd.get(conv, 0))
    try:
        yield
    finally:
        for conv in convs:
            del conv._conv_forward
        for model, saved in zip(models, processors, strict=True):
            model.set_attn_processor(saved)


# The `tile` input of the graph being traced, read by every padded convolution in it.
_tile: list[torch.Tensor] = []


@contextmanager
def _tiling_input(tile: torch.Tensor | None) -> Iterator[None]:
    if tile is not None:
        _tile.append(tile)
    try:
        yield
    finally:
        if tile is not None:
            _tile.pop()


def _export_conv_forward(
    conv: torch.nn.Conv2d, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, wrap_pads: bool, winograd: int
) -> torch.Tensor:
    """Conv2d padded by hand: zeros, or the opposite edge on an axis whose `tile` flag is 1
    (as it was in a graph without a `tile` input); as Winograd's F(m x m, 3 x 3) where `winograd` is m."""
    padding = conv.padding
    if _tile:
        input = (_TilePad.apply if wrap_pads else _pad_edges)(input, _tile[-1], *padding)
        padding = (0, 0)
    if winograd:
        return _WinogradConv.apply(input, weight, bias, padding[0], winograd)
    return F.conv2d(input, weight, bias, conv.stride, padding, conv.dilation, conv.groups)


def _winograd_tiles(pipeline: object) -> dict[torch.nn.Conv2d, int]:
    """The Winograd output tile side m for each 3x3 convolution that the CPU export runs as F(m x m, 3 x 3).

    Measured per convolution on ONNX Runtime's CPU provider (2 cores, a 512x512 image), plain
    against F(2x2) against F(4x4): 320 channels at 64x64 42, 39, 24 ms; 640 at 32x32 39, 25, 16 ms;
    1280 at 16x16 46, 25, 18 ms; 1280 at 8x8 12, 9, 16 ms. The transformed kernels hold (m+2)^2/9
    times the weights. The UNet's deepest level holds half of SD 2.1's 3x3 kernel weights for the
    least gain, so it stays plain; the level above takes F(2x2), where F(4x4) would hold 1.7 GB
    more. Chosen on SD 2.1 (4 levels); SDXL's 1280-channel level then takes F(2x2). The VAE's
    convolutions run at 1 to 8 times the latent's side, on at most 512 channels: F(4x4) throughout.
    """
    return _unet_winograd_tiles(pipeline.unet) | {conv: 4 for conv in pipeline.vae.modules() if _winograd_fits(conv)}


def _unet_winograd_tiles(model: torch.nn.Module) -> dict[torch.nn.Conv2d, int]:
    """A UNet's Winograd tiles by level (see `_winograd_tiles`); a ControlNet, which is a UNet's
    encoder and middle block, takes the same. Its conditioning embedding (a few small
    convolutions on the control image, 16 to 256 channels) stays plain: the measurements above
    were made on UNet-sized convolutions."""
    levels = len(model.config.block_out_channels)
    tile_by_depth = {0: 4, 1: 4, 2: 2}
    tiles = {}
    for name, conv in model.named_modules():
        if _winograd_fits(conv) and not name.startswith("controlnet_cond_embedding"):
            if tile := tile_by_depth.get(_unet_depth(name, levels), 0):
                tiles[conv] = tile
    return tiles


def _winograd_fits(module: torch.nn.Module) -> bool:
    return (
        isinstance(module, torch.nn.Conv2d)
        and module.kernel_size == (3, 3)
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding == (1, 1)
    )


def _unet_depth(name: str, levels: int) -> int:
    """How many times the UNet has halved the latent where the module `name` runs."""
    block, _, rest = name.partition(".")
    index, _, inner = rest.partition(".")
    if block == "down_blocks":
        return int(index)
    if block == "mid_block":
        return levels - 1
    if block == "up_blocks":  # an up block's upsampler runs at the next level up
        return levels - 1 - int(index) - inner.startswith("upsamplers")
    return 0  # conv_in, conv_out


# Winograd's transforms for 3x3 kernels (Lavin and Gray, 2015) by output tile side: B^T, G, A^T.
_WINOGRAD = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}


class _WinogradConv(torch.autograd.Function):
    """A 3x3 convolution (stride 1, zero padding `pad`) in PyTorch; in ONNX, Winograd's minimal
    filtering F(m x m, 3 x 3): each m x m block of the output from an (m+2) x (m+2) tile of the
    input in (m+2)^2 products where the direct convolution takes 9 m^2, 4x fewer for m = 4. The
    products are one batched MatMul; the transforms are two fixed convolutions over the channels
    taken as a batch. In float32 an F(4x4) result is within about 1e-4 of the direct one
    (relative), F(2x2)'s within 1e-5."""

    @staticmethod
    def forward(ctx: object, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pad: int, m: int) -> torch.Tensor:
        return F.conv2d(input, weight, bias, padding=pad)

    @staticmethod
    def symbolic(g: object, input: object, weight: object, bias: object, pad: int, m: int) -> object:
        b_t, g_, a_t = (torch.tensor(t, dtype=torch.float64) for t in _WINOGRAD[m])
        a = m + 2
        out_channels, in_channels = weight.type().sizes()[:2]

        def constant(values: object, dtype: torch.dtype = torch.int64) -> object:
            return g.op("Constant", value_t=torch.as_tensor(values, dtype=dtype))

        def part(shape: object, start: int, end: int) -> object:
            return g.op("Slice", shape, constant([start]), constant([end]))

        # U = G w G^T for every (out, in) pair, as one GEMM of the flattened kernels with G (x) G; ONNX
        # Runtime folds it into a constant of a*a matrices of out x in when it loads the graph.
        kernels = g.op("Reshape", weight, constant([out_channels * in_channels, 9]))
        u = g.op("MatMul", kernels, constant(torch.kron(g_, g_).T, torch.float32))
        u = g.op("Transpose", g.op("Reshape", u, constant([out_channels, in_channels, a * a])), perm_i=[2, 0, 1])
        # The input transform B^T d B of every a x a tile (stride m) of every channel, as one convolution
        # over the channels taken as a batch; tiles past the edge read zeros, and are cropped below.
        shape = g.op("Shape", input)
        batch, size = part(shape, 0, 1), part(shape, 2, 4)
        x = g.op("Reshape", input, g.op("Concat", constant([-1, 1]), size, axis_i=0))
        transform = torch.einsum("ia,jb->ijab", b_t, b_t).reshape(a * a, 1, a, a)
        x = g.op("Conv", x, constant(transform, torch.float32), strides_i=[m, m], pads_i=[pad, pad, pad + m - 1, pad + m - 1])
        tiles = part(g.op("Shape", x), 2, 4)
        x = g.op("Reshape", x, g.op("Concat", batch, constant([in_channels, a * a, -1]), axis_i=0))
        y = g.op("MatMul", u, g.op("Transpose", x, perm_i=[0, 2, 1, 3]))  # N x a*a x out x tiles
        y = g.op("Reshape", g.op("Transpose", y, perm_i=[0, 2, 1, 3]), g.op("Concat", constant([-1, a * a]), tiles, axis_i=0))
        # The output transform A^T M A puts each tile's m x m outputs in place: a transposed convolution.
        transform = torch.einsum("ai,bj->ijab", a_t, a_t).reshape(a * a, 1, m, m)
        y = g.op("ConvTranspose", y, constant(transform, torch.float32), strides_i=[m, m])
        y = g.op("Reshape", y, g.op("Concat", batch, constant([out_channels]), part(g.op("Shape", y), 2, 4), axis_i=0))
        ends = g.op("Add", size, constant([2 * pad - 2]))
        y = g.op("Slice", y, constant([0, 0]), ends, constant([2, 3]))
        if bias is not None and not (hasattr(bias, "node") and bias.node().mustBeNone()):
            y = g.op("Add", y, g.op("Reshape", bias, constant([out_channels, 1, 1])))
        return y


def _pad_edges(input: torch.Tensor, tile: torch.Tensor, pad_y: int, pad_x: int) -> torch.Tensor:
    """Pad by `pad_y` and `pad_x`: circularly on the axes whose flag in `tile` ([x, y]) is 1, with
    zeros on the others; the edges concatenated, multiplied by their axis' flag."""
    tile_x, tile_y = tile[0], tile[1]
    if pad_x:
        input = torch.cat([input[..., -pad_x:] * tile_x, input, input[..., :pad_x] * tile_x], dim=-1)
    if pad_y:
        input = torch.cat([input[..., -pad_y:, :] * tile_y, input, input[..., :pad_y, :] * tile_y], dim=-2)
    return input


class _TilePad(torch.autograd.Function):
    """`_pad_edges` as two ONNX Pads: in "wrap" mode by the tiled axes' sizes, then with zeros by
    the rest. On the CPU that costs a fraction of slicing and concatenating the edges."""

    @staticmethod
    def forward(ctx: object, input: torch.Tensor, tile: torch.Tensor, pad_y: int, pad_x: int) -> torch.Tensor:
        return _pad_edges(input, tile, pad_y, pad_x)

    @staticmethod
    def symbolic(g: object, input: object, tile: object, pad_y: int, pad_x: int) -> object:
        def constant(values: list[int]) -> object:
            return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

        flags = g.op("Cast", g.op("Gather", tile, constant([1, 0]), axis_i=0), to_i=onnx.TensorProto.INT64)  # [y, x]
        sizes = constant([pad_y, pad_x])
        wrapped = g.op("Mul", sizes, flags)  # on the tiled axes
        zeroed = g.op("Sub", sizes, wrapped)  # on the others
        none = constant([0, 0])  # batch and channels

        def pads(hw: object) -> object:
            return g.op("Concat", none, hw, none, hw, axis_i=0)  # the begins, then the ends

        # ONNX Runtime shares the pads between all convolutions alike (common subexpressions).
        padded = g.op("Pad", input, pads(wrapped), mode_s="wrap")
        return g.op("Pad", padded, pads(zeroed), mode_s="constant")


class _FusedAttention(torch.autograd.Function):
    """Multi-head attention on B x S x (heads * dim): SDPA in PyTorch, com.microsoft MultiHeadAttention in ONNX."""

    @staticmethod
    def forward(ctx: object, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int) -> torch.Tensor:
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (query, key, value))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)

    @staticmethod
    def symbolic(g: object, query: object, key: object, value: object, heads: int) -> object:
        out = g.op("com.microsoft::MultiHeadAttention", query, key, value, num_heads_i=heads)
        out.setType(query.type())
        return out


class _FusedAttentionProcessor:
    """diffusers' AttnProcessor2_0, for what SD UNets and VAEs use, with the attention itself fused."""

    def __call__(
        self,
        attn: object,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if attention_mask is not None or attn.spatial_norm is not None or attn.norm_q is not None or attn.norm_k is not None:
            raise UnsupportedModel("an attention layer uses masks, spatial or q/k norms, which the export does not cover")
        residual = hidden_states
        image = hidden_states.ndim == 4
        if image:  # the VAE's attention works on B x C x H x W
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query, key, value = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        hidden_states = _FusedAttention.apply(query, key, value, attn.heads)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # projection, dropout
        if image:
            hidden_states = hidden_states.transpose(1, 2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


# The exported graphs: plain tensor signatures around the diffusers modules.


class _UNetGraph(torch.nn.Module):
    """sample, timestep, encoder_hidden_states, [text_embeds, time_ids], residuals..., tile -> out_sample."""

    def __init__(self, unet: torch.nn.Module, residuals: int) -> None:
        super().__init__()
        self.unet = unet
        self.residuals = residuals

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor, *rest: torch.Tensor
    ) -> torch.Tensor:
        added = rest[: len(rest) - self.residuals - 1]
        *down, mid, tile = rest[len(added) :]
        added_cond = dict(zip(("text_embeds", "time_ids"), added, strict=True)) if added else None
        with _tiling_input(tile):
            return self.unet(
                sample,
                timestep,
                encoder_hidden_states,
                added_cond_kwargs=added_cond,
                down_block_additional_residuals=tuple(down),
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0]


class _ControlNetGraph(torch.nn.Module):
    """sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale, [text_embeds,
    time_ids], tile -> the residuals, scaled. The strength is an input (diffusers takes a Python
    float, which tracing would freeze into the graph)."""

    def __init__(self, controlnet: torch.nn.Module) -> None:
        super().__init__()
        self.controlnet = controlnet

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        controlnet_cond: torch.Tensor,
        conditioning_scale: torch.Tensor,
        *rest: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        *added, tile = rest
        added_cond = dict(zip(("text_embeds", "time_ids"), added, strict=True)) if added else None
        with _tiling_input(tile):
            down, mid = self.controlnet(
                sample, timestep, encoder_hidden_states, controlnet_cond, 1.0, added_cond_kwargs=added_cond, return_dict=False
            )
        return *(residual * conditioning_scale for residual in down), mid * conditioning_scale


class _VaeDecoderGraph(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor, tile: torch.Tensor | None = None) -> torch.Tensor:
        with _tiling_input(tile):
            return self.vae.decode(latent_sample, return_dict=False)[0]


class _VaeEncoderGraph(torch.nn.Module):
    """Image -> the moments (mean, log variance) of the latent distribution; sampling stays in the pipeline."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, sample: torch.Tensor, tile: torch.Tensor | None = None) -> torch.Tensor:
        with _tiling_input(tile):
            moments = self.vae.encoder(sample)
            return self.vae.quant_conv(moments) if self.vae.quant_conv is not None else moments


# What SD (the last hidden state) and SDXL (the penultimate one and the pooled projection) read.
_TEXT_OUTPUTS = ("last_hidden_state", "penultimate_hidden_state", "pooled")


class _TextEncoderGraph(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.encoder(input_ids, output_hidden_states=True)
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
        return out.last_hidden_state, out.hidden_states[-2], pooled


# -- serving ----------------------------------------------------------------------------------


class _Session:
    """One exported graph in an ONNX Runtime session, run on torch tensors.

    Set up as artforge.runtimes.onnx.OnnxModel sets up its sessions (all graph optimizations,
    deterministic compute, arenas shrunk after each run), plus dynamic scheduling on the CPU.
    """

    def __init__(self, path: Path, device: str) -> None:
        options = session_options(device)
        # Parallel loops handed out in shrinking blocks rather than one share per thread: a core
        # slowed by other work does less of a step instead of holding it up. Results stay
        # bit-identical (each output element is still computed by one thread, in one order).
        options.add_session_config_entry("session.dynamic_block_base", "4")
        self.session = ort.InferenceSession(str(path), options, providers=providers_for(device))
        self.provider = self.session.get_providers()[0]
        self.cuda = self.provider == CUDA
        if device.startswith("cuda") and not self.cuda:
            log.warning("%s: running on the CPU, although %s was asked for (CUDA or cuDNN libraries missing?)", path, device)
        self.device = torch.device(device if self.cuda else "cpu")
        self.output_names = [o.name for o in self.session.get_outputs()]
        # On the full-size SD 2.1 UNet the shrinking costs nothing measurable (A/B'd: within noise).
        self.run_options = shrinking_run_options(device, self.cuda)

    def run(self, inputs: dict[str, torch.Tensor], output_shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """The outputs (float32, in order; `output_shapes` sizes them for IO binding on CUDA)."""
        if not self.cuda:
            feed = {name: tensor.detach().to("cpu").contiguous().numpy() for name, tensor in inputs.items()}
            return [torch.from_numpy(out) for out in self.session.run(None, feed, self.run_options)]
        # CUDA: bind torch's GPU buffers as the graph's inputs and outputs; nothing is copied to the host.
        binding = self.session.io_binding()
        index = self.device.index or 0
        bound = {name: tensor.detach().to(self.device).contiguous() for name, tensor in inputs.items()}
        for name, tensor in bound.items():
            dtype = np.int64 if tensor.dtype == torch.int64 else np.float32
            binding.bind_input(name, "cuda", index, dtype, tuple(tensor.shape), tensor.data_ptr())
        outputs = [torch.empty(shape, dtype=torch.float32, device=self.device) for shape in output_shapes]
        for name, tensor in zip(self.output_names, outputs, strict=True):
            binding.bind_output(name, "cuda", index, np.float32, tuple(tensor.shape), tensor.data_ptr())
        torch.cuda.synchronize(self.device)  # torch wrote the inputs on its own stream; ORT reads them on another
        self.session.run_with_iobinding(binding, self.run_options)
        binding.synchronize_outputs()  # ... and torch reads the outputs once ORT's stream has written them
        return outputs


class _OnnxModule(torch.nn.Module):
    """What diffusers pipelines read off their torch modules: config, dtype and device."""

    def __init__(self, original: torch.nn.Module, session: _Session) -> None:
        super().__init__()
        self.config = original.config
        self._device = session.device
        self.tile = torch.zeros(2)  # seamless tiling: [x, y], set per job by `seamless`

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32  # float16 graphs cast inside, at their edges


class OnnxUNet(_OnnxModule):
    def __init__(self, original: torch.nn.Module, session: _Session) -> None:
        super().__init__(original, session)
        self.session = session
        self.residuals = [i.name for i in session.session.get_inputs() if i.name.startswith("down_residual_") or i.name == "mid_residual"]
        if self.config.addition_embed_type == "text_time":
            # The SDXL pipeline checks its time ids against the width of this layer.
            width = original.add_embedding.linear_1.in_features
            self.add_embedding = types.SimpleNamespace(linear_1=types.SimpleNamespace(in_features=width))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        timestep_cond: torch.Tensor | None = None,
        cross_attention_kwargs: dict | None = None,
        added_cond_kwargs: dict | None = None,
        down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> object:
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        if timestep_cond is not None or cross_attention_kwargs:
            raise ValueError("the ONNX UNet takes no guidance embedding or attention arguments (LoRA runs on PyTorch)")
        batch = sample.shape[0]
        inputs = {
            "sample": sample,
            "timestep": torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(batch),
            "encoder_hidden_states": encoder_hidden_states,
        }
        if added_cond_kwargs:
            inputs |= {"text_embeds": added_cond_kwargs["text_embeds"], "time_ids": added_cond_kwargs["time_ids"]}
        if down_block_additional_residuals is None:  # no ControlNet: zeros that broadcast
            residuals = [torch.zeros(1, 1, 1, 1)] * len(self.residuals)
        else:
            residuals = [*down_block_additional_residuals, mid_block_additional_residual]
        inputs |= dict(zip(self.residuals, residuals, strict=True))
        (out,) = self.session.run(inputs | {"tile": self.tile}, [tuple(sample.shape)])
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


class OnnxControlNet(ControlNetModel):
    """A ControlNet exported by `export_controlnet`, run on ONNX Runtime. A ControlNetModel only so
    that the diffusers pipelines take it (they check the class): it holds no torch weights, and
    its config comes from the export."""

    def __init__(self, folder: Path, device: str) -> None:
        from diffusers.configuration_utils import FrozenDict

        torch.nn.Module.__init__(self)  # not ControlNetModel's: that would build the network again
        info = json.loads((folder / "export.json").read_text())
        self._internal_dict = FrozenDict(info["config"])
        self.levels = info["residuals"]
        self.session = _Session(folder / "controlnet" / "model.onnx", device)
        # Seamless tiling: [x, y], set per job by `seamless`. A buffer, since diffusers reads the
        # dtype of a MultiControlNetModel off its nets' parameters or buffers, and this has no parameters.
        self.register_buffer("tile", torch.zeros(2), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.session.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        controlnet_cond: torch.Tensor,
        conditioning_scale: float = 1.0,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        added_cond_kwargs: dict | None = None,
        cross_attention_kwargs: dict | None = None,
        guess_mode: bool = False,
        return_dict: bool = True,
    ) -> object:
        from diffusers.models.controlnets.controlnet import ControlNetOutput

        if guess_mode or class_labels is not None or timestep_cond is not None or attention_mask is not None or cross_attention_kwargs:
            raise ValueError("the ONNX ControlNet takes no guess mode, class labels, guidance embedding or attention arguments")
        batch, _, height, width = sample.shape
        inputs = {
            "sample": sample,
            "timestep": torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(batch),
            "encoder_hidden_states": encoder_hidden_states,
            "controlnet_cond": controlnet_cond.to(torch.float32),
            "conditioning_scale": torch.tensor([float(conditioning_scale)]),
        }
        if added_cond_kwargs:
            inputs |= {"text_embeds": added_cond_kwargs["text_embeds"], "time_ids": added_cond_kwargs["time_ids"]}
        # A stride-2 convolution halves a side rounding up, as the UNet's downsamplers do.
        shapes = [(batch, channels, -(-height // 2**halved), -(-width // 2**halved)) for channels, halved in self.levels]
        *down, mid = self.session.run(inputs | {"tile": self.tile}, shapes)
        return ControlNetOutput(down_block_res_samples=tuple(down), mid_block_res_sample=mid) if return_dict else (tuple(down), mid)


class OnnxVae(_OnnxModule):
    """The VAE's decode and encode; untiled images go through the graphs without a `tile` input."""

    def __init__(self, original: torch.nn.Module, sessions: dict[str, _Session]) -> None:
        super().__init__(original, sessions["vae_decoder"])
        self.sessions = sessions
        self.scale = 2 ** (len(self.config.block_out_channels) - 1)

    def _run(self, part: str, input: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if self.tile.any():
            (out,) = self.sessions[f"{part}_tiled"].run({input: tensor, "tile": self.tile}, [shape])
        else:
            (out,) = self.sessions[part].run({input: tensor}, [shape])
        return out

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator: torch.Generator | None = None) -> object:
        from diffusers.models.autoencoders.vae import DecoderOutput

        batch, _, height, width = z.shape
        shape = (batch, self.config.out_channels, height * self.scale, width * self.scale)
        sample = self._run("vae_decoder", "latent_sample", z, shape)
        return DecoderOutput(sample=sample) if return_dict else (sample,)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> object:
        from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        batch, _, height, width = x.shape
        shape = (batch, 2 * self.config.latent_channels, height // self.scale, width // self.scale)
        latent = DiagonalGaussianDistribution(self._run("vae_encoder", "sample", x, shape))
        return AutoencoderKLOutput(latent_dist=latent) if return_dict else (latent,)


class OnnxTextEncoder(_OnnxModule):
    def __init__(self, original: torch.nn.Module, session: _Session) -> None:
        super().__init__(original, session)
        self.session = session
        self.projection = hasattr(original, "text_projection")  # CLIPTextModelWithProjection (SDXL's second)
        self.width = original.config.projection_dim if self.projection else original.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, output_hidden_states: bool = False) -> object:
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.clip.modeling_clip import CLIPTextModelOutput

        if attention_mask is not None:
            raise ValueError("the ONNX text encoder is exported without an attention mask")
        batch, tokens = input_ids.shape
        hidden = (batch, tokens, self.config.hidden_size)
        last, penultimate, pooled = self.session.run({"input_ids": input_ids.to(torch.int64)}, [hidden, hidden, (batch, self.width)])
        # Only the two hidden states the pipelines read ([-2] and [-1]) exist: no clip_skip.
        states = (penultimate, last) if output_hidden_states else None
        if self.projection:
            return CLIPTextModelOutput(text_embeds=pooled, last_hidden_state=last, hidden_states=states)
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled, hidden_states=states)


def use_onnx(pipeline: object, folder: Path, device: str) -> None:
    """Swap the diffusers `pipeline`'s torch networks for the ONNX export in `folder`, run on `device`.

    Every session is made before anything is swapped: when one fails to load, the PyTorch
    pipeline is still whole, and the caller can serve it.
    """
    parts = json.loads((folder / "export.json").read_text())["components"]
    sessions = {name: _Session(folder / name / "model.onnx", device) for name in parts}
    pipeline.unet = OnnxUNet(pipeline.unet, sessions["unet"])
    pipeline.vae = OnnxVae(pipeline.vae, {name: sessions[name] for name in VAE_PARTS})
    for name in TEXT_ENCODERS:
        if name in sessions:
            setattr(pipeline, name, OnnxTextEncoder(getattr(pipeline, name), sessions[name]))


@contextmanager
def seamless(pipeline: object, tile_x: bool, tile_y: bool) -> Iterator[None]:
    """The ONNX pipeline's `torch_diffusion.seamless`: circular padding on the tiled axes."""
    tile = torch.tensor([float(tile_x), float(tile_y)])
    controlnet = getattr(pipeline, "controlnet", None)  # it reads the latents too, so it tiles with them
    controlnets = [] if controlnet is None else getattr(controlnet, "nets", [controlnet])  # MultiControlNetModel's
    modules = (pipeline.unet, pipeline.vae, *controlnets)
    for module in modules:
        module.tile = tile
    try:
        yield
    finally:
        for module in modules:
            module.tile = torch.zeros(2)
