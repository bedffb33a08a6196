"""The tiny test pipelines: built from real classes, loadable as folders and as single files, offline.

Everything here runs with the Hugging Face Hub off (HF_HUB_OFFLINE=1) and with every non-loopback
network connection refused, so a load that would reach the Hub fails instead of passing by luck.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub

import contextlib
import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tests.tiny_pipelines import TINY_PROMPT_SIZE, build_all, tiny_paths

PROMPT = "A majestic castle on a hill at sunset, highly detailed, 8k, trending!!! ünïcödé 🐱"


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    print(f"[tiny-pipelines] {label}: {time.perf_counter() - start:.2f} s")


# ----------------------------------------------------------------------------------------------
# No network: refuse connections to anything but loopback, and record the attempts.
# ----------------------------------------------------------------------------------------------

BLOCKED: list[str] = []


def _is_local(host: object) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="module", autouse=True)
def no_network() -> Iterator[None]:
    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def check(address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if not _is_local(host):
            BLOCKED.append(str(address))
            raise OSError(f"test_tiny_pipelines: network access to {address} refused")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        check((host.decode() if isinstance(host, bytes) else host,))
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        import huggingface_hub.constants

        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


# ----------------------------------------------------------------------------------------------
# Fixtures: built once for the module in a fresh folder (this file tests the build itself).
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    with timed("build_all (2 folders + 2 single files)"):
        return build_all(root)


def _from_pretrained(cls_name: str, folder: Path):
    import diffusers

    with timed(f"{cls_name}.from_pretrained"):
        pipe = getattr(diffusers, cls_name).from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _from_single_file(cls_name: str, file: Path, folder: Path):
    import diffusers

    with timed(f"{cls_name}.from_single_file"):
        # The call the engine uses: the folder holds the diffusers configs (model_index.json,
        # */config.json, scheduler, tokenizers); the weights all come from the single file.
        pipe = getattr(diffusers, cls_name).from_single_file(str(file), config=str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd15(tiny):
    return _from_pretrained("StableDiffusionPipeline", tiny["tiny-sd15"])


@pytest.fixture(scope="module")
def sdxl(tiny):
    return _from_pretrained("StableDiffusionXLPipeline", tiny["tiny-sdxl"])


def generate(pipe, *, seed: int, width: int = TINY_PROMPT_SIZE, height: int = TINY_PROMPT_SIZE, prompt: str = PROMPT) -> np.ndarray:
    with timed(f"{type(pipe).__name__} {width}x{height}, 4 steps"):
        out = pipe(
            prompt,
            num_inference_steps=4,
            width=width,
            height=height,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
        )
    image = out.images[0]
    assert image.shape == (height, width, 3)
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
    return image


# ----------------------------------------------------------------------------------------------
# Build and cache
# ----------------------------------------------------------------------------------------------


def test_build_all_makes_the_four_and_reuses_them(tiny):
    pipelines = {"tiny-sd15", "tiny-sd15-single", "tiny-sdxl", "tiny-sdxl-single"}
    assert set(tiny) == pipelines | {"tiny-sd15-controlnet", "tiny-sdxl-controlnet", "tiny-depth"}
    root = tiny["tiny-sd15"].parent
    assert tiny == tiny_paths(root)
    for name in ("tiny-sd15", "tiny-sdxl"):
        assert (tiny[name] / "model_index.json").is_file()
        for sub in ("unet", "vae", "text_encoder"):
            assert list((tiny[name] / sub).glob("*.safetensors")), f"{name}/{sub} has no safetensors weights"
        assert tiny[f"{name}-single"].suffix == ".safetensors" and tiny[f"{name}-single"].is_file()
        assert json.loads((tiny[f"{name}-controlnet"] / "config.json").read_text())["_class_name"] == "ControlNetModel"
    assert json.loads((tiny["tiny-depth"] / "config.json").read_text())["architectures"] == ["DPTForDepthEstimation"]
    assert not list(root.glob(".staging-*")), "a staging folder was left behind"

    mtimes = {name: path.stat().st_mtime_ns for name, path in tiny.items()}
    assert build_all(root) == tiny
    assert {name: path.stat().st_mtime_ns for name, path in tiny.items()} == mtimes, "a second build_all finds the first one"


# ----------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "sub", "pad"),
    [("tiny-sd15", "tokenizer", "<|endoftext|>"), ("tiny-sdxl", "tokenizer", "<|endoftext|>"), ("tiny-sdxl", "tokenizer_2", "!")],
)
def test_tokenizer_is_a_small_real_clip_tokenizer(tiny, model, sub, pad):
    from transformers import CLIPTokenizer

    folder = tiny[model] / sub
    assert (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    tok = CLIPTokenizer.from_pretrained(str(folder))
    assert tok.model_max_length == 77
    assert 300 < len(tok) < 2000
    assert tok.pad_token == pad
    assert tok.bos_token == "<|startoftext|>" and tok.eos_token == "<|endoftext|>"

    ids = tok(PROMPT).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    # Nothing falls back to the unknown token (<|endoftext|>): every byte is in the vocabulary.
    assert tok.eos_token_id not in ids[1:-1]
    assert len(ids) > 10
    # Common words are whole tokens, as in the real vocabulary.
    assert "castle</w>" in tok.convert_ids_to_tokens(ids)
    assert tok.decode(ids, skip_special_tokens=True).startswith("a majestic castle on a hill")

    padded = tok(PROMPT, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert len(padded) == 77 and padded[-1] == tok.pad_token_id
    long = tok(" ".join(["castle"] * 200), padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert len(long) == 77 and long[-1] == tok.eos_token_id


# ----------------------------------------------------------------------------------------------
# Folders: architecture and generation
# ----------------------------------------------------------------------------------------------


def test_sd15_folder_is_sd15_shaped(sd15):
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    assert isinstance(sd15.unet, UNet2DConditionModel) and isinstance(sd15.vae, AutoencoderKL)
    assert isinstance(sd15.text_encoder, CLIPTextModel) and isinstance(sd15.scheduler, PNDMScheduler)
    assert sd15.safety_checker is None and sd15.feature_extractor is None
    assert sd15.config.requires_safety_checker is False
    unet = sd15.unet.config
    assert unet.down_block_types == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert unet.up_block_types == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert unet.in_channels == unet.out_channels == 4 and unet.layers_per_block == 2
    assert unet.cross_attention_dim == sd15.text_encoder.config.hidden_size
    assert unet.addition_embed_type is None
    assert sd15.vae.config.latent_channels == 4 and sd15.vae.config.scaling_factor == 0.18215
    assert sd15.vae_scale_factor == 8
    assert unet.sample_size * sd15.vae_scale_factor == TINY_PROMPT_SIZE
    assert sd15.tokenizer.model_max_length == sd15.text_encoder.config.max_position_embeddings == 77
    assert sd15.scheduler.config.skip_prk_steps and sd15.scheduler.config.steps_offset == 1


def test_sdxl_folder_is_sdxl_shaped(sdxl):
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    assert isinstance(sdxl.text_encoder, CLIPTextModel)
    assert isinstance(sdxl.text_encoder_2, CLIPTextModelWithProjection)
    assert sdxl.tokenizer is not None and sdxl.tokenizer_2 is not None
    assert isinstance(sdxl.scheduler, EulerDiscreteScheduler)
    assert sdxl.config.force_zeros_for_empty_prompt is True
    unet = sdxl.unet.config
    te1, te2 = sdxl.text_encoder.config, sdxl.text_encoder_2.config
    assert unet.addition_embed_type == "text_time"
    assert unet.down_block_types == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert unet.up_block_types == ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    assert unet.cross_attention_dim == te1.hidden_size + te2.hidden_size
    assert unet.projection_class_embeddings_input_dim == te2.projection_dim + 6 * unet.addition_time_embed_dim
    assert unet.use_linear_projection is True
    assert list(unet.transformer_layers_per_block) == [1, 1, 2]
    assert sdxl.vae.config.scaling_factor == 0.13025 and sdxl.vae_scale_factor == 8
    assert unet.sample_size * sdxl.vae_scale_factor == TINY_PROMPT_SIZE
    assert sdxl.tokenizer.model_max_length == sdxl.tokenizer_2.model_max_length == 77


@pytest.mark.parametrize("which", ["sd15", "sdxl"])
def test_folder_generates_requested_sizes_deterministically(which, request):
    pipe = request.getfixturevalue(which)
    first = generate(pipe, seed=7)
    again = generate(pipe, seed=7)
    other = generate(pipe, seed=8)
    assert np.array_equal(first, again), "same seed, same pixels"
    assert not np.array_equal(first, other)
    assert first.std() > 0.0
    generate(pipe, seed=7, width=96, height=64)


def test_sdxl_empty_prompt_uses_zeros(sdxl):
    generate(sdxl, seed=1, prompt="")


# ----------------------------------------------------------------------------------------------
# Single files: original layout, offline load, same weights
# ----------------------------------------------------------------------------------------------

SINGLE = {
    "sd15": ("StableDiffusionPipeline", "v1", ["model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."]),
    "sdxl": (
        "StableDiffusionXLPipeline",
        "xl_base",
        [
            "model.diffusion_model.",
            "first_stage_model.",
            "conditioner.embedders.0.transformer.text_model.",
            "conditioner.embedders.1.model.",
        ],
    ),
}


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_single_file_has_the_original_layout(tiny, kind):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    _, model_type, prefixes = SINGLE[kind]
    with safe_open(str(tiny[f"tiny-{kind}-single"]), "pt") as f:
        keys = list(f.keys())
        checkpoint = {k: f.get_tensor(k) for k in keys}
    assert all(any(k.startswith(p) for p in prefixes) for k in keys), "a key outside the original layout"
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in keys), f"nothing under {prefix}"
    # diffusers recognises the checkpoint as the real thing
    assert infer_diffusers_model_type(checkpoint) == model_type
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in keys
    if kind == "sd15":
        assert "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in keys  # diffusers' "v1" marker
        assert "model.diffusion_model.input_blocks.9.0.op.weight" in keys
        assert checkpoint["model.diffusion_model.middle_block.1.proj_in.weight"].ndim == 4  # conv proj_in
    else:
        assert "model.diffusion_model.label_emb.0.0.weight" in keys  # text_time add-embedding
        assert "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias" in keys  # "xl_base" marker
        assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
        assert checkpoint["model.diffusion_model.middle_block.1.proj_in.weight"].ndim == 2  # linear proj_in
    assert checkpoint["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv, as the original


def _config(model) -> dict:
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)
    config.pop("_name_or_path", None)
    return config


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_single_file_loads_offline_with_the_folders_weights(tiny, kind, request):
    cls_name = SINGLE[kind][0]
    folder_pipe = request.getfixturevalue(kind)
    blocked_before = len(BLOCKED)
    single_pipe = _from_single_file(cls_name, tiny[f"tiny-{kind}-single"], tiny[f"tiny-{kind}"])
    assert len(BLOCKED) == blocked_before, f"from_single_file tried the network: {BLOCKED[blocked_before:]}"
    assert type(single_pipe) is type(folder_pipe)
    assert _config(single_pipe) == _config(folder_pipe)  # force_zeros_for_empty_prompt, requires_safety_checker, ...

    components = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if kind == "sdxl" else [])
    for name in components:
        want, got = getattr(folder_pipe, name).state_dict(), getattr(single_pipe, name).state_dict()
        assert sorted(got) == sorted(want), f"{name}: different tensors"
        for key, tensor in want.items():
            loaded = got[key]
            assert not loaded.is_meta, f"{name}.{key} was never loaded"
            assert loaded.shape == tensor.shape and loaded.dtype == tensor.dtype, f"{name}.{key}"
            assert torch.equal(loaded, tensor), f"{name}.{key} differs"
        assert _config(getattr(single_pipe, name)) == _config(getattr(folder_pipe, name)), f"{name}: different config"
    assert type(single_pipe.scheduler) is type(folder_pipe.scheduler)
    assert dict(single_pipe.scheduler.config) == dict(folder_pipe.scheduler.config)
    assert single_pipe.tokenizer(PROMPT).input_ids == folder_pipe.tokenizer(PROMPT).input_ids

    assert np.array_equal(generate(single_pipe, seed=3), generate(folder_pipe, seed=3))


def test_single_file_needs_only_the_configs_of_the_folder(tiny, tmp_path, sd15):
    """A folder without any weights (model_index.json, */config.json, tokenizers, scheduler) is
    enough as config=: everything with weights comes from the single file."""
    import shutil

    configs = tmp_path / "sd15-configs"
    shutil.copytree(tiny["tiny-sd15"], configs, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    assert not list(configs.rglob("*.safetensors"))
    pipe = _from_single_file("StableDiffusionPipeline", tiny["tiny-sd15-single"], configs)
    assert np.array_equal(generate(pipe, seed=5), generate(sd15, seed=5))


def test_single_file_without_config_would_need_the_hub(tiny):
    """Documents why the engine passes config=: without it diffusers maps the checkpoint to the
    real model's Hub repo (stable-diffusion-v1-5/stable-diffusion-v1-5) for the configs, and even
    with local_files_only=True it then tries to download them: only HF_HUB_OFFLINE=1 stops it."""
    from diffusers import StableDiffusionPipeline

    with pytest.raises(OSError):  # huggingface_hub's LocalEntryNotFoundError (or our socket guard)
        StableDiffusionPipeline.from_single_file(str(tiny["tiny-sd15-single"]), local_files_only=True)
