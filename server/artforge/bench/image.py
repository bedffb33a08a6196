"""`artforge bench image`: per-UNet-step and end-to-end latency, PyTorch eager next to ONNX Runtime.

Weights do not change what a step costs, so `--arch sd15|sd21|sdxl` builds the full-size
architecture with random weights (seed 0): anyone can measure their hardware without
downloading a checkpoint. `--model PATH` measures a real diffusers folder instead. Prompt
embeddings are made by running the text encoder on fixed token ids (no tokenizer download).

Both backends run in one process on the same machine: PyTorch eager, and a copy of the same
pipeline with its networks swapped for their ONNX export (artforge.runtimes.onnx_diffusion),
as the server runs them. They take turns on every measurement, so a machine whose speed drifts
(other work, a noisy virtual machine) skews both alike. The export is cached in the models
folder (--models-dir, or the config's), keyed by the architecture and the library versions,
since those decide the seeded random weights: later runs skip the minutes an export takes.

Reported per backend: the median, min and max of --repeats runs after a warm-up (end to end:
half as many, at least 2, without one: the networks are warm by then):
- unet_step_batch1_seconds: the UNet on one latent (an unguided step: Turbo, LCM);
- unet_step_batch2_seconds: a step with classifier-free guidance, the UNet on the conditional
  and the unconditional latent in one batch of 2: what a usual generation step costs;
- text_encoder_seconds, vae_decode_seconds;
- end_to_end_seconds: a whole pipeline call of --steps guided steps, text encoding included;
- with --control, controlled_step_batch2_seconds: a guided step steered by one ControlNet (the
  architecture's, made from its UNet as ControlNets are: the ControlNet, then the UNet taking
  its residuals). Next to unet_step_batch2_seconds, it is what a control adds to each step.
`onnx_vs_torch` gives the speedups (PyTorch time / ONNX time).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from artforge.bench import report
from artforge.bench.chart import Panel

BACKENDS = ("torch", "onnx")

_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
}
_SD_UNET = {
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "layers_per_block": 2,
}
# The published architectures (diffusers configs of the SD 1.5, SD 2.1 and SDXL base repos).
ARCHITECTURES = {
    "sd15": {
        "unet": {**_SD_UNET, "cross_attention_dim": 768, "attention_head_dim": 8},
        "text": [{"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}],
        "scaling_factor": 0.18215,
    },
    "sd21": {
        "unet": {**_SD_UNET, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True},
        "text": [
            {"hidden_size": 1024, "num_hidden_layers": 23, "num_attention_heads": 16, "intermediate_size": 4096, "hidden_act": "gelu"}
        ],
        "scaling_factor": 0.18215,
    },
    "sdxl": {
        "unet": {
            "block_out_channels": [320, 640, 1280],
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "layers_per_block": 2,
            "transformer_layers_per_block": [1, 2, 10],
            "attention_head_dim": [5, 10, 20],
            "cross_attention_dim": 2048,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
        "text": [
            {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
            {
                "hidden_size": 1280,
                "num_hidden_layers": 32,
                "num_attention_heads": 20,
                "intermediate_size": 5120,
                "hidden_act": "gelu",
                "projection_dim": 1280,
            },
        ],
        "scaling_factor": 0.13025,
    },
}


def _stats(times: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(times), 4), "min": round(min(times), 4), "max": round(max(times), 4)}


def _in_turns(calls: dict[str, Callable[[], None]], repeats: int, warm_up: bool = True) -> dict[str, dict[str, float]]:
    """Time each backend's call `repeats` times, the backends taking turns: a machine whose speed
    drifts (other work, a noisy virtual machine) then skews all of them alike."""
    if warm_up:  # allocator, kernels, caches
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {backend: [] for backend in calls}
    for _ in range(repeats):
        for backend, call in calls.items():
            time.sleep(0.5)  # the other runtime's idle threads stop spinning for work first
            start = time.perf_counter()
            call()
            times[backend].append(time.perf_counter() - start)
    return {backend: _stats(backend_times) for backend, backend_times in times.items()}


def _resident_gib() -> float | None:
    """This process' resident memory (Linux), in GiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def _random_pipeline(arch: str, dtype: object, device: str) -> object:
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = ARCHITECTURES[arch]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**spec["unet"])
    vae = AutoencoderKL(**_VAE, scaling_factor=spec["scaling_factor"])
    encoders = [
        (CLIPTextModelWithProjection if i else CLIPTextModel)(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **text))
        for i, text in enumerate(spec["text"])
    ]
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    if arch == "sdxl":
        pipeline = StableDiffusionXLPipeline(vae, encoders[0], encoders[1], None, None, unet, scheduler)
    else:
        pipeline = StableDiffusionPipeline(vae, encoders[0], None, unet, scheduler, None, None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device=device, dtype=dtype)


def _embeddings(pipeline: object, arch: str) -> dict:
    """Prompt embeddings from the text encoder(s) on fixed token ids."""
    import torch

    device = pipeline.unet.device
    encoders = [e for e in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None)) if e is not None]
    vocabulary = min(e.config.vocab_size for e in encoders)  # a real model's, or a small test model's
    ids = torch.randint(0, vocabulary, (1, 77), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        if arch != "sdxl":
            embeds = pipeline.text_encoder(ids)[0]
            return {"prompt_embeds": embeds, "negative_prompt_embeds": torch.zeros_like(embeds)}
        first = pipeline.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        second = pipeline.text_encoder_2(ids, output_hidden_states=True)
        embeds = torch.cat([first, second.hidden_states[-2]], dim=-1)
        pooled = second.text_embeds
    return {
        "prompt_embeds": embeds,
        "negative_prompt_embeds": torch.zeros_like(embeds),
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": torch.zeros_like(pooled),
    }


def _calls(
    pipeline: object, controlnet: object | None, arch: str, args: argparse.Namespace, device: str, dtype: object
) -> dict[str, Callable[[], None]]:
    """The measured calls, on whatever networks `pipeline` (and `controlnet`) hold."""
    import torch

    latent = args.size // pipeline.vae_scale_factor
    family = "sdxl" if arch == "sdxl" else "sd"

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    embeddings = _embeddings(pipeline, family)
    context = embeddings["prompt_embeds"]
    added = {}
    if family == "sdxl":
        time_ids = torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]], dtype=dtype, device=device)
        added = {"text_embeds": embeddings["pooled_prompt_embeds"], "time_ids": time_ids}

    def unet_step(batch: int) -> None:
        sample = torch.randn(batch, 4, latent, latent, dtype=dtype, device=device)
        extra = {k: v.repeat(batch, 1) for k, v in added.items()}
        with torch.inference_mode():
            pipeline.unet(sample, 500, encoder_hidden_states=context.repeat(batch, 1, 1), added_cond_kwargs=extra or None)
        sync()

    def controlled_step() -> None:
        sample = torch.randn(2, 4, latent, latent, dtype=dtype, device=device)
        image = torch.rand(2, 3, args.size, args.size, dtype=dtype, device=device)
        extra = {k: v.repeat(2, 1) for k, v in added.items()} or None
        with torch.inference_mode():
            down, mid = controlnet(sample, 500, context.repeat(2, 1, 1), image, 1.0, added_cond_kwargs=extra, return_dict=False)
            pipeline.unet(
                sample,
                500,
                encoder_hidden_states=context.repeat(2, 1, 1),
                added_cond_kwargs=extra,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            )
        sync()

    def text_encoder() -> None:
        _embeddings(pipeline, family)
        sync()

    def vae_decode() -> None:
        with torch.inference_mode():
            pipeline.vae.decode(torch.randn(1, 4, latent, latent, dtype=dtype, device=device) / pipeline.vae.config.scaling_factor)
        sync()

    def end_to_end() -> None:
        # Text encoding is part of a generation; the embeddings here come from the same encoder.
        text_encoder()
        pipeline(**embeddings, height=args.size, width=args.size, num_inference_steps=args.steps, guidance_scale=7.0, output_type="np")
        sync()

    controlled = {"controlled_step_batch2_seconds": controlled_step} if controlnet is not None else {}
    return {
        "unet_step_batch1_seconds": lambda: unet_step(1),
        "unet_step_batch2_seconds": lambda: unet_step(2),
        **controlled,
        "text_encoder_seconds": text_encoder,
        "vae_decode_seconds": vae_decode,
        "end_to_end_seconds": end_to_end,
    }


def _measure(
    pipelines: dict[str, object], controlnets: dict[str, object], arch: str, args: argparse.Namespace, device: str, dtype: object
) -> dict[str, dict]:
    """Every figure of every backend (backend -> figure -> seconds)."""
    calls = {backend: _calls(pipeline, controlnets.get(backend), arch, args, device, dtype) for backend, pipeline in pipelines.items()}
    figures: dict[str, dict] = {backend: {} for backend in pipelines}
    for figure in next(iter(calls.values())):
        # A whole generation is long, and its networks are warm from the figures before it.
        end_to_end = figure == "end_to_end_seconds"
        repeats = max(2, args.repeats // 2) if end_to_end else args.repeats
        timed = _in_turns({backend: backend_calls[figure] for backend, backend_calls in calls.items()}, repeats, warm_up=not end_to_end)
        for backend, stats in timed.items():
            figures[backend][figure] = stats
    return figures


def _random_controlnet(unet: object, dtype: object, device: str) -> object:
    """A ControlNet made from `unet` (its encoder and middle block copied, as training starts from)."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    source = unet if device == "cpu" and dtype == torch.float32 else copy.deepcopy(unet).to(device="cpu", dtype=torch.float32)
    return ControlNetModel.from_unet(source).to(device=device, dtype=dtype).eval()


def _export_controlnet(args: argparse.Namespace, arch: str, controlnet: object, device: str) -> Path:
    """The ControlNet's ONNX export for `device`, from the cache or made now (from float32 on the CPU)."""
    import torch

    from artforge.runtimes.export_cache import ExportCache, ExportKey
    from artforge.runtimes.onnx_diffusion import export_controlnet, export_variant

    cache_dir, _, digest = _export_identity(args, arch)
    key = ExportKey(f"bench-random-{arch}-controlnet", export_variant(device), digest)

    def make(folder: Path) -> None:
        # Made from float32 on the CPU: a copy, unless that is what is measured.
        source = controlnet if controlnet.device.type == "cpu" and controlnet.dtype == torch.float32 else copy.deepcopy(controlnet)
        export_controlnet(source.to(device="cpu", dtype=torch.float32), folder, cuda=device.startswith("cuda"))

    return ExportCache(cache_dir).build(key, make)


def _export_identity(args: argparse.Namespace, arch: str) -> tuple[Path, str, str]:
    """Where the bench's exports are cached, and the name and weights digest they are keyed by."""
    import diffusers
    import torch
    import transformers

    from artforge.config import load_config
    from artforge.runtimes.export_cache import weights_digest
    from artforge.runtimes.onnx_diffusion import source_files

    if args.model:  # next to the model, where a server with it in its models folder finds it too
        model = Path(args.model).resolve()
        cache_dir = model.parent / ".cache"
        return cache_dir, model.name, weights_digest(source_files(model, False, None), cache_dir)
    cache_dir = load_config(overrides={"models_dir": args.models_dir}).models_dir / ".cache"
    # Seeded random weights: the architecture and the libraries that initialize them decide them.
    versions = [torch.__version__, diffusers.__version__, transformers.__version__]
    identity = json.dumps([ARCHITECTURES[arch], _VAE, versions], sort_keys=True)
    return cache_dir, f"bench-random-{arch}", hashlib.sha256(identity.encode()).hexdigest()[:24]


def _export(args: argparse.Namespace, arch: str, pipeline: object, device: str, dtype: object) -> tuple[Path, float | None]:
    """The pipeline's ONNX export for `device`, from the cache or made now; and the seconds that took."""
    import torch

    from artforge.runtimes.export_cache import ExportCache, ExportKey
    from artforge.runtimes.onnx_diffusion import export_pipeline, export_variant

    cache_dir, name, digest = _export_identity(args, arch)
    cache = ExportCache(cache_dir)
    key = ExportKey(name, export_variant(device), digest)
    if found := cache.find(key):
        return found, None

    def make(folder: Path) -> None:
        # The export is made from float32 on the CPU; that is the measured pipeline on a CPU.
        source = pipeline if device == "cpu" and dtype == torch.float32 else _load(args, arch, torch.float32, "cpu")[0]
        export_pipeline(source, folder, cuda=device.startswith("cuda"))

    start = time.perf_counter()
    folder = cache.build(key, make)
    return folder, round(time.perf_counter() - start, 1)


def _load(args: argparse.Namespace, arch: str, dtype: object, device: str) -> tuple[object, str]:
    if args.model:
        from diffusers import AutoPipelineForText2Image

        pipeline = AutoPipelineForText2Image.from_pretrained(args.model, dtype=dtype).to(device)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline, f"model {args.model}"
    start = time.perf_counter()
    pipeline = _random_pipeline(arch, dtype, device)
    return pipeline, f"full-size {arch} architecture, random weights (built in {time.perf_counter() - start:.1f} s)"


def bench_image(args: argparse.Namespace) -> dict:
    import torch

    backends = [b for b in BACKENDS if b in args.backends.split(",")]
    if not backends:
        raise ValueError(f"--backends {args.backends!r}: choose from {', '.join(BACKENDS)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if args.fp16 else torch.float32
    arch = args.arch
    pipeline, source = _load(args, arch, dtype, device)
    if args.model:
        arch = "sdxl" if "XL" in type(pipeline).__name__ else "sd"
    unet_parameters = sum(p.numel() for p in pipeline.unet.parameters())
    controlnet = _random_controlnet(pipeline.unet, dtype, device) if args.control else None
    controlnets: dict[str, object] = {}

    pipelines: dict[str, object] = {}
    details: dict[str, dict] = {"torch": {"runtime": f"torch {torch.__version__} eager"}}
    if "torch" in backends:
        pipelines["torch"] = pipeline
        if controlnet is not None:
            controlnets["torch"] = controlnet
    if "onnx" in backends:
        import onnxruntime

        from artforge.runtimes.onnx_diffusion import use_onnx

        folder, export_seconds = _export(args, arch, pipeline, device, dtype)
        # The same pipeline (scheduler, configs) with its networks on ONNX Runtime, as the server runs it.
        pipelines["onnx"] = on_onnx = type(pipeline).from_pipe(pipeline)
        on_onnx.set_progress_bar_config(disable=True)
        start, resident = time.perf_counter(), _resident_gib()
        use_onnx(on_onnx, folder, device)
        details["onnx"] = {
            "runtime": f"onnxruntime {onnxruntime.__version__} ({on_onnx.unet.session.provider})",
            "export": str(folder),
            "export_seconds": export_seconds,  # null: found in the cache
            "session_load_seconds": round(time.perf_counter() - start, 1),
            # Host memory the sessions hold (their weights as ONNX Runtime keeps them); null off Linux.
            "session_memory_gib": None if resident is None else round(_resident_gib() - resident, 3),
        }
        if controlnet is not None:
            from artforge.runtimes.onnx_diffusion import OnnxControlNet

            controlnets["onnx"] = OnnxControlNet(_export_controlnet(args, arch, controlnet, device), device)
    del pipeline, controlnet  # only their ONNX copies, when PyTorch is not measured

    load_average = [round(os.getloadavg()[0], 2)]
    figures = _measure(pipelines, controlnets, arch, args, device, dtype)
    load_average.append(round(os.getloadavg()[0], 2))
    result = {
        **report("image", torch=torch.__version__, threads=torch.get_num_threads()),
        "source": source,
        "arch": arch,
        "device": device,
        "dtype": "float16" if args.fp16 else "float32",
        "size": args.size,
        "steps": args.steps,
        "unet_parameters": unet_parameters,
        "controlnet": "full-size, made from the UNet, random weights" if args.control else None,
        "repeats": args.repeats,
        "timing": "backends in turns on each figure, after a warm-up each; median, min and max in seconds",
        "load_average": load_average,  # 1-minute, at the start and the end: other work skews the figures
        "backends": {backend: {**details[backend], "figures": figures[backend]} for backend in pipelines},
    }
    if len(pipelines) == 2:
        eager, onnx = figures["torch"], figures["onnx"]
        result["onnx_vs_torch"] = {name: round(eager[name]["median"] / onnx[name]["median"], 2) for name in eager}
    return result


def chart(result: dict) -> tuple[str, list[Panel]]:
    """The chart of an image bench report: UNet steps and a whole generation, per backend."""
    backends = result["backends"]

    def panel(title: str, figure: str) -> Panel:
        return Panel(title, "seconds", {b: r["figures"][figure]["median"] for b, r in backends.items()}, False)

    size = result["size"]
    title = f"{result['arch']} {size}x{size} {result['dtype']} on {result['device']} ({result['machine']['cpus']} CPUs)"
    controlled = [panel("guided step with a ControlNet", "controlled_step_batch2_seconds")] if result.get("controlnet") else []
    return title, [
        panel("UNet step, batch 1", "unet_step_batch1_seconds"),
        panel("UNet step, guided (batch 2)", "unet_step_batch2_seconds"),
        *controlled,
        panel(f"end to end, {result['steps']} guided steps", "end_to_end_seconds"),
    ]
