"""Checks of image requests that need the model: its defaults, read before it is loaded.

Requests are checked before they queue, and loading a pipeline takes seconds to minutes, so
the checks read the defaults a job will get from the diffusers configs: the native size (for
the pixel limit on width or height 0) and the default steps (img2img and inpaint keep only
steps x strength of them, which must leave at least one), by the same rule as
artforge.runtimes.torch_diffusion.load_pipeline (is_few_step).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from artforge.errors import invalid
from artforge.models.registry import ModelSpec
from artforge.runtimes.torch_diffusion import DEFAULT_STEPS, FEW_STEPS, is_few_step

# SDXL's: the largest native size of the families served, assumed when the files do not say
# (a single-file checkpoint without a config folder), so the pixel limit still holds.
LARGEST_NATIVE_SIZE = 1024


@dataclass(frozen=True)
class ImageDefaults:
    native_size: int  # pixels on each side
    steps: int


def _config(folder: Path | None, name: str) -> dict:
    if folder is None:
        return {}
    try:
        config = json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


@functools.lru_cache(maxsize=64)
def image_defaults(spec: ModelSpec) -> ImageDefaults:
    """The native size and default steps a job on `spec` will get, from its configs alone (read
    once per model, not at every request: a model's configs change only with its files, as the
    loaded pipeline's do)."""
    folder = spec.config if spec.format == "single_file" else spec.path
    sample_size = _config(folder, "unet/config.json").get("sample_size")
    vae_levels = len(_config(folder, "vae/config.json").get("block_out_channels") or ())
    native = sample_size * 2 ** (vae_levels - 1) if isinstance(sample_size, int) and vae_levels else LARGEST_NATIVE_SIZE
    scheduler = _config(folder, "scheduler/scheduler_config.json").get("_class_name")
    return ImageDefaults(native, FEW_STEPS if is_few_step(spec.name, str(scheduler)) else DEFAULT_STEPS)


def check_pixels(width: int, height: int, batch: int, native: int, limit: int) -> None:
    """INVALID_ARGUMENT unless `batch` images of width x height (0: `native`) stay within `limit` pixels in all."""
    note = f" (0 is the model's native size, {native})" if 0 in (width, height) else ""
    width, height = width or native, height or native
    pixels = width * height
    if pixels > limit:
        raise invalid("width" if width >= height else "height", f"{width}x{height} = {pixels} pixels{note}; the limit is {limit}")
    if pixels * batch > limit:
        total = pixels * batch
        raise invalid("batch_size", f"{batch} images of {width}x{height}{note} are {total} pixels; the limit is {limit} for a whole batch")


@dataclass(frozen=True)
class UnetShape:
    """What a ControlNet must share with the UNet it steers: its cross-attention width and its
    added embedding (SDXL's text_time). Equal shapes fit; the names are for error messages."""

    cross_attention: int
    added_embedding: str

    def __str__(self) -> str:
        known = {(768, ""): "SD 1.x", (1024, ""): "SD 2.x", (2048, "text_time"): "SDXL"}
        if name := known.get((self.cross_attention, self.added_embedding)):
            return name
        style = ", SDXL-style" if self.added_embedding == "text_time" else ""
        return f"a UNet with {self.cross_attention}-wide cross-attention{style}"


@functools.lru_cache(maxsize=64)
def unet_shape(spec: ModelSpec) -> UnetShape | None:
    """The shape of an image model's UNet, or of the UNet a ControlNet was made for; None when
    the files do not say (a single-file checkpoint without a config folder)."""
    if spec.kind == "controlnet":
        config = _config(spec.path, "config.json")
    else:
        config = _config(spec.config if spec.format == "single_file" else spec.path, "unet/config.json")
    width = config.get("cross_attention_dim")
    if isinstance(width, list):  # per block in some configs: the first is what the text reaches
        width = width[0] if width else None
    if not isinstance(width, int):
        return None
    return UnetShape(width, str(config.get("addition_embed_type") or ""))
