"""`artforge bench image`: per-UNet-step and end-to-end latency of Stable Diffusion pipelines.

Weights do not change what a step costs, so `--arch sd15|sd21|sdxl` builds the full-size
architecture with random weights: anyone can measure their hardware without downloading a
checkpoint. `--model PATH` measures a real diffusers folder instead. Prompt embeddings are
made by running the text encoder on fixed token ids (no tokenizer download either).

Reported, each the median of --repeats runs after a warm-up:
- unet_step_seconds: one denoising step with classifier-free guidance (the UNet on a batch
  of 2: conditional and unconditional), which is what a generation step costs;
- unet_forward_batch1_seconds: the UNet on one latent (for comparison with single-pass
  numbers quoted elsewhere);
- text_encoder_seconds, vae_decode_seconds;
- end_to_end_seconds: a whole pipeline call of --steps steps, text encoding included.
"""

from __future__ import annotations

import argparse
import statistics
import time

from artforge.bench import report

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


def _median(times: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(times), 4), "min": round(min(times), 4), "max": round(max(times), 4)}


def _timed(fn, repeats: int) -> dict[str, float]:  # noqa: ANN001
    fn()  # warm-up: allocator, kernels, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return _median(times)


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
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    if arch == "sdxl":
        pipeline = StableDiffusionXLPipeline(vae, encoders[0], encoders[1], None, None, unet, scheduler)
    else:
        pipeline = StableDiffusionPipeline(vae, encoders[0], None, unet, scheduler, None, None, requires_safety_checker=False)
    return pipeline.to(device=device, dtype=dtype)


def _embeddings(pipeline: object, arch: str) -> dict:
    """Prompt embeddings from the real text encoder(s) on fixed token ids."""
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


def bench_image(args: argparse.Namespace) -> dict:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if args.fp16 else torch.float32
    if args.model:
        from diffusers import AutoPipelineForText2Image

        pipeline = AutoPipelineForText2Image.from_pretrained(args.model, dtype=dtype).to(device)
        arch = "sdxl" if "XL" in type(pipeline).__name__ else "sd"
        source = f"model {args.model}"
    else:
        arch = args.arch
        build_start = time.perf_counter()
        pipeline = _random_pipeline(arch, dtype, device)
        source = f"full-size {arch} architecture, random weights (built in {time.perf_counter() - build_start:.1f} s)"
    pipeline.set_progress_bar_config(disable=True)
    unet, vae = pipeline.unet, pipeline.vae
    latent = args.size // pipeline.vae_scale_factor

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    embeddings = _embeddings(pipeline, arch if arch == "sdxl" else "sd")
    context = embeddings["prompt_embeds"]
    added = {}
    if arch == "sdxl":
        time_ids = torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]], dtype=dtype, device=device)
        added = {"text_embeds": embeddings["pooled_prompt_embeds"], "time_ids": time_ids}

    def unet_call(batch: int) -> None:
        sample = torch.randn(batch, 4, latent, latent, dtype=dtype, device=device)
        extra = {k: v.repeat(batch, 1) for k, v in added.items()}
        with torch.inference_mode():
            unet(sample, 500, encoder_hidden_states=context.repeat(batch, 1, 1), added_cond_kwargs=extra or None)
        sync()

    def text_encoder() -> None:
        _embeddings(pipeline, arch if arch == "sdxl" else "sd")
        sync()

    def vae_decode() -> None:
        with torch.inference_mode():
            vae.decode(torch.randn(1, 4, latent, latent, dtype=dtype, device=device) / vae.config.scaling_factor)
        sync()

    def end_to_end() -> None:
        # Text encoding is part of a generation; the embeddings here come from the same encoder.
        text_encoder()
        pipeline(**embeddings, height=args.size, width=args.size, num_inference_steps=args.steps, guidance_scale=7.0, output_type="np")
        sync()

    figures = {
        "unet_step_seconds": _timed(lambda: unet_call(2), args.repeats),
        "unet_forward_batch1_seconds": _timed(lambda: unet_call(1), args.repeats),
        "text_encoder_seconds": _timed(text_encoder, args.repeats),
        "vae_decode_seconds": _timed(vae_decode, args.repeats),
        "end_to_end_seconds": _timed(end_to_end, max(1, args.repeats // 2)),
    }
    return {
        **report("image", torch=torch.__version__, threads=torch.get_num_threads()),
        "source": source,
        "backend": "torch eager",
        "device": device,
        "dtype": "float16" if args.fp16 else "float32",
        "size": args.size,
        "steps": args.steps,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "repeats": args.repeats,
        "figures": figures,
    }
