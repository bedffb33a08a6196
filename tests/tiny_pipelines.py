"""Architecture-true tiny Stable Diffusion pipelines for tests (random weights, real classes).

A plain module (no pytest fixtures): the tests and the engine tests import these functions.

- `write_tiny_clip_tokenizer(folder)`: a small but real byte-level BPE CLIP tokenizer.
- `build_tiny_sd15(folder)` / `build_tiny_sdxl(folder)`: a `StableDiffusionPipeline` /
  `StableDiffusionXLPipeline` saved with `save_pretrained` (safetensors). The structure is the
  real one (block types, levels, layers per block, text_time embedding, two text encoders,
  an 8x VAE, the real schedulers and scaling factors); only the widths are tiny.
- `write_single_file(folder, out, kind)`: the same weights as ONE .safetensors in the original
  LDM/SGM key layout (`model.diffusion_model.*`, `first_stage_model.*`,
  `cond_stage_model.transformer.*` / `conditioner.embedders.{0,1}.*`), the inverse of
  diffusers' single-file converters.
- `build_all(root)`: builds all four into `root` (cached, versioned) and returns their paths.
- `build_tiny_sd15_taesd(folder, sd15_folder)`: tiny SD 1.5 with a TAESD (AutoencoderTiny) VAE,
  which PyTorch serves and the ONNX export refuses (the fallback tests).

Loading a single file offline needs the pipeline folder as the diffusers config::

    StableDiffusionPipeline.from_single_file(str(file), config=str(folder), local_files_only=True)

Without `config=`, diffusers infers the model type from the keys (`infer_diffusers_model_type`,
which does say "v1" / "xl_base" for these files) and then fetches the *real* model's configs
from the Hugging Face Hub (even with local_files_only=True: it retries online; only
HF_HUB_OFFLINE=1 stops it), which is both a network access and the wrong (full-size) shapes.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

TINY_PROMPT_SIZE = 64  # pixels: a latent of 8 x 8, the UNets' sample_size

# Bump when anything below changes what gets built: build_all() rebuilds a cache of another version.
TINY_VERSION = "4"  # 2: ControlNets; 3: a depth model; 4: ControlNets that see their image
_VERSION_FILE = ".tiny-pipelines-version"

MODEL_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

# Words the BPE merges are learned from: common prompt vocabulary. Any other text still tokenizes,
# byte by byte, since every byte (and every byte + "</w>") is in the vocabulary.
_CORPUS = """
a an the of and in on with at by for from to is are was this that it its as or not no very
photo photograph picture painting drawing sketch render illustration portrait landscape image art
cat dog bird horse fish lion tiger bear fox wolf rabbit dragon robot knight wizard girl boy man
woman person people child face eyes hair hand city street house castle tower forest tree trees
flower flowers garden mountain mountains river lake sea ocean beach sky cloud clouds sun moon star
stars night day morning evening sunset sunrise light dark shadow fire water snow rain storm stone
red green blue yellow orange purple pink black white gray grey brown golden silver color colors
big small tall little old new young beautiful detailed highly sharp focus soft high quality best
style digital oil watercolor cinematic lighting studio realistic photorealistic fantasy science
fiction space planet futuristic ancient medieval modern abstract texture pattern seamless tile
wood metal glass brick rock sand grass leaf leaves wall floor roof window door road bridge car
boat ship train plane sitting standing running walking flying looking wearing holding under over
""".split()

_N_MERGES = 300


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _learn_merges(words: list[str], n_merges: int) -> list[tuple[str, str]]:
    """A plain BPE trainer on CLIP's word representation (last symbol carries "</w>")."""
    byte_encoder = _bytes_to_unicode()
    freq = Counter(words)
    corpus: dict[tuple[str, ...], int] = {}
    for word, count in freq.items():
        chars = [byte_encoder[b] for b in word.encode("utf-8")]
        chars[-1] += "</w>"
        corpus[tuple(chars)] = corpus.get(tuple(chars), 0) + count
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in corpus.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent; ties broken by the pair itself
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for symbols, count in corpus.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        corpus = merged
    return merges


@functools.cache
def _tiny_clip_vocab_cached() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    vocab, merges = _build_tiny_clip_vocab()
    return tuple(vocab.items()), tuple(merges)


def _tiny_clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab, merges = _tiny_clip_vocab_cached()
    return dict(vocab), list(merges)


def _build_tiny_clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary layout: 256 bytes, 256 bytes + "</w>", the merges, then the specials."""
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    merges = _learn_merges(_CORPUS, _N_MERGES)
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            tokens.append(a + b)
            seen.add(a + b)
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_tiny_clip_tokenizer(folder: Path, *, pad_token: str = EOS) -> None:
    """A small real CLIPTokenizer (vocab.json + merges.txt, model_max_length=77) in `folder`.

    `pad_token`: "<|endoftext|>" as SD 1.x and SDXL's first tokenizer; "!" as SDXL's second.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _tiny_clip_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=list(merges),
        pad_token=pad_token,
        model_max_length=MODEL_MAX_LENGTH,
    )
    tokenizer.save_pretrained(str(folder))


def _tokenizer_ids() -> dict[str, int]:
    vocab, _ = _tiny_clip_vocab()
    return {"vocab_size": len(vocab), "bos": vocab[BOS], "eos": vocab[EOS], "bang": vocab["!"]}


# ----------------------------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------------------------

_SCALED_LINEAR = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def _randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Perturb every parameter, so that no two tensors are alike (norms are not all ones, biases
    not all zeros): a swapped key in a conversion then shows up as a weight mismatch."""
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.05)


def _clip_text_config(
    ids: dict[str, int], *, hidden: int, layers: int, heads: int, act: str, pad_id: int, projection_dim: int | None = None
):
    from transformers import CLIPTextConfig

    kwargs = {} if projection_dim is None else {"projection_dim": projection_dim}
    return CLIPTextConfig(
        vocab_size=ids["vocab_size"],
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=MODEL_MAX_LENGTH,
        hidden_act=act,
        layer_norm_eps=1e-5,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=pad_id,
        **kwargs,
    )


def _tiny_vae(scaling_factor: float, *, force_upcast: bool):
    from diffusers import AutoencoderKL

    # Four levels as the real VAE: 2 ** (4 - 1) = 8x down, so image sizes behave like the real thing.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),  # real: (128, 256, 512, 512)
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=TINY_PROMPT_SIZE,
        scaling_factor=scaling_factor,
        force_upcast=force_upcast,
    )


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seeds the global torch RNG (the models' initialisers use it) for the build only: the
    caller's RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_tiny_sd15(folder: Path, seed: int = 0) -> Path:
    """A tiny SD 1.5: 4-level UNet (3 CrossAttnDownBlock2D + DownBlock2D, layers_per_block 2,
    conv proj_in), CLIP-L-like text encoder, 8x VAE (0.18215), PNDM, no safety checker."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    ids = _tokenizer_ids()
    hidden = 32
    with _seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=TINY_PROMPT_SIZE // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(32, 32, 64, 64),
            layers_per_block=2,
            attention_head_dim=2,
            cross_attention_dim=hidden,
            norm_num_groups=32,
        )
        vae = _tiny_vae(0.18215, force_upcast=True)
        text_encoder = CLIPTextModel(_clip_text_config(ids, hidden=hidden, layers=2, heads=4, act="quick_gelu", pad_id=ids["eos"]))
        for model in (unet, vae, text_encoder):
            _randomize(model, gen)

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    scheduler = PNDMScheduler(**_SCALED_LINEAR)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    write_tiny_clip_tokenizer(folder / "tokenizer")  # vocab.json + merges.txt alongside, as SD repos ship
    return folder


def build_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """A tiny SDXL base: 3-level UNet (DownBlock2D + 2 CrossAttnDownBlock2D, layers_per_block 2,
    transformer_layers_per_block (1, 1, 2), linear proj_in, text_time add-embedding), CLIP-L-like
    and OpenCLIP-bigG-like (with projection, 10 layers) text encoders, 8x VAE (0.13025), Euler."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    ids = _tokenizer_ids()
    # The two widths must differ (768 / 1280 in SDXL): diffusers' single-file loader tells the
    # encoders apart by the width of their position embeddings.
    hidden_1, hidden_2, projection_dim, time_dim = 32, 64, 64, 8
    with _seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=TINY_PROMPT_SIZE // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64, 64),
            layers_per_block=2,
            transformer_layers_per_block=(1, 1, 2),
            attention_head_dim=(2, 4, 4),
            cross_attention_dim=hidden_1 + hidden_2,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=projection_dim + 6 * time_dim,
            norm_num_groups=32,
        )
        vae = _tiny_vae(0.13025, force_upcast=True)
        text_encoder = CLIPTextModel(_clip_text_config(ids, hidden=hidden_1, layers=2, heads=4, act="quick_gelu", pad_id=ids["eos"]))
        # 10 layers: diffusers recognises an SDXL base checkpoint by
        # conditioner.embedders.1.model.transformer.resblocks.9.*
        text_encoder_2 = CLIPTextModelWithProjection(
            _clip_text_config(ids, hidden=hidden_2, layers=10, heads=4, act="gelu", pad_id=ids["bang"], projection_dim=projection_dim)
        )
        for model in (unet, vae, text_encoder, text_encoder_2):
            _randomize(model, gen)

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_clip_tokenizer(Path(tmp) / "1")
        write_tiny_clip_tokenizer(Path(tmp) / "2", pad_token="!")
        tokenizer = CLIPTokenizer.from_pretrained(str(Path(tmp) / "1"))
        tokenizer_2 = CLIPTokenizer.from_pretrained(str(Path(tmp) / "2"))
    euler_keys = ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "steps_offset", "trained_betas")
    scheduler = EulerDiscreteScheduler(
        **{k: _SCALED_LINEAR[k] for k in euler_keys},
        interpolation_type="linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    write_tiny_clip_tokenizer(folder / "tokenizer")
    write_tiny_clip_tokenizer(folder / "tokenizer_2", pad_token="!")
    return folder


def build_tiny_controlnet(folder: Path, pipeline_folder: Path, seed: int = 0) -> Path:
    """A tiny ControlNet for the tiny pipeline in `pipeline_folder` (SD 1.5 or SDXL shapes): made
    from its UNet as diffusers does for training, with a small conditioning embedding, then every
    weight perturbed, so its zero convolutions are not zero and a control image changes pixels."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(Path(pipeline_folder) / "unet"))
    with _seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32, 32))
        _randomize(controlnet, gen)
        # Its zero convolutions (the image's way in among them), made loud enough to move a 2-step image.
        zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out]
        with torch.no_grad():
            for block in zero_convs:
                block.weight.add_(torch.randn(block.weight.shape, generator=gen) * 0.5)
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def build_tiny_depth(folder: Path, seed: int = 0) -> Path:
    """A tiny DPT depth-estimation model (transformers' DPTForDepthEstimation, ViT backbone, 4
    layers of 32) with its image processor at 32 x 32, every weight perturbed."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        is_hybrid=False,
    )
    with _seeded(seed):
        model = DPTForDepthEstimation(config)
        _randomize(model, torch.Generator().manual_seed(seed))
    model.save_pretrained(str(folder), safe_serialization=True)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(str(folder))
    return Path(folder)


def build_tiny_sd15_taesd(folder: Path, sd15_folder: Path, seed: int = 0) -> Path:
    """The tiny SD 1.5 of `sd15_folder` with a tiny AutoencoderTiny (TAESD) as its VAE: a pipeline
    diffusers runs (people swap TAESD in for fast previews) but the ONNX export does not cover."""
    from diffusers import AutoencoderTiny

    folder = Path(folder)
    shutil.copytree(sd15_folder, folder)
    shutil.rmtree(folder / "vae")
    with _seeded(seed):
        # Four levels (8x), as the real TAESD.
        vae = AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
        )
    vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
    index = json.loads((folder / "model_index.json").read_text())
    index["vae"] = ["diffusers", "AutoencoderTiny"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def build_tiny_sd15_large_images(folder: Path, sd15_folder: Path, seed: int = 0) -> Path:
    """The tiny SD 1.5 of `sd15_folder` (its text encoder, tokenizer and scheduler) with a UNet
    whose attention sits only at its lowest resolution (as SDXL leaves its top level without)
    and a TAESD VAE (no attention): a pipeline that makes 2048x2048 batches on a CPU in
    seconds, for tests of what big results cost the server. Full attention over 256x256
    latents, as tiny-sd15 has, takes many minutes there."""
    from diffusers import UNet2DConditionModel

    folder = build_tiny_sd15_taesd(folder, sd15_folder, seed)
    shutil.rmtree(folder / "unet")
    with _seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=TINY_PROMPT_SIZE // 8,
            down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 32, 32, 32),
            layers_per_block=1,
            attention_head_dim=2,
            cross_attention_dim=32,
        )
        _randomize(unet, torch.Generator().manual_seed(seed))
    unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
    return folder


# ----------------------------------------------------------------------------------------------
# Single file: diffusers layout -> original LDM / SGM layout
# ----------------------------------------------------------------------------------------------

_UNET_PREFIX = "model.diffusion_model."
_VAE_PREFIX = "first_stage_model."

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _put(out: dict[str, torch.Tensor], ldm_key: str, value: torch.Tensor, source_key: str) -> None:
    if ldm_key in out:
        raise KeyError(f"{source_key} maps onto {ldm_key}, which another tensor already took")
    out[ldm_key] = value


def _split(key: str, n: int) -> tuple[list[str], str]:
    parts = key.split(".")
    return parts[:n], ".".join(parts[n:])


def _unet_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    lpb = config["layers_per_block"]
    if not isinstance(lpb, int):
        raise ValueError("per-level layers_per_block has no LDM layout")
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}

    def resnet(rest: str) -> str:
        name, tail = rest.split(".", 1)
        return f"{_UNET_RESNET[name]}.{tail}"

    for key, value in state.items():
        head, tail = key.rsplit(".", 1)  # tail: weight / bias
        if head in _UNET_FIXED:
            ldm = f"{_UNET_FIXED[head]}.{tail}"
        elif key.startswith("down_blocks."):
            (_, b, kind, j), rest = _split(key, 4)
            b, j = int(b), int(j)
            if kind == "resnets":
                ldm = f"input_blocks.{1 + b * (lpb + 1) + j}.0.{resnet(rest)}"
            elif kind == "attentions":
                ldm = f"input_blocks.{1 + b * (lpb + 1) + j}.1.{rest}"
            elif kind == "downsamplers":  # down_blocks.b.downsamplers.0.conv.weight
                ldm = f"input_blocks.{(b + 1) * (lpb + 1)}.0.op.{rest.removeprefix('conv.')}"
            else:
                raise KeyError(key)
        elif key.startswith("up_blocks."):
            (_, b, kind, j), rest = _split(key, 4)
            b, j = int(b), int(j)
            if kind == "resnets":
                ldm = f"output_blocks.{b * (lpb + 1) + j}.0.{resnet(rest)}"
            elif kind == "attentions":
                ldm = f"output_blocks.{b * (lpb + 1) + j}.1.{rest}"
            elif kind == "upsamplers":  # up_blocks.b.upsamplers.0.conv.weight
                ldm = f"output_blocks.{b * (lpb + 1) + lpb}.{2 if up_has_attn[b] else 1}.{rest}"
            else:
                raise KeyError(key)
        elif key.startswith("mid_block."):
            (_, kind, j), rest = _split(key, 3)
            if kind == "resnets":
                ldm = f"middle_block.{0 if j == '0' else 2}.{resnet(rest)}"
            elif kind == "attentions":
                ldm = f"middle_block.1.{rest}"
            else:
                raise KeyError(key)
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        _put(out, _UNET_PREFIX + ldm, value, key)
    return out


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    n_up = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        ldm = key
        m = re.fullmatch(r"(encoder|decoder)\.(.*)", key)
        if m is None:  # quant_conv, post_quant_conv
            _put(out, _VAE_PREFIX + key, value, key)
            continue
        side, rest = m.groups()
        if rest.startswith("conv_norm_out."):
            ldm = f"{side}.norm_out.{rest.removeprefix('conv_norm_out.')}"
        elif rest.startswith(("conv_in.", "conv_out.")):
            ldm = key
        elif mm := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
            i, j, tail = mm.groups()
            ldm = f"{side}.down.{i}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        elif mm := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", rest):
            ldm = f"{side}.down.{mm[1]}.downsample.conv.{mm[2]}"
        elif mm := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
            i, j, tail = mm.groups()
            ldm = f"{side}.up.{n_up - 1 - int(i)}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        elif mm := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", rest):
            ldm = f"{side}.up.{n_up - 1 - int(mm[1])}.upsample.conv.{mm[2]}"
        elif mm := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
            ldm = f"{side}.mid.block_{int(mm[1]) + 1}.{mm[2]}"
        elif mm := re.fullmatch(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", rest):
            ldm = f"{side}.mid.attn_1.{_VAE_ATTN[mm[1]]}.{mm[2]}"
            if mm[1] != "group_norm" and mm[2] == "weight":
                value = value[:, :, None, None]  # the original attention is 1x1 convolutions
        else:
            raise KeyError(f"no LDM name for VAE key {key}")
        _put(out, _VAE_PREFIX + ldm, value.contiguous(), key)
    return out


def _clip_text_model_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers >= 5.6 flattened CLIPTextModel (no `text_model.`); the original layout keeps it."""
    return {k if k.startswith("text_model.") or k.startswith("text_projection.") else f"text_model.{k}": v for k, v in state.items()}


def _clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in _clip_text_model_keys(state).items() if not k.endswith("position_ids")}


def _open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection -> OpenCLIP text tower (fused in_proj, transposed projection)."""
    state = _clip_text_model_keys(state)
    fixed = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    sub = {
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
        "self_attn.out_proj": "attn.out_proj",
    }
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key in fixed:
            out[prefix + fixed[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif mm := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", key):
            qkv.setdefault((mm[1], mm[3]), {})[mm[2]] = value
        elif mm := re.fullmatch(rf"text_model\.encoder\.layers\.(\d+)\.({'|'.join(map(re.escape, sub))})\.(weight|bias)", key):
            out[f"{prefix}transformer.resblocks.{mm[1]}.{sub[mm[2]]}.{mm[3]}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for text encoder key {key}")
    for (layer, kind), parts in qkv.items():
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out


def _component(folder: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    sub = folder / name
    weights = sub / ("model.safetensors" if (sub / "model.safetensors").exists() else "diffusion_pytorch_model.safetensors")
    config = json.loads((sub / "config.json").read_text())
    return load_file(str(weights)), config


def write_single_file(pipeline_folder: Path, out_file: Path, kind: Literal["sd15", "sdxl"]) -> Path:
    """The pipeline in `pipeline_folder` as one .safetensors checkpoint in the original layout.

    SD 1.x (CompVis): model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.text_model.*
    SDXL (SGM):       model.diffusion_model.*, first_stage_model.*, conditioner.embedders.0.transformer.text_model.*
                      (CLIP-L, HF layout) and conditioner.embedders.1.model.* (OpenCLIP bigG layout)
    """
    folder, out_file = Path(pipeline_folder), Path(out_file)
    unet, unet_cfg = _component(folder, "unet")
    vae, vae_cfg = _component(folder, "vae")
    te, _ = _component(folder, "text_encoder")
    parts = [_unet_to_ldm(unet, unet_cfg), _vae_to_ldm(vae, vae_cfg)]
    if kind == "sd15":
        parts.append(_clip_to_ldm(te, "cond_stage_model.transformer."))
    elif kind == "sdxl":
        te2, _ = _component(folder, "text_encoder_2")
        parts.append(_clip_to_ldm(te, "conditioner.embedders.0.transformer."))
        parts.append(_open_clip_to_ldm(te2, "conditioner.embedders.1.model."))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    checkpoint = {k: v for part in parts for k, v in part.items()}
    assert len(checkpoint) == sum(map(len, parts)), "two components share a key"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    save_file({k: v.contiguous() for k, v in sorted(checkpoint.items())}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out_file)
    return out_file


# ----------------------------------------------------------------------------------------------
# All four, cached
# ----------------------------------------------------------------------------------------------


def tiny_paths(root: Path) -> dict[str, Path]:
    root = Path(root)
    return {
        "tiny-sd15": root / "tiny-sd15",
        "tiny-sd15-single": root / "tiny-sd15-single.safetensors",
        "tiny-sdxl": root / "tiny-sdxl",
        "tiny-sdxl-single": root / "tiny-sdxl-single.safetensors",
        "tiny-sd15-controlnet": root / "controlnets" / "tiny-sd15-depth",
        "tiny-sdxl-controlnet": root / "controlnets" / "tiny-sdxl-depth",
        "tiny-depth": root / "tiny-dpt-depth",
    }


def build_all(root: Path) -> dict[str, Path]:
    """Build the four tiny models, two tiny ControlNets and a tiny depth model into `root` (skipped when a build of this version is there).

    Returns {"tiny-sd15": folder, "tiny-sd15-single": file, "tiny-sdxl": folder, "tiny-sdxl-single": file,
    "tiny-sd15-controlnet": folder, "tiny-sdxl-controlnet": folder, "tiny-depth": folder} (the
    ControlNets under controlnets/; a DPT depth model).
    The single files load with `from_single_file(file, config=<matching folder>)`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".tiny-pipelines.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time (parallel test workers share the cache)
        return _build_all_locked(root)


def _stamp() -> str:
    """What a cached build depends on: this module's version and the libraries that wrote it."""
    from importlib.metadata import version

    return " ".join([TINY_VERSION, *(f"{lib}={version(lib)}" for lib in ("diffusers", "transformers", "torch", "safetensors"))])


def _build_all_locked(root: Path) -> dict[str, Path]:
    paths = tiny_paths(root)
    stamp = root / _VERSION_FILE
    if stamp.is_file() and stamp.read_text().strip() == _stamp() and all(p.exists() for p in paths.values()):
        return paths
    for path in paths.values():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    stamp.unlink(missing_ok=True)
    for name, builder, kind in (("tiny-sd15", build_tiny_sd15, "sd15"), ("tiny-sdxl", build_tiny_sdxl, "sdxl")):
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=root))
        try:
            builder(staging)
            os.replace(staging, paths[name])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        write_single_file(paths[name], paths[f"{name}-single"], kind)
        build_tiny_controlnet(paths[f"{name}-controlnet"], paths[name])
    build_tiny_depth(paths["tiny-depth"])
    stamp.write_text(_stamp() + "\n")
    return paths
