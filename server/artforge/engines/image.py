"""The image engine: text-to-image, image-to-image and inpaint on Stable Diffusion pipelines.

`prepare` checks every field before the job is queued; `run` generates on a device's worker
thread, reporting each step (with a small preview every `preview_every` steps, unless the
safety check is on: it checks results only) and stopping between steps when the job is
cancelled. Seamless textures tile on the chosen axes; PBR maps are derived from the albedo
afterwards (artforge.engines.pbr).

Backends: each model's `backend` is "torch", "onnx" or "auto" (artforge.runtimes.backend).
ONNX serves the same diffusers pipeline with its networks on ONNX Runtime
(artforge.runtimes.onnx_diffusion), from an export cached under the models folder and keyed
by a hash of the weights: made on first use, or ahead with `artforge onnx export MODEL`.
LoRA adapters change the UNet's weights per request, which a fixed ONNX graph cannot follow:
a job with adapters on an ONNX-served model runs on a PyTorch copy of the model, loaded on its
first such job and kept for the next (its JobStarted says "torch", and why). Controls on an
ONNX-served model run on ONNX Runtime too: each ControlNet is exported on its first such job
(cached like the pipelines' exports) and the UNet graph takes its residuals; a ControlNet that
cannot be exported sends the job to the PyTorch copy, and its JobStarted says why.

Controls: each names a ControlNet (or a control type, and the server takes a registered
ControlNet of that type made for the job's model), an image of any size (resized to the job's),
a strength and the fraction of the steps it acts on. Several act at once (diffusers'
MultiControlNetModel), with txt2img, img2img and inpaint alike.
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from artforge.config import Limits
from artforge.engines.base import ImageOutput, JobContext, JobResult, Provenance, Work
from artforge.engines.control_images import PREPROCESSORS, ControlImages
from artforge.engines.image_checks import UnetShape, check_pixels, image_defaults, unet_shape
from artforge.errors import ArtForgeError, ErrorCode, invalid, shown
from artforge.images import resize, to_rgb
from artforge.models.registry import CONTROL_TYPES, ModelRegistry, ModelSpec
from artforge.runtimes.backend import BackendChoice, choose_backend, fallback, known_backend
from artforge.runtimes.devices import is_cpu
from artforge.runtimes.export_cache import ExportCache, ExportKey, weights_digest
from artforge.runtimes.loaded import LoadedModels
from artforge.runtimes.onnx import CUDA
from artforge.runtimes.torch_diffusion import (
    SCHEDULERS,
    LoadedPipeline,
    control_pipeline,
    latent_preview,
    load_controlnet,
    load_pipeline,
    seamless,
    set_loras,
    set_scheduler,
    step_callback,
)

log = logging.getLogger(__name__)

MODES = ("txt2img", "img2img", "inpaint")
MAX_GUIDANCE = 30.0
MAX_LORA_SCALE = 4.0
MAX_SEED = 2**64 - 1  # seeds are uint64 in the API and in torch.Generator
MAX_CONTROL_STRENGTH = 2.0
# A ControlNet runs about half a UNet a step (its encoder and middle block): the work of a job
# grows by this much per control.
CONTROL_WORK = 0.5
NO_PREVIEWS = "no preview: the server's safety check is on, and it checks only results"


@dataclass
class ControlInput:
    """A control as the API hands it over: its image decoded, everything else unchecked."""

    type: str = ""  # a control type (CONTROL_TYPES); with no model, picks a registered ControlNet of it
    model: str = ""
    image: np.ndarray | None = None
    strength: float = 1.0
    start: float = 0.0  # fractions of the steps it acts on
    end: float = 1.0
    preprocessor: str = ""  # made from `image` first (artforge.engines.control_images)


@dataclass(frozen=True)
class PreparedControl:
    model: str
    path: Path
    image: np.ndarray
    strength: float
    start: float
    end: float
    preprocessor: str
    depth_model: ModelSpec | None  # the depth preprocessor's model


@dataclass
class ImageRequest:
    """An image job as the API hands it over: images decoded, everything else unchecked."""

    prompt: str = ""
    negative_prompt: str = ""
    model: str = ""
    mode: str = "txt2img"
    width: int = 0
    height: int = 0
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    batch_size: int = 0
    scheduler: str = ""
    tile_x: bool = False
    tile_y: bool = False
    loras: list[tuple[str, float]] = field(default_factory=list)
    init_image: np.ndarray | None = None
    strength: float = 0.0
    mask: np.ndarray | None = None
    pbr_maps: bool = False
    preview_every: int = 0
    controls: list[ControlInput] = field(default_factory=list)


@dataclass(frozen=True)
class PreparedImage:
    request: ImageRequest
    model: str
    width: int
    height: int
    steps: int | None  # None: the model's default, known once it is loaded
    batch_size: int
    seed: int
    loras: list[tuple[str, Path, float]]
    controls: list[PreparedControl] = field(default_factory=list)


@dataclass
class ServedPipeline:
    """A pipeline on one device, and the backend it runs on (its networks, really) and why."""

    loaded: LoadedPipeline
    choice: BackendChoice


class ImageEngine:
    kind = "image"

    def __init__(
        self,
        registry: ModelRegistry,
        limits: Limits,
        max_loaded: int,
        max_loaded_loras: int = 4,
        safety: bool = False,
        control_images: ControlImages | None = None,
    ) -> None:
        """`max_loaded_loras`: LoRA adapters kept loaded per pipeline; `safety`: results pass the NSFW
        check, so no previews are sent; `control_images`: the preprocessors, shared with other engines."""
        self.registry = registry
        self.control_images = control_images or ControlImages(registry)
        self.limits = limits
        self.max_loaded_loras = max_loaded_loras
        self.safety = safety
        self.cache_dir = registry.models_dir / ".cache"
        self.exports = ExportCache(self.cache_dir)
        self._pipelines: LoadedModels[ServedPipeline] = LoadedModels(max_loaded)
        # PyTorch copies of ONNX-served models, for their jobs with LoRA adapters or controls: one per device.
        self._torch_copies: LoadedModels[LoadedPipeline] = LoadedModels(1)
        self._controlnets: LoadedModels[object] = LoadedModels(max(1, limits.max_controls_per_request))  # on PyTorch
        self._onnx_controlnets: LoadedModels[object] = LoadedModels(max(1, limits.max_controls_per_request))
        self._export_lock = threading.Lock()  # one export at a time: each holds a whole pipeline in memory

    def request_limits(self) -> dict[str, int]:
        return {"max_loras": self.limits.max_loras_per_request, "max_controls": self.limits.max_controls_per_request}

    def batches(self, request: PreparedImage, device: str) -> bool:
        return False  # a diffusion job has its device to itself

    def work(self, request: PreparedImage) -> Work:
        """Pixels times steps, in 512 x 512 steps: the UNet's time grows with both."""
        defaults = image_defaults(self.registry.get(request.model, "image"))
        width, height = request.width or defaults.native_size, request.height or defaults.native_size
        pixels = width * height * request.batch_size
        steps = (request.steps or defaults.steps) * (1 + CONTROL_WORK * len(request.controls))
        return Work(pixels * steps / 512**2, pixels)

    @property
    def schedulers(self) -> list[str]:
        """The names GenerateImageRequest.scheduler may take."""
        return list(SCHEDULERS)

    def preload(self, model: str, device: str) -> None:
        self._pipeline(self.registry.get(model, "image"), device)

    def loaded_models(self) -> set[str]:
        """The loaded pipelines, the LoRA adapters loaded on any of them, the ControlNets and the depth model."""
        pipelines = [served.loaded for served in self._pipelines.values()] + self._torch_copies.values()
        loaded = self._pipelines.loaded_names() | self._controlnets.loaded_names() | self._onnx_controlnets.loaded_names()
        loaded |= self.control_images.loaded_models()
        return loaded.union(*(pipeline.loras for pipeline in pipelines))

    def _pipeline(self, spec: ModelSpec, device: str, job: JobContext | None = None) -> ServedPipeline:
        return self._pipelines.get(device, spec.name, lambda: self._load(spec, device, job), _announce(spec, device, job))

    def _torch_pipeline(self, spec: ModelSpec, device: str) -> LoadedPipeline:
        return load_pipeline(spec.name, spec.path, spec.format == "single_file", spec.config, device)

    def _torch_copy(self, spec: ModelSpec, job: JobContext) -> LoadedPipeline:
        """The PyTorch copy of an ONNX-served model that its jobs with LoRA adapters or controls run on."""

        def load() -> LoadedPipeline:
            return self._torch_pipeline(spec, job.device)

        return self._torch_copies.get(job.device, spec.name, load, _announce(spec, job.device, job))

    def _load(self, spec: ModelSpec, device: str, job: JobContext | None) -> ServedPipeline:
        loaded = self._torch_pipeline(spec, device)

        def export() -> Path:
            key = self._export_key(spec, device)
            if job is not None and not self.exports.find(key):
                job.progress("exporting_model", message=f"exporting {spec.name} to ONNX once (minutes for a full-size model)")
            # A float32 pipeline on the CPU is what the export is made from: that is this one on a CPU.
            return self._export(spec, key, loaded if is_cpu(device) else None)

        choice = choose_backend(spec.backend, spec.name, _onnx_unavailable(device), export)
        if choice.export is not None:
            from artforge.runtimes.onnx_diffusion import use_onnx

            try:
                use_onnx(loaded.text2img, choice.export, device)
            except Exception as exc:  # a broken export must not take the model down with it
                choice = fallback(spec.backend, spec.name, exc)
        return ServedPipeline(loaded, choice)

    # -- ONNX exports ---------------------------------------------------------------------

    def _export_key(self, spec: ModelSpec, device: str) -> ExportKey:
        from artforge.runtimes.onnx_diffusion import export_variant, source_files

        sources = source_files(spec.path, spec.format == "single_file", spec.config)
        return ExportKey(spec.name, export_variant(device), weights_digest(sources, self.cache_dir))

    def _export(self, spec: ModelSpec, key: ExportKey, source: LoadedPipeline | None = None, force: bool = False) -> Path:
        from artforge.runtimes.onnx_diffusion import export_pipeline

        def make(folder: Path) -> None:
            pipeline = source or self._torch_pipeline(spec, "cpu")
            export_pipeline(pipeline.text2img, folder, cuda=key.variant.endswith("-cuda"))

        with self._export_lock:
            return self.exports.build(key, make, force)

    def export(self, name: str, device: str = "cpu", force: bool = False) -> Path:
        """The ONNX export of image model `name` for `device`, made now if missing; ArtForgeError if that fails."""
        spec = self.registry.get(name, "image")
        if missing := _onnx_unavailable(device):
            raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, f"cannot export {spec.name}: {missing}")
        return self._export(spec, self._export_key(spec, device), force=force)

    def backend_of(self, name: str) -> tuple[str, str]:
        """The backend serving model `name` ("torch", "onnx"; "" while not loaded) and why, or what will happen."""
        spec = self.registry.get(name, "image")
        served = self._pipelines.find(spec.name)
        if known := known_backend(spec.backend, served.choice if served else None, _onnx_unavailable("cpu")):
            return known
        from artforge.runtimes.onnx_diffusion import EXPORT_FORMAT

        # Without hashing the weights (seconds per gigabyte): what the cache holds for this model.
        found = sorted((self.exports.root / spec.name).glob(f"diffusion-{EXPORT_FORMAT}-*"))
        if any(path.is_dir() for path in found):
            return "", f"{spec.backend}: an ONNX export is cached (made again if the weights changed)"
        if failed := [path for path in found if path.suffix == ".failed"]:
            return "", f"{spec.backend}: {failed[0].read_text()}; `artforge onnx export --force {spec.name}` tries again"
        return "", f"{spec.backend}: ONNX export on first use"

    # -- requests -------------------------------------------------------------------------

    def prepare(self, request: ImageRequest) -> PreparedImage:
        """Check every field; INVALID_ARGUMENT or NOT_FOUND naming it."""
        limits = self.limits
        if request.mode not in MODES:
            raise invalid("mode", f"{request.mode!r} is not one of {', '.join(MODES)}")
        for name in ("prompt", "negative_prompt"):
            if len(getattr(request, name)) > limits.max_prompt_chars:
                raise invalid(name, f"is {len(getattr(request, name))} characters; the limit is {limits.max_prompt_chars}")
        needs_image = request.mode in ("img2img", "inpaint")
        if needs_image and request.init_image is None:
            raise invalid("init_image", f"is required for {request.mode}")
        if not needs_image and request.init_image is not None:
            raise invalid("init_image", "is set, but mode is txt2img; use IMAGE_MODE_IMG2IMG or IMAGE_MODE_INPAINT")
        if request.mode == "inpaint" and request.mask is None:
            raise invalid("mask", "is required for inpaint (white repaints, black keeps)")
        if request.mode != "inpaint" and request.mask is not None:
            raise invalid("mask", f"is only used by inpaint; mode is {request.mode}")
        if request.mask is not None and request.mask.shape[:2] != request.init_image.shape[:2]:
            mh, mw = request.mask.shape[:2]
            ih, iw = request.init_image.shape[:2]
            raise invalid("mask", f"is {mw}x{mh}; it must be the size of init_image, {iw}x{ih}")
        if not 0.0 <= request.strength <= 1.0:
            raise invalid("strength", f"{request.strength:g} is outside 0..1")
        for name, value in (("width", request.width), ("height", request.height)):
            if value % 8:
                raise invalid(name, f"{value} is not a multiple of 8")
        if request.steps is not None and not 1 <= request.steps <= limits.max_steps:
            raise invalid("steps", f"{request.steps} is outside 1..{limits.max_steps}")
        if request.guidance_scale is not None and not 0 <= request.guidance_scale <= MAX_GUIDANCE:
            raise invalid("guidance_scale", f"{request.guidance_scale:g} is outside 0..{MAX_GUIDANCE:g} (0 turns it off)")
        batch = request.batch_size or 1
        if not 1 <= batch <= limits.max_batch:
            raise invalid("batch_size", f"{batch} is outside 1..{limits.max_batch}")
        if request.scheduler and request.scheduler not in SCHEDULERS:
            raise invalid("scheduler", f"{shown(request.scheduler)} is not known; known: {', '.join(SCHEDULERS)}")
        if request.preview_every < 0:
            raise invalid("preview_every", "must be 0 (no previews) or more")

        spec = self.registry.get(request.model, "image")
        loras = []
        for i, (name, scale) in enumerate(request.loras):
            if not -MAX_LORA_SCALE <= scale <= MAX_LORA_SCALE:
                raise invalid(f"loras[{i}].scale", f"{scale:g} is outside -{MAX_LORA_SCALE:g}..{MAX_LORA_SCALE:g}")
            loras.append((name, self.registry.get(name, "lora", f"loras[{i}].name").path, scale))

        defaults = image_defaults(spec)
        if request.init_image is not None:
            height, width = request.init_image.shape[:2]
            width, height = request.width or width, request.height or height
            if width % 8 or height % 8:
                raise invalid("init_image", f"is {width}x{height}; sides must be multiples of 8 (or set width and height to resize it)")
        else:
            # 0 is the model's native size: `run` takes it from the loaded pipeline, the limit from its files.
            width, height = request.width, request.height
        check_pixels(width, height, batch, defaults.native_size, limits.max_image_pixels)
        if needs_image and not (request.mode == "img2img" and request.strength == 0.0):
            # diffusers runs int(steps x strength) of the steps; none at all is an error deep in the pipeline.
            steps = request.steps or defaults.steps
            if int(steps * request.strength) < 1:
                raise invalid("strength", f"{request.strength:g} of {steps} steps leaves no step to run; raise strength or steps")
        if request.seed is not None and request.seed + batch - 1 > MAX_SEED:
            most = MAX_SEED - batch + 1
            raise invalid("seed", f"{request.seed} with batch_size {batch} runs past 2^64-1 (image i uses seed + i); the most is {most}")
        seed = secrets.randbits(63) if request.seed is None else request.seed
        controls = self._prepare_controls(request.controls, spec)
        return PreparedImage(request, spec.name, width, height, request.steps, batch, seed, loras, controls)

    def _prepare_controls(self, controls: list[ControlInput], spec: ModelSpec) -> list[PreparedControl]:
        if len(controls) > self.limits.max_controls_per_request:
            raise invalid("controls", f"has {len(controls)}; the limit is {self.limits.max_controls_per_request}")
        shape = unet_shape(spec)
        prepared = []
        for i, control in enumerate(controls):
            field_ = f"controls[{i}]"
            if control.image is None:
                raise invalid(f"{field_}.image", "is required: the picture the ControlNet follows")
            if not 0.0 <= control.strength <= MAX_CONTROL_STRENGTH:
                raise invalid(f"{field_}.strength", f"{control.strength:g} is outside 0..{MAX_CONTROL_STRENGTH:g}")
            if not 0.0 <= control.start < control.end <= 1.0:
                raise invalid(f"{field_}.start", f"start {control.start:g} and end {control.end:g} must satisfy 0 <= start < end <= 1")
            if control.type and control.type not in CONTROL_TYPES:
                raise invalid(f"{field_}.type", f"{shown(control.type)} is not one of {', '.join(CONTROL_TYPES)}")
            if control.preprocessor and control.preprocessor not in PREPROCESSORS:
                raise invalid(f"{field_}.preprocessor", f"{shown(control.preprocessor)} is not one of {', '.join(PREPROCESSORS)}")
            depth_model = self.control_images.depth_model(f"{field_}.preprocessor") if control.preprocessor == "depth" else None
            net = self._controlnet_for(control, spec, shape, field_)
            prepared.append(
                PreparedControl(
                    net.name, net.path, control.image, control.strength, control.start, control.end, control.preprocessor, depth_model
                )
            )
        return prepared

    def _controlnet_for(self, control: ControlInput, spec: ModelSpec, shape: UnetShape | None, field_: str) -> ModelSpec:
        """The ControlNet a control names, or the first registered one of its type made for `spec`'s UNet."""
        if control.model:
            net = self.registry.get(control.model, "controlnet", f"{field_}.model")
            if control.type and net.control_type and control.type != net.control_type:
                raise invalid(f"{field_}.type", f"is {control.type}, but ControlNet {net.name} is a {net.control_type} ControlNet")
            made_for = unet_shape(net)
            if shape is not None and made_for is not None and made_for != shape:
                raise invalid(f"{field_}.model", f"{net.name} is a ControlNet for {made_for}; model {spec.name} is {shape}")
            return net
        if not control.type:
            raise invalid(f"{field_}.type", f"give a type ({', '.join(CONTROL_TYPES)}) or a model")
        fitting = [net for net in self.registry.list("controlnet") if net.control_type == control.type and unet_shape(net) == shape]
        if not fitting:
            raise ArtForgeError(
                ErrorCode.NOT_FOUND,
                f"{field_}.type: no {control.type} ControlNet for {shape or spec.name} is registered; "
                "put one in the models folder's controlnets/ sub-folder (see ListModels)",
            )
        return fitting[0]

    # -- generation -----------------------------------------------------------------------

    def run(self, prepared: PreparedImage, job: JobContext) -> JobResult:
        request = prepared.request
        spec = self.registry.get(prepared.model, "image")
        served = self._pipeline(spec, job.device, job)
        loaded, backend, reason = served.loaded, served.choice.backend, ""
        if backend == "onnx" and prepared.loras:
            reason = "LoRA adapters change the UNet's weights per job; the ONNX graph's are fixed"
        elif backend == "onnx" and prepared.controls:
            reason = self._onnx_controls_unavailable(prepared.controls, job)
        if reason:
            loaded, backend = self._torch_copy(spec, job), "torch"
        job.started(prepared.model, backend, prepared.seed, reason)
        width = prepared.width or loaded.native_size
        height = prepared.height or loaded.native_size
        scheduler = request.scheduler or loaded.default_scheduler
        guidance = loaded.default_guidance if request.guidance_scale is None else request.guidance_scale
        steps = prepared.steps or loaded.default_steps
        provenance = Provenance(
            model=prepared.model,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            steps=steps,
            scheduler=scheduler,
            width=width,
            height=height,
            guidance_scale=guidance,
            strength=request.strength if request.mode != "txt2img" else 0.0,
            tiling_x=request.tile_x,
            tiling_y=request.tile_y,
            loras=[(name, scale) for name, _, scale in prepared.loras],
            controls=[(c.model, c.strength, c.start, c.end, c.preprocessor) for c in prepared.controls],
        )
        if request.mode == "img2img" and request.strength == 0.0:
            # Nothing to change: the input itself, not a lossy trip through the VAE.
            colors = [resize(request.init_image, width, height)] * prepared.batch_size
        else:
            colors = self._generate(loaded, backend, prepared, width, height, steps, scheduler, guidance, job)
            if colors is None:
                return JobResult()
        images = []
        for index, color in enumerate(colors):
            item = replace(provenance, seed=prepared.seed + index)
            images.append(ImageOutput(color, item, "color", index))
            if request.pbr_maps:
                from artforge.engines.pbr import derive_pbr, to_image_outputs

                job.progress("postprocessing", message="deriving PBR maps")
                images += to_image_outputs(derive_pbr(color, request.tile_x, request.tile_y), item, batch_index=index)
        return JobResult(images=images)

    def _generate(
        self,
        loaded: LoadedPipeline,
        backend: str,
        prepared: PreparedImage,
        width: int,
        height: int,
        steps: int,
        scheduler: str,
        guidance: float,
        job: JobContext,
    ) -> list[np.ndarray] | None:
        import torch

        request = prepared.request
        if prepared.controls:
            nets = [self._controlnet(control, backend, job) for control in prepared.controls]
            for i, net in enumerate(nets):  # checked before the job queued, unless the model's files did not say
                if net.config.cross_attention_dim != loaded.text2img.unet.config.cross_attention_dim:
                    raise invalid(f"controls[{i}].model", f"{prepared.controls[i].model} is not made for {prepared.model}'s UNet")
            pipeline = control_pipeline(loaded, request.mode, nets)
        else:
            pipeline = loaded.variant(request.mode)
        set_scheduler(loaded, pipeline, scheduler)
        set_loras(loaded, prepared.loras, self.max_loaded_loras)

        def on_step(step: int, total: int, latents: object) -> bool:
            every = request.preview_every
            preview, message = None, ""
            if every and (step % every == 0 or step == total):
                # With the safety check on, previews are withheld rather than checked: at the
                # 64x64 of a 512x512 job's preview the detector misses what it finds at full size.
                if self.safety:
                    message = NO_PREVIEWS
                else:
                    preview = latent_preview(latents, loaded.family)
            job.progress("generating", step, total, message=message, preview=preview)
            return not job.is_cancelled()

        generators = [torch.Generator(device="cpu").manual_seed(prepared.seed + i) for i in range(prepared.batch_size)]
        kwargs = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "num_images_per_prompt": prepared.batch_size,
            "generator": generators,
            "output_type": "np",
            "callback_on_step_end": step_callback(on_step),
        }
        alpha = None
        if request.mode == "txt2img":
            kwargs.update(width=width, height=height)
        else:
            init, alpha = to_rgb(resize(request.init_image, width, height))
            kwargs.update(image=torch.from_numpy(init).permute(2, 0, 1)[None], strength=request.strength)
            if request.mode == "inpaint":
                mask = self._mask(request.mask, width, height)
                kwargs.update(mask_image=torch.from_numpy(mask).permute(2, 0, 1)[None], width=width, height=height)
        if prepared.controls:
            images = [self._control_image(control, width, height, job) for control in prepared.controls]
            kwargs.update(_control_arguments(prepared.controls, images, request.mode))
        if backend == "onnx":
            from artforge.runtimes.onnx_diffusion import seamless as tiling
        else:
            tiling = seamless
        with tiling(pipeline, request.tile_x, request.tile_y):
            images = pipeline(**kwargs).images
        if job.is_cancelled():
            return None
        results = [np.asarray(image, dtype=np.float32) for image in images]
        if request.mode == "inpaint":
            # Outside the mask the input stays exactly as it was: composite instead of trusting
            # the VAE round trip, which shifts every pixel a little.
            keep = 1.0 - mask
            results = [init * keep + result * mask for result in results]
        if alpha is not None:
            results = [np.concatenate([result, alpha], axis=-1) for result in results]
        return results

    def _control_image(self, control: PreparedControl, width: int, height: int, job: JobContext) -> np.ndarray:
        """What the ControlNet reads, at the job's size: the image, or what its preprocessor makes of it."""
        if not control.preprocessor:
            return resize(control.image, width, height)
        job.progress("preprocessing", message=f"{control.preprocessor} for {control.model}")
        return self.control_images.make(control.preprocessor, control.image, width, height, job.device, control.depth_model)

    def _controlnet(self, control: PreparedControl, backend: str, job: JobContext) -> object:
        """The ControlNet of `control` on `backend` ("onnx": exported on its first use; ArtForgeError when it cannot be)."""
        if backend == "torch":
            return self._controlnets.get(job.device, control.model, lambda: load_controlnet(control.path, job.device))

        def load() -> object:
            from artforge.runtimes.onnx_diffusion import OnnxControlNet, controlnet_files, export_controlnet, export_variant

            key = ExportKey(control.model, export_variant(job.device), weights_digest(controlnet_files(control.path), self.cache_dir))
            if not self.exports.find(key):
                job.progress("exporting_model", message=f"exporting ControlNet {control.model} to ONNX once")

            def make(folder: Path) -> None:
                export_controlnet(load_controlnet(control.path, "cpu"), folder, cuda=key.variant.endswith("-cuda"))

            with self._export_lock:
                folder = self.exports.build(key, make)
            return OnnxControlNet(folder, job.device)

        return self._onnx_controlnets.get(job.device, control.model, load)

    def _onnx_controls_unavailable(self, controls: list[PreparedControl], job: JobContext) -> str:
        """Why the controls cannot run on ONNX Runtime ("" when they can): their ControlNets are exported and loaded here."""
        for control in controls:
            try:
                self._controlnet(control, "onnx", job)
            except Exception as exc:  # a ControlNet the export does not cover: the job runs on PyTorch instead
                message = exc.message if isinstance(exc, ArtForgeError) else f"{type(exc).__name__}: {exc}"
                return f"ControlNet {control.model} does not run on ONNX Runtime ({message})"
        return ""

    def _mask(self, mask: np.ndarray, width: int, height: int) -> np.ndarray:
        """One channel, 0 keeps and 1 repaints; an alpha channel, if any, is ignored."""
        gray = mask[..., :1] if mask.shape[-1] in (1, 2) else mask[..., :3].mean(axis=-1, keepdims=True)
        return resize(gray, width, height)


def _control_arguments(controls: list[PreparedControl], images: list[np.ndarray], mode: str) -> dict:
    """The ControlNet pipelines' arguments: each control's image (at the job's size) as RGB in
    0..1, its strength and its range of the steps (one value each for one ControlNet, lists for several)."""
    import torch

    tensors = [torch.from_numpy(to_rgb(image)[0]).permute(2, 0, 1)[None] for image in images]
    values = {
        # txt2img pipelines take the control image as `image`; img2img and inpaint as `control_image`.
        "image" if mode == "txt2img" else "control_image": tensors,
        "controlnet_conditioning_scale": [control.strength for control in controls],
        "control_guidance_start": [control.start for control in controls],
        "control_guidance_end": [control.end for control in controls],
    }
    if len(controls) == 1:
        values = {key: value[0] for key, value in values.items()}
    return values


def _announce(spec: ModelSpec, device: str, job: JobContext | None) -> Callable[[], None]:
    def announce() -> None:
        log.info("loading %s on %s", spec.name, device)
        if job is not None:
            job.progress("loading_model", message=f"loading {spec.name} on {device}")

    return announce


def _onnx_unavailable(device: str) -> str | None:
    """Why ONNX Runtime cannot serve image models on `device` in this environment, or None."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install 'artforge[cpu]', or 'artforge[gpu]' for CUDA)"
    if device.startswith("cuda"):
        import onnxruntime as ort

        if CUDA not in ort.get_available_providers():
            return f"onnxruntime {ort.__version__} has no CUDA execution provider (install the gpu extra: onnxruntime-gpu)"
    return None
