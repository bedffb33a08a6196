"""Image jobs through a real server, on architecture-true tiny pipelines (random weights).

The pixels these pipelines make are noise-like: the tests check the machinery (determinism,
seams, masks, chunking, validation), never that a picture looks like its prompt.

Every test runs twice: on a server whose models run on PyTorch, and on one whose models run on
their ONNX exports (made on first use, cached in the models folder, where
tests/test_onnx_diffusion.py's exports of the same models are found too). The PyTorch server
runs with the safety check on and the ONNX one without, so that what the check changes
(previews) is seen both ways without a third server.
"""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import png
import pytest
from PIL import Image as PILImage

from artforge.engines.control_images import canny
from artforge.engines.image import NO_PREVIEWS
from artforge.models.embedded import NUDENET, STYLE_TRANSFER, fetch
from artforge_client import ArtForgeError
from artforge_client.v1 import image_pb2, jobs_pb2, pixels_pb2, server_pb2
from tests.conftest import REPO, start_server, stop_server
from tests.test_cli import artforge
from tests.tiny_pipelines import build_all

SIZE = 64
LORAS = ("tiny-lora", "tiny-lora-2", "tiny-lora-3")  # the server keeps 2 loaded per pipeline


def write_tiny_lora(pipeline_folder: Path, out_file: Path, seed: int = 0) -> None:
    """A real LoRA adapter for the tiny UNet's attention (random, non-zero), saved as diffusers saves LoRAs."""
    import tempfile

    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(pipeline_folder / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    with tempfile.TemporaryDirectory() as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=get_peft_model_state_dict(unet))
        out_file.parent.mkdir(parents=True, exist_ok=True)
        Path(tmp, "pytorch_lora_weights.safetensors").replace(out_file)


@pytest.fixture(scope="module", params=["torch", "onnx"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def safety(backend) -> bool:
    return backend == "torch"


@pytest.fixture(scope="module")
def image_server(tmp_path_factory, backend, safety):
    root = REPO / ".cache" / "tiny-models"
    paths = build_all(root)
    fetch(STYLE_TRANSFER, root, progress=False)
    fetch(NUDENET, root, progress=False)
    for seed, name in enumerate(LORAS):
        if not (root / "loras" / f"{name}.safetensors").is_file():
            write_tiny_lora(paths["tiny-sd15"], root / "loras" / f"{name}.safetensors", seed)
    config = f"""
[models]
default_text = "none"
preload = ["tiny-sd15"]
backend = "{backend}"

[images]
default_model = "tiny-sd15"
safety = {str(safety).lower()}
max_loaded_loras = 2

[model.tiny-sd15-single]
path = "{paths["tiny-sd15-single"]}"
config = "{paths["tiny-sd15"]}"

[model.tiny-sdxl-single]
path = "{paths["tiny-sdxl-single"]}"
config = "{paths["tiny-sdxl"]}"

[limits]
max_image_pixels = {4096 * 4096}
max_steps = 60
max_batch = 4
"""
    server = start_server(root, tmp_path_factory.mktemp(f"image-server-{backend}"), "--no-fetch", config=config)
    yield server
    stop_server(server)


@pytest.fixture
def client(image_server):
    with image_server.client() as c:
        yield c


def png_image(pixels: np.ndarray) -> pixels_pb2.Image:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, data=buffer.getvalue())


def pixels_of(result) -> np.ndarray:
    image = result.header.image
    if image.encoding == pixels_pb2.IMAGE_ENCODING_RAW:
        return np.frombuffer(result.data, "<f4").reshape(image.height, image.width, image.channels)
    # pypng: a complete PNG reader independent of ours (Pillow reads 16-bit colour as 8-bit).
    width, height, rows, info = png.Reader(bytes=result.data).read()
    dtype = np.uint16 if info["bitdepth"] == 16 else np.uint8
    return np.vstack([np.asarray(row, dtype) for row in rows]).reshape(height, width, info["planes"])


def request(**fields) -> image_pb2.GenerateImageRequest:
    defaults = {"prompt": "weathered red bricks", "width": SIZE, "height": SIZE, "steps": 4, "seed": 1}
    return image_pb2.GenerateImageRequest(**{**defaults, **fields})


def generate(client, **fields):
    stream = client.generate_image(request(**fields))
    stream.wait()
    return stream


def colors(stream) -> list[np.ndarray]:
    return [pixels_of(r).astype(np.float64) for r in stream.images if r.header.role == pixels_pb2.IMAGE_ROLE_COLOR]


def a_picture(width: int = SIZE, height: int = SIZE) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)), ((x + y) % 64) * 4], -1).astype(np.uint8)


def test_same_request_same_pixels_other_seed_other_pixels(client):
    first, again, other = (colors(generate(client, seed=s))[0] for s in (7, 7, 8))
    assert first.shape == (SIZE, SIZE, 3)
    assert np.array_equal(first, again)
    assert np.abs(first - other).mean() > 5


def test_batch_items_are_their_seeds(client):
    batch = colors(generate(client, seed=20, batch_size=2))
    assert len(batch) == 2 and not np.array_equal(batch[0], batch[1])
    # Item i of a batch is the image of seed + i: any one of them can be made again alone
    # (within one 8-bit level: batched float32 matrix products round differently).
    alone = colors(generate(client, seed=21))[0]
    assert np.abs(batch[1] - alone).max() <= 1 and np.abs(batch[1] - alone).mean() < 0.05


def test_progress_steps_previews_and_provenance(client, safety):
    stream = client.generate_image(request(steps=4, preview_every=2, scheduler="euler", seed=33))
    steps, previews, messages = [], [], []
    for event in stream:
        if event.HasField("progress") and event.progress.phase == jobs_pb2.JobProgress.PHASE_GENERATING:
            steps.append((event.progress.step, event.progress.total_steps))
            messages.append(event.progress.message)
            if event.progress.HasField("preview"):
                previews.append(event.progress.preview)
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    if safety:
        # The safety check sees results only: no preview goes out unchecked, and the steps that
        # would have had one say why.
        assert previews == [] and messages == ["", NO_PREVIEWS, "", NO_PREVIEWS]
    else:
        assert len(previews) == 2 and all(p.width == SIZE // 8 and p.encoding == pixels_pb2.IMAGE_ENCODING_PNG for p in previews)
        assert messages == [""] * 4
    (result,) = stream.images
    provenance = result.header.provenance
    assert (provenance.prompt, provenance.seed, provenance.model, provenance.steps, provenance.scheduler) == (
        "weathered red bricks",
        33,
        "tiny-sd15",
        4,
        "euler",
    )
    assert (provenance.width, provenance.height) == (SIZE, SIZE)
    with PILImage.open(io.BytesIO(result.data)) as png:
        assert png.text["artforge:prompt"] == "weathered red bricks"
        assert png.text["artforge:seed"] == "33" and png.text["artforge:scheduler"] == "euler"


def seam_error(pixels: np.ndarray, axis: int) -> float:
    """1 - the correlation between the last and first column (axis 1) or row (axis 0).

    Continuing edges correlate like neighbours; unrelated ones do not. (A plain difference
    says little here: these random-weight images are noise-like, so any two columns differ.)
    """
    last, first = (pixels[:, -1], pixels[:, 0]) if axis == 1 else (pixels[-1], pixels[0])
    last, first = last - last.mean(), first - first.mean()
    return float(1 - (last * first).sum() / np.sqrt((last * last).sum() * (first * first).sum()))


def test_tiling_on_x_makes_the_edges_continue(client):
    tiled = [colors(generate(client, seed=seed, tiling=pixels_pb2.Tiling(x=True)))[0] for seed in (1, 2, 3)]
    plain = [colors(generate(client, seed=seed))[0] for seed in (1, 2, 3)]
    tiled_x, plain_x = np.mean([seam_error(p, 1) for p in tiled]), np.mean([seam_error(p, 1) for p in plain])
    # Measured here over 5 seeds: 0.05..0.12 tiled (like interior neighbours, 0.13..0.18),
    # 0.45..1.18 untiled.
    assert tiled_x < 0.25 * plain_x, (tiled_x, plain_x)
    # X only: the top and bottom edges stay unrelated.
    tiled_y, plain_y = np.mean([seam_error(p, 0) for p in tiled]), np.mean([seam_error(p, 0) for p in plain])
    assert tiled_y > 0.5 * plain_y, (tiled_y, plain_y)


def test_guidance_zero_turns_guidance_off_and_unset_is_the_default(client):
    off = generate(client, seed=6, guidance_scale=0.0)
    one = colors(generate(client, seed=6, guidance_scale=1.0))[0]
    default = generate(client, seed=6)
    # Guidance of 1 or less means one unguided UNet pass per step (Turbo and LCM models want that).
    assert np.array_equal(colors(off)[0], one)
    assert np.abs(colors(default)[0] - one).mean() > 1
    assert off.images[0].header.provenance.guidance_scale == 0.0
    assert default.images[0].header.provenance.guidance_scale == 7.5


def test_scheduler_options_never_carry_over_to_later_jobs(client):
    def image(scheduler: str) -> np.ndarray:
        return colors(generate(client, seed=13, scheduler=scheduler))[0]

    dpmpp, euler = image("dpmpp_2m"), image("euler")
    assert np.abs(image("dpmpp_2m_karras") - dpmpp).mean() > 1, "Karras sigmas change the image"
    # Each job's scheduler comes from the model's own config, not from the last job's scheduler.
    assert np.array_equal(image("dpmpp_2m"), dpmpp)
    image("dpmpp_2m_karras")
    image("pndm")
    assert np.array_equal(image("euler"), euler)


def test_tiling_is_per_job_on_a_warm_pipeline(client):
    before = colors(generate(client, seed=5))[0]
    generate(client, seed=5, tiling=pixels_pb2.Tiling(x=True, y=True))
    assert np.array_equal(colors(generate(client, seed=5))[0], before), "tiling must not leak into later jobs"


def test_img2img_at_strength_zero_returns_the_input(client):
    picture = a_picture()
    (result,) = colors(generate(client, mode=image_pb2.IMAGE_MODE_IMG2IMG, init_image=png_image(picture), strength=0.0))
    assert np.array_equal(result, picture)


def test_img2img_moves_further_with_more_strength(client):
    picture = a_picture()
    distances = [
        np.abs(colors(generate(client, mode=image_pb2.IMAGE_MODE_IMG2IMG, init_image=png_image(picture), strength=s))[0] - picture).mean()
        for s in (0.3, 1.0)
    ]
    assert 0 < distances[0] < distances[1]


def test_inpaint_changes_only_the_masked_area(client):
    picture = a_picture()
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    (result,) = colors(
        generate(client, mode=image_pb2.IMAGE_MODE_INPAINT, init_image=png_image(picture), mask=png_image(mask), strength=1.0)
    )
    outside, inside = mask == 0, mask == 255
    assert np.abs(result[outside] - picture[outside]).max() <= 1, "outside the mask nothing changes"
    assert np.abs(result[inside] - picture[inside]).mean() > 10, "inside the mask it is repainted"


def test_pbr_maps_come_with_the_albedo(client):
    stream = generate(client, pbr_maps=True, tiling=pixels_pb2.Tiling(x=True, y=True))
    roles = [r.header.role for r in stream.images]
    assert roles == [
        pixels_pb2.IMAGE_ROLE_COLOR,
        pixels_pb2.IMAGE_ROLE_HEIGHT,
        pixels_pb2.IMAGE_ROLE_NORMAL,
        pixels_pb2.IMAGE_ROLE_ROUGHNESS,
    ]
    normal = pixels_of(stream.images[2]).astype(np.float64) / 255 * 2 - 1
    assert np.allclose(np.linalg.norm(normal, axis=-1), 1, atol=0.02)


def test_sixteen_bit_and_raw_float_outputs_agree_with_eight_bit(client):
    eight = colors(generate(client, seed=9))[0] / 255
    (png16,) = generate(client, seed=9, output_format=pixels_pb2.OUTPUT_FORMAT_PNG16).images
    (raw,) = generate(client, seed=9, output_format=pixels_pb2.OUTPUT_FORMAT_RAW_FLOAT32).images
    assert png16.header.image.dtype == pixels_pb2.PIXEL_TYPE_UINT16
    sixteen = pixels_of(png16).astype(np.float64) / 65535
    floats = pixels_of(raw).astype(np.float64)
    assert np.abs(sixteen - floats).max() <= 0.5 / 65535 + 1e-7
    assert np.abs(eight - floats).max() <= 0.5 / 255 + 1e-7
    assert len(np.unique(sixteen)) > len(np.unique(eight)), "16-bit keeps the precision 8-bit rounds away"


def test_a_4096_square_16_bit_result_arrives_whole(client):
    # Noise keeps the PNG large: well over gRPC's default 4 MB message limit, so only chunking
    # gets it through.
    picture = np.repeat(np.repeat(a_picture(256, 256), 16, axis=0), 16, axis=1)
    picture = np.clip(picture.astype(np.int16) + np.random.default_rng(0).integers(-8, 8, picture.shape), 0, 255).astype(np.uint8)
    stream = client.generate_image(
        request(
            mode=image_pb2.IMAGE_MODE_IMG2IMG,
            init_image=png_image(picture),
            strength=0.0,
            width=0,
            height=0,
            output_format=pixels_pb2.OUTPUT_FORMAT_PNG16,
        )
    )
    chunk_sizes = [len(e.image_chunk.data) for e in stream if e.HasField("image_chunk")]
    (result,) = stream.images
    chunk_limit = client.server_info().limits.chunk_bytes
    assert result.header.total_bytes > 16 << 20 and max(chunk_sizes) <= chunk_limit
    assert sum(chunk_sizes) == result.header.total_bytes
    received = pixels_of(result)
    assert received.shape == (4096, 4096, 3) and received.dtype == np.uint16
    assert np.array_equal(received // 257, picture)


def test_single_file_checkpoint_loads_with_the_folders_weights(client):
    folder = colors(generate(client, seed=11))[0]
    single = colors(generate(client, seed=11, model="tiny-sd15-single"))[0]
    assert np.array_equal(folder, single)


def test_sdxl_pipelines_from_folder_and_single_file(client):
    folder = colors(generate(client, seed=3, model="tiny-sdxl"))[0]
    single = colors(generate(client, seed=3, model="tiny-sdxl-single"))[0]
    assert folder.shape == (SIZE, SIZE, 3)
    assert np.array_equal(folder, single)


def test_lora_changes_the_image_per_request_and_only_then(client, backend):
    plain_stream = generate(client, seed=4)
    plain = colors(plain_stream)[0]
    lora_stream = generate(client, seed=4, loras=[pixels_pb2.LoraWeight(name="tiny-lora", scale=1.0)])
    lora = colors(lora_stream)
    stream = client.generate_image(request(seed=4, loras=[pixels_pb2.LoraWeight(name="tiny-lora", scale=0.0)]))
    stream.wait()
    # LoRA jobs run on PyTorch: the weights of an ONNX graph are fixed.
    assert (plain_stream.started.backend, lora_stream.started.backend) == (backend, "torch")
    assert np.abs(lora[0] - plain).mean() > 2, "the adapter changes the image"
    assert np.abs(colors(stream)[0] - plain).max() <= 1, "at scale 0 it does nothing"
    assert [(w.name, w.scale) for w in stream.images[0].header.provenance.loras] == [("tiny-lora", 0.0)]
    assert np.array_equal(colors(generate(client, seed=4))[0], plain), "a later request without it is not affected"


def test_lora_adapters_stay_loaded_up_to_the_bound_least_recently_used_out_first(client):
    def loaded_loras() -> set[str]:
        return {m.name for m in client.list_models() if m.kind == server_pb2.MODEL_KIND_LORA and m.loaded}

    def image(*names: str) -> np.ndarray:
        return colors(generate(client, seed=4, loras=[pixels_pb2.LoraWeight(name=name, scale=1.0) for name in names]))[0]

    first = {}
    for name in LORAS:
        first[name] = image(name)
        assert len(loaded_loras()) <= 2
    assert loaded_loras() == {"tiny-lora-2", "tiny-lora-3"}
    assert np.abs(first["tiny-lora-2"] - first["tiny-lora-3"]).mean() > 1, "each adapter is its own"
    # The one unloaded first loads again, and does what it did.
    assert np.array_equal(image("tiny-lora"), first["tiny-lora"])
    assert loaded_loras() == {"tiny-lora-3", "tiny-lora"}
    # A job may use more adapters than are kept; the next one trims them back.
    image(*LORAS)
    assert loaded_loras() == set(LORAS)
    assert np.array_equal(image("tiny-lora-2"), first["tiny-lora-2"])
    assert loaded_loras() == {"tiny-lora-3", "tiny-lora-2"}


def test_cancel_between_steps(client):
    stream = client.generate_image(request(steps=60, width=256, height=256))
    last_step = 0
    with pytest.raises(ArtForgeError) as error:
        for event in stream:
            if event.HasField("progress") and event.progress.step:
                last_step = event.progress.step
                if last_step == 2:
                    stream.cancel()
    assert error.value.code is grpc.StatusCode.CANCELLED
    assert stream.finished.state == jobs_pb2.JOB_STATE_CANCELLED
    assert last_step < 10 and not stream.images


def test_stylize_through_the_server(client):
    picture = a_picture(96, 80)
    stream = client.stylize(image_pb2.StylizeRequest(image=png_image(picture), style_index=19))
    stream.wait()
    (result,) = stream.images
    styled = pixels_of(result).astype(np.float64)
    assert styled.shape == (80, 96, 3)
    assert np.abs(styled - picture).mean() > 10
    assert result.header.provenance.style == "19"
    with pytest.raises(ArtForgeError) as error:
        client.stylize(image_pb2.StylizeRequest(image=png_image(picture), style_index=26)).wait()
    assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT and error.value.message.startswith("style_index:")


def corrupt_png() -> pixels_pb2.Image:
    good = png_image(a_picture()).data
    return pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, data=good[:60] + b"\0" * 40 + good[100:])


PICTURE = png_image(a_picture())


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"width": 60}, grpc.StatusCode.INVALID_ARGUMENT, "width"),
        ({"width": 4104, "height": 4104}, grpc.StatusCode.INVALID_ARGUMENT, "width"),
        ({"steps": 0}, grpc.StatusCode.INVALID_ARGUMENT, "steps"),
        ({"steps": 61}, grpc.StatusCode.INVALID_ARGUMENT, "steps"),
        ({"mode": image_pb2.IMAGE_MODE_IMG2IMG, "init_image": "picture", "strength": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "strength"),
        ({"mode": image_pb2.IMAGE_MODE_IMG2IMG, "init_image": "corrupt", "strength": 0.5}, grpc.StatusCode.INVALID_ARGUMENT, "init_image"),
        ({"mode": image_pb2.IMAGE_MODE_IMG2IMG}, grpc.StatusCode.INVALID_ARGUMENT, "init_image"),
        ({"mode": image_pb2.IMAGE_MODE_INPAINT, "init_image": "picture", "mask": "small"}, grpc.StatusCode.INVALID_ARGUMENT, "mask"),
        ({"scheduler": "warp_drive"}, grpc.StatusCode.INVALID_ARGUMENT, "scheduler"),
        ({"loras": [pixels_pb2.LoraWeight(name="nope", scale=1)]}, grpc.StatusCode.NOT_FOUND, "loras[0].name"),
        ({"model": "no-such-model"}, grpc.StatusCode.NOT_FOUND, "model"),
        ({"batch_size": 5}, grpc.StatusCode.INVALID_ARGUMENT, "batch_size"),
        ({"guidance_scale": -1}, grpc.StatusCode.INVALID_ARGUMENT, "guidance_scale"),
        ({"controls": [image_pb2.Control(type="depth")]}, grpc.StatusCode.INVALID_ARGUMENT, "controls[0].image"),
        ({"controls": [image_pb2.Control(type="depth", image=corrupt_png())]}, grpc.StatusCode.INVALID_ARGUMENT, "controls[0].image"),
        ({"controls": [image_pb2.Control(model="tiny-sdxl-depth", image=PICTURE)]}, grpc.StatusCode.INVALID_ARGUMENT, "controls[0].model"),
        ({"controls": [image_pb2.Control(type="canny", image=PICTURE)]}, grpc.StatusCode.NOT_FOUND, "controls[0].type"),
        ({"controls": [image_pb2.Control(type="depth", image=PICTURE, end=0)]}, grpc.StatusCode.INVALID_ARGUMENT, "controls[0].start"),
        ({"controls": [image_pb2.Control(type="depth")] * 5}, grpc.StatusCode.INVALID_ARGUMENT, "controls"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(client, fields, code, field):
    images = {"picture": png_image(a_picture()), "corrupt": corrupt_png(), "small": png_image(np.zeros((32, 32), np.uint8))}
    fields = {k: images.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    with pytest.raises(ArtForgeError) as error:
        generate(client, **fields)
    assert error.value.code is code
    assert error.value.message.startswith(f"{field}:"), error.value.message
    assert colors(generate(client))[0].shape == (SIZE, SIZE, 3), "the server keeps serving"


def test_a_control_steers_the_job_on_the_models_own_backend(client, backend):
    plain = generate(client, seed=4)
    depth = image_pb2.Control(type="depth", image=png_image(a_picture(40, 24)))  # resized to the job
    steered = generate(client, seed=4, controls=[depth])
    assert (plain.started.backend, steered.started.backend, steered.started.backend_reason) == (backend, backend, "")
    (applied,) = steered.images[0].header.provenance.controls  # in the result's provenance, and its PNG
    assert (applied.model, applied.strength, applied.start, applied.end, applied.preprocessor) == ("tiny-sd15-depth", 1, 0, 1, "")
    assert PILImage.open(io.BytesIO(steered.images[0].data)).text["artforge:controls"] == "tiny-sd15-depth:1:0:1"
    assert np.abs(colors(steered)[0] - colors(plain)[0]).mean() > 2
    depth.strength = 0.0
    assert np.abs(colors(generate(client, seed=4, controls=[depth]))[0] - colors(plain)[0]).max() <= 1, "at strength 0 it does nothing"
    listed = {m.name: m for m in client.list_models(server_pb2.MODEL_KIND_CONTROLNET)}
    assert {name: m.control_type for name, m in listed.items()} == {"tiny-sd15-depth": "depth", "tiny-sdxl-depth": "depth"}
    assert listed["tiny-sd15-depth"].loaded and client.server_info().limits.max_controls == 4
    # From a picture, through the server's depth model.
    assert [m.name for m in client.list_models(server_pb2.MODEL_KIND_DEPTH)] == ["tiny-dpt-depth"]
    control = image_pb2.Control(type="depth", image=png_image(a_picture()), preprocessor="depth")
    estimated = client.generate_image(request(seed=4, controls=[control]))
    phases = [event.progress.phase for event in estimated if event.HasField("progress")]
    assert estimated.finished.state == jobs_pb2.JOB_STATE_SUCCEEDED and jobs_pb2.JobProgress.PHASE_PREPROCESSING in phases
    assert [m.loaded for m in client.list_models(server_pb2.MODEL_KIND_DEPTH)] == [True]
    assert phases.index(jobs_pb2.JobProgress.PHASE_PREPROCESSING) < phases.index(jobs_pb2.JobProgress.PHASE_GENERATING)


def test_the_cli_sends_controls(image_server, tmp_path):
    picture = tmp_path / "depth.png"
    PILImage.fromarray(a_picture(40, 24)).save(picture)

    def cli(*extra: str) -> np.ndarray:
        out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.png"
        args = ["image", "weathered red bricks", "--address", image_server.address, "--width", "64", "--height", "64"]
        done = artforge(*args, "--steps", "2", "--seed", "4", "-o", str(out), *extra)
        assert done.returncode == 0, done.stderr
        return np.asarray(PILImage.open(out), np.float64)

    as_is = cli("--control", f"depth:{picture}:1.0:0:1")
    assert np.abs(as_is - cli()).mean() > 2
    assert not np.array_equal(cli("--control", f"depth/canny:{picture}"), as_is), "its edges, not the picture, reached the ControlNet"
    refused = artforge("image", "x", "--address", image_server.address, "--control", "depth")
    assert refused.returncode == 1 and "--control depth: expected TYPE_OR_MODEL:FILE" in refused.stderr


def test_preprocess_returns_the_control_image_a_job_would_make(client, image_server, tmp_path):
    picture = a_picture()  # at the job's size, so the job's own Canny sees the same pixels
    picture[SIZE // 4 : SIZE // 2, SIZE // 4 : SIZE // 2] = 255  # edges for Canny to find
    stream = client.preprocess(image_pb2.PreprocessRequest(image=png_image(picture), preprocessor="canny"))
    assert stream.wait().state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert (stream.started.model, stream.started.backend) == ("canny", "opencv")
    (result,) = stream.images
    edges = pixels_of(result)
    assert edges.shape == (SIZE, SIZE, 1) and set(np.unique(edges)) == {0, 255}
    assert np.array_equal(edges[..., 0] > 0, canny(picture.astype(np.float32) / 255)[..., 0] > 0)
    made_here = image_pb2.Control(model="tiny-sd15-depth", image=png_image(edges[..., 0]))
    made_in_the_job = image_pb2.Control(model="tiny-sd15-depth", image=png_image(picture), preprocessor="canny")
    here, in_the_job = (colors(generate(client, seed=5, controls=[control]))[0] for control in (made_here, made_in_the_job))
    assert np.array_equal(here, in_the_job)
    # Depth from the picture through the depth model, at the picture's size; and the CLI.
    depth = client.preprocess(image_pb2.PreprocessRequest(image=png_image(a_picture(40, 24)), preprocessor="depth"))
    assert depth.wait().state == jobs_pb2.JOB_STATE_SUCCEEDED and depth.started.model == "tiny-dpt-depth"
    assert pixels_of(depth.images[0]).shape == (24, 40, 1)
    source, out = tmp_path / "picture.png", tmp_path / "edges.png"
    PILImage.fromarray(picture).save(source)
    done = artforge("preprocess", str(source), "canny", "-o", str(out), "--address", image_server.address)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.asarray(PILImage.open(out)), edges[..., 0]), "the CLI writes the gray control image"
    with pytest.raises(ArtForgeError) as error:
        client.preprocess(image_pb2.PreprocessRequest(image=png_image(picture), preprocessor="hed")).wait()
    assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT and error.value.message.startswith("preprocessor: 'hed'")


def test_server_info_lists_image_models_and_schedulers(client):
    info = client.server_info()
    assert info.images_available and info.stylize_available
    assert info.default_image_model == "tiny-sd15"
    assert {"euler", "euler_a", "ddim", "dpmpp_2m", "lcm"} <= set(info.schedulers)
    assert len(info.styles) == 26
    models = {m.name: m for m in client.list_models()}
    assert models["tiny-sd15"].format == "diffusers" and models["tiny-sd15"].loaded
    assert models["tiny-sdxl-single"].format == "single_file"


def test_safety_filter_checks_results_and_passes_benign_ones(image_server, client, safety):
    # With `safety = true` every result above went through the NSFW detector. Benign images pass
    # unblurred. (That it catches nudity is not shown here: no such image ships with the tests;
    # tests/test_safety.py says what is covered.)
    assert ("safety: every image result passes the NSFW detector" in image_server.log()) == safety
    stream = generate(client, seed=12, batch_size=2)
    assert len(stream.images) == 2 and not any(r.header.nsfw_blurred for r in stream.images)


@pytest.mark.parametrize(
    ("blend", "message"),
    [
        (image_pb2.StyleBlend(styles=[1, 2], weights=[1.0]), "blend: has 2 styles but 1 weights"),
        (image_pb2.StyleBlend(), "blend: is empty"),
    ],
)
def test_stylize_blend_is_checked(client, blend, message):
    request = image_pb2.StylizeRequest(image=png_image(a_picture()))
    request.blend.CopyFrom(blend)
    with pytest.raises(ArtForgeError) as error:
        client.stylize(request).wait()
    assert error.value.code is grpc.StatusCode.INVALID_ARGUMENT and error.value.message.startswith(message)


def test_the_backend_in_use_is_reported(client, backend):
    assert generate(client, seed=2).started.backend == backend
    model = next(m for m in client.list_models() if m.name == "tiny-sd15")
    assert (model.backend_requested, model.backend) == (backend, backend)
    reason = "ONNX Runtime, from the export in " if backend == "onnx" else "the config asks for PyTorch"
    assert model.backend_reason.startswith(reason), model.backend_reason


def test_models_folder_path_is_reported(image_server, client):
    assert Path(next(m.path for m in client.list_models() if m.name == "tiny-sd15")).is_dir()
