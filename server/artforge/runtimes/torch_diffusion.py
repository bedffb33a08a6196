"""Stable Diffusion pipelines on PyTorch (diffusers): loading, schedulers, seamless tiling, previews.

One loaded pipeline serves txt2img, img2img and inpaint: the other two are made from it with
`from_pipe`, which shares the weights. A warm pipeline serves one job after another, so nothing
a job sets may reach the next: seamless tiling (padding the UNet's and VAE's convolutions
circularly on the chosen axes) is switched off after each job, every job gets a scheduler built
afresh from the model's own scheduler config as loaded, and LoRA adapters are kept loaded for
reuse only up to a bound, the least recently used deleted first. ControlNet pipelines are made
per job the same way, over the same weights, with that job's ControlNets.
"""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Scheduler names the API accepts -> (diffusers class, extra config).
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}

# Linear maps from the 4 latent channels to RGB: a cheap preview, no VAE decode. Fitted by
# the community on real SD 1.x/2.x and SDXL VAEs; on random-weight test VAEs they only show
# that previews flow.
_LATENT_RGB = {
    "sd": [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
    "sdxl": [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]],
}


# Distilled few-step models want ~4 steps and no guidance; their names and schedulers say so.
FEW_STEP_MARKERS = ("turbo", "lcm", "lightning", "hyper")
FEW_STEPS, DEFAULT_STEPS = 4, 25


def is_few_step(name: str, scheduler_class: str) -> bool:
    """A distilled model that wants few steps and no guidance, by its name or an LCM scheduler."""
    return scheduler_class == "LCMScheduler" or any(marker in name.lower() for marker in FEW_STEP_MARKERS)


@dataclass
class LoadedPipeline:
    """A pipeline family on one device, and what jobs need to know about it."""

    text2img: object
    family: str  # "sd" (1.x, 2.x) or "sdxl"
    device: str
    default_scheduler: str
    default_guidance: float
    default_steps: int
    native_size: int
    # The scheduler as the model ships it. Each job's scheduler is built from this: built from
    # the pipeline's current one, the last job's options (Karras sigmas) would carry over.
    scheduler_class: type
    scheduler_config: dict[str, Any]
    # Adapters loaded on this pipeline, least recently used first. A tuple, replaced whole, so
    # other threads may read it while a job changes it.
    loras: tuple[str, ...] = ()
    _variants: dict[str, object] = field(default_factory=dict)

    def variant(self, mode: str) -> object:
        """The txt2img, img2img or inpaint pipeline, sharing this one's weights."""
        if mode == "txt2img":
            return self.text2img
        if mode not in self._variants:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            cls = AutoPipelineForImage2Image if mode == "img2img" else AutoPipelineForInpainting
            self._variants[mode] = cls.from_pipe(self.text2img)
        return self._variants[mode]


def _family_of_folder(folder: Path) -> str:
    class_name = json.loads((folder / "model_index.json").read_text()).get("_class_name", "")
    return "sdxl" if "XL" in class_name else "sd"


def _family_of_checkpoint(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as checkpoint:
        return "sdxl" if any(key.startswith("conditioner.embedders.1.") for key in checkpoint.keys()) else "sd"


def load_pipeline(name: str, path: Path, single_file: bool, config: Path | None, device: str) -> LoadedPipeline:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    family = _family_of_checkpoint(path) if single_file else _family_of_folder(path)
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    # Half precision on GPUs (with the VAE upcast where the pipeline needs it); float32 on CPUs.
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    kwargs: dict = {"dtype": dtype}
    if family == "sd":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if single_file:
        if config is not None:
            # The configs are on disk: never ask the Hub (which would also give full-size shapes).
            kwargs.update(config=str(config), local_files_only=True)
        pipeline = cls.from_single_file(str(path), **kwargs)
    else:
        pipeline = cls.from_pretrained(str(path), **kwargs)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    scheduler_class = type(pipeline.scheduler).__name__
    default_scheduler = next((name for name, (cls_name, extra) in SCHEDULERS.items() if cls_name == scheduler_class and not extra), "")
    native = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    few_step = is_few_step(name, scheduler_class)
    return LoadedPipeline(
        text2img=pipeline,
        family=family,
        device=device,
        default_scheduler=default_scheduler or scheduler_class,
        default_guidance=0.0 if few_step else 5.0 if family == "sdxl" else 7.5,
        default_steps=FEW_STEPS if few_step else DEFAULT_STEPS,
        native_size=int(native),
        scheduler_class=type(pipeline.scheduler),
        scheduler_config=dict(pipeline.scheduler.config),
    )


def load_controlnet(path: Path, device: str) -> object:
    """A diffusers ControlNetModel folder on `device`, in the precision the pipelines use there."""
    import torch
    from diffusers import ControlNetModel

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return ControlNetModel.from_pretrained(str(path), dtype=dtype).to(device).eval()


def control_pipeline(loaded: LoadedPipeline, mode: str, controlnets: list[object]) -> object:
    """The ControlNet pipeline for `mode` over `loaded`'s weights, steered by `controlnets`
    (several at once through MultiControlNetModel). Cheap: it shares every module."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image, MultiControlNetModel

    controlnet = controlnets[0] if len(controlnets) == 1 else MultiControlNetModel(controlnets)
    cls = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image, "inpaint": AutoPipelineForInpainting}[mode]
    pipeline = cls.from_pipe(loaded.text2img, controlnet=controlnet)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def set_scheduler(loaded: LoadedPipeline, pipeline: object, name: str) -> None:
    """A fresh scheduler `name` for `pipeline` (one of `loaded`'s variants); the model's own for any other name."""
    import diffusers

    scheduler_class, extra = loaded.scheduler_class, {}
    if name in SCHEDULERS:
        class_name, extra = SCHEDULERS[name]
        scheduler_class = getattr(diffusers, class_name)
    pipeline.scheduler = scheduler_class.from_config(loaded.scheduler_config, **extra)


# -- seamless tiling --------------------------------------------------------------------------


def padded_convs(*models: object) -> Iterator[object]:
    """The convolutions of `models` that pad their input: the ones seamless tiling pads circularly."""
    import torch

    for model in models:
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.padding != (0, 0):
                yield module


@contextmanager
def seamless(pipeline: object, tile_x: bool, tile_y: bool) -> Iterator[None]:
    """Pad every padded convolution circularly on the tiled axes (zeros on the others)."""
    if not (tile_x or tile_y):
        yield
        return
    import torch.nn.functional as F

    def conv_forward(self: object, input: object, weight: object, bias: object) -> object:
        pad_y, pad_x = self.padding
        input = F.pad(input, (pad_x, pad_x, 0, 0), mode="circular" if tile_x else "constant")
        input = F.pad(input, (0, 0, pad_y, pad_y), mode="circular" if tile_y else "constant")
        return F.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)

    controlnet = getattr(pipeline, "controlnet", None)  # it reads the latents too, so it tiles with them
    convs = list(padded_convs(pipeline.unet, pipeline.vae, *([controlnet] if controlnet is not None else [])))
    for conv in convs:
        conv._conv_forward = types.MethodType(conv_forward, conv)  # an instance attribute shadows the method
    try:
        yield
    finally:
        for conv in convs:
            del conv._conv_forward


# -- LoRA adapters ----------------------------------------------------------------------------


def set_loras(loaded: LoadedPipeline, loras: list[tuple[str, Path, float]], max_loaded: int) -> None:
    """Activate exactly these adapters (name, file, scale) for the next generation.

    Adapters stay loaded for later jobs, at most `max_loaded` (or as many as this job uses):
    the least recently used are deleted before new ones load, so memory never holds more.
    """
    pipeline = loaded.text2img
    wanted = [name for name, _, _ in loras]
    kept = [name for name in loaded.loras if name not in wanted]
    evict = kept[: max(0, len(kept) + len(wanted) - max_loaded)]
    if evict:
        pipeline.delete_adapters(evict)
        log.info("unloaded LoRA %s to stay within %d adapters", ", ".join(evict), max_loaded)
    loaded.loras = tuple(name for name in kept if name not in evict) + tuple(name for name in wanted if name in loaded.loras)
    for name, path, _ in loras:
        if name not in loaded.loras:
            pipeline.load_lora_weights(str(path), adapter_name=name)
            loaded.loras += (name,)
    if loras:
        pipeline.enable_lora()
        pipeline.set_adapters([name for name, _, _ in loras], adapter_weights=[scale for _, _, scale in loras])
    elif loaded.loras:
        pipeline.disable_lora()


# -- previews ---------------------------------------------------------------------------------


def latent_preview(latents: object, family: str) -> np.ndarray:
    """The first latent of a batch as an approximate RGB image, H/8 x W/8, values in 0..1."""
    import torch

    factors = torch.tensor(_LATENT_RGB[family], dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents[0].float().cpu(), factors)
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).numpy()


def step_callback(on_step: Callable[[int, int, object], bool]) -> Callable[[object, int, object, dict], dict]:
    """A diffusers `callback_on_step_end` calling on_step(step, total, latents); False interrupts.

    `total` is the number of denoising steps actually run, which some schedulers (PNDM) make
    one more than the steps asked for, and img2img fewer (strength).
    """

    def callback(pipeline: object, step: int, timestep: object, kwargs: dict) -> dict:
        if not on_step(step + 1, pipeline.num_timesteps, kwargs["latents"]):
            pipeline._interrupt = True  # diffusers skips the remaining steps
        return kwargs

    return callback
