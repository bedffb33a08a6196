"""Image models on ONNX Runtime: parity with PyTorch, the export cache, and the fallback to PyTorch.

Parity runs in process on the tiny pipelines (tests/tiny_pipelines.py): the same pipeline call,
same seed, float32, once with the PyTorch networks and once with their ONNX exports. The
exports of the shared tiny models are cached in REPO/.cache/tiny-models/.cache/onnx, where the
image server tests find them too; the cache tests work on copies in a temporary folder.
"""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub

import shutil
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from artforge.config import Limits, ModelEntry
from artforge.engines.image import ControlInput, ImageEngine, ImageRequest
from artforge.errors import ArtForgeError, ErrorCode
from artforge.models.registry import ModelRegistry
from artforge.runtimes.onnx import session_options
from artforge.runtimes.onnx_diffusion import EXPORT_FORMAT, OnnxUNet, _WinogradConv, export_pipeline, use_onnx
from artforge.runtimes.onnx_diffusion import seamless as onnx_seamless
from artforge.runtimes.torch_diffusion import LoadedPipeline, load_pipeline
from artforge.runtimes.torch_diffusion import seamless as torch_seamless
from artforge_client import ArtForgeError as ClientError
from artforge_client.v1 import image_pb2, jobs_pb2
from tests.conftest import REPO, start_server, stop_server
from tests.test_controls import FAMILIES, ramp
from tests.test_stylize_engine import RecordingJob
from tests.tiny_pipelines import build_all, build_tiny_sd15_taesd

TINY_ROOT = REPO / ".cache" / "tiny-models"
PROMPT = "weathered red bricks"
TILINGS = {"none": (False, False), "x": (True, False), "y": (False, True), "xy": (True, True)}


@pytest.fixture(scope="module")
def tiny() -> dict[str, Path]:
    return build_all(TINY_ROOT)


def engine_for(models_dir: Path, entries: list[ModelEntry] | None = None, backend: str = "auto") -> ImageEngine:
    """A new engine: what a server start makes."""
    return ImageEngine(ModelRegistry(models_dir, entries or [], {}, backend), Limits(), 2)


def torch_pipeline(engine: ImageEngine, name: str) -> LoadedPipeline:
    spec = engine.registry.get(name, "image")
    return load_pipeline(spec.name, spec.path, spec.format == "single_file", spec.config, "cpu")


def generate(loaded: LoadedPipeline, output_type: str, tile: tuple[bool, bool] = (False, False), mode: str = "txt2img", **kwargs):
    """One pipeline call, seeded; latents (output_type "latent") or float images in 0..1 ("np")."""
    tiling = onnx_seamless if isinstance(loaded.text2img.unet, OnnxUNet) else torch_seamless
    pipeline = loaded.variant(mode)
    generators = [torch.Generator().manual_seed(seed) for seed in (5, 6)]
    with tiling(pipeline, *tile):
        out = pipeline(PROMPT, num_inference_steps=4, num_images_per_prompt=2, generator=generators, output_type=output_type, **kwargs)
    return out.images


# -- parity -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["tiny-sd15", "tiny-sdxl"])
def backends(request, tiny) -> tuple[LoadedPipeline, LoadedPipeline]:
    """The model on PyTorch and on ONNX Runtime, from the export the engine makes (or finds)."""
    engine = engine_for(TINY_ROOT)
    folder = engine.export(request.param)
    on_onnx = torch_pipeline(engine, request.param)
    use_onnx(on_onnx.text2img, folder, "cpu")
    return torch_pipeline(engine, request.param), on_onnx


@pytest.mark.parametrize("tiling", TILINGS)
def test_onnx_matches_pytorch(backends, tiling):
    on_torch, on_onnx = backends
    tile = TILINGS[tiling]
    # 72 x 64: a latent side (9) the UNet's levels do not halve evenly; batch 2 with guidance: UNet batch 4.
    size = {"width": 72, "height": 64}
    latents = generate(on_torch, "latent", tile, **size)
    assert (latents - generate(on_onnx, "latent", tile, **size)).abs().max() <= 1e-3
    images = generate(on_torch, "np", tile, **size)
    assert images.shape == (2, 64, 72, 3)
    assert np.abs(images - generate(on_onnx, "np", tile, **size)).mean() * 255 <= 1.0
    if any(tile):  # and the tiling is honoured: it moves the result far more than the tolerance
        assert (latents - generate(on_torch, "latent", **size)).abs().max() > 0.1


@pytest.mark.parametrize("tiling", ["none", "xy"])
def test_img2img_matches_pytorch(backends, tiling):
    on_torch, on_onnx = backends
    picture = torch.linspace(0, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)  # the VAE encoder runs too
    kwargs = {"mode": "img2img", "image": picture, "strength": 0.6}
    results = [generate(loaded, "np", TILINGS[tiling], **kwargs) for loaded in (on_torch, on_onnx)]
    assert np.abs(results[0] - results[1]).mean() * 255 <= 1.0


def test_the_cuda_graphs_match_pytorch_run_in_fp32_on_the_cpu(tmp_path, tiny):
    """A CUDA export's graphs (opset 17, edges concatenated for tiling), kept in fp32 so that
    the CPU can run them: the structure the GPU runs, checked where no GPU is."""
    engine = engine_for(TINY_ROOT)
    on_torch = torch_pipeline(engine, "tiny-sd15")
    on_onnx = torch_pipeline(engine, "tiny-sd15")
    export_pipeline(on_onnx.text2img, tmp_path, cuda=True, fp16=False)
    assert json.loads((tmp_path / "export.json").read_text())["opset"] == 17
    assert not any(winograd_tiles(tmp_path / part / "model.onnx") for part in ("unet", "vae_decoder"))  # cuDNN's choice
    use_onnx(on_onnx.text2img, tmp_path, "cpu")
    for tile in ((False, False), (True, True)):
        latents = generate(on_torch, "latent", tile, width=72, height=64)
        assert (latents - generate(on_onnx, "latent", tile, width=72, height=64)).abs().max() <= 1e-3


# -- controls -----------------------------------------------------------------------------------


def run_job(engine: ImageEngine, request: ImageRequest) -> tuple[np.ndarray, tuple]:
    """The first image of a job run on `engine`, and what its JobStarted said (model, backend, seed, reason)."""
    job = RecordingJob()
    return engine.run(engine.prepare(request), job).images[0].pixels, job.started_with[0]


@pytest.mark.parametrize("model", FAMILIES)
def test_a_controlled_job_on_onnx_runtime_matches_pytorch(tiny, model):
    """Two ControlNets at once, with strengths and step ranges of their own, tiled and not: the
    exported ControlNet's residuals reach the exported UNet as they reach PyTorch's."""
    on_torch, on_onnx = engine_for(TINY_ROOT, backend="torch"), engine_for(TINY_ROOT, backend="onnx")
    net = FAMILIES[model]
    square = np.zeros((48, 40, 3), np.float32)  # another size than the job's: resized
    square[12:36, 10:30] = 1.0
    controls = [
        ControlInput(model=net, image=ramp(64, 72), strength=0.8, end=0.75),
        ControlInput(model=net, image=square, strength=1.2, start=0.25),
    ]
    for tile_x in (False, True):
        request = ImageRequest(prompt=PROMPT, model=model, steps=4, seed=3, width=72, height=64, controls=controls, tile_x=tile_x)
        (expected, by_torch), (pixels, by_onnx) = run_job(on_torch, request), run_job(on_onnx, request)
        assert (by_torch[1], by_onnx[1], by_onnx[3]) == ("torch", "onnx", "")
        assert np.abs(pixels - expected).mean() * 255 <= 1.0
        plain, _ = run_job(on_onnx, ImageRequest(prompt=PROMPT, model=model, steps=4, seed=3, width=72, height=64, tile_x=tile_x))
        assert np.abs(pixels - plain).mean() * 255 > 2.0, "the controls moved the result far more than the tolerance"
    assert {net, model} <= on_onnx.loaded_models()


def test_a_controlnet_that_cannot_be_exported_runs_on_pytorch_and_the_job_says_why(tmp_path, tiny):
    models = tmp_path / "models"
    shutil.copytree(tiny["tiny-sd15"], models / "sd15")
    pooled = models / "controlnets" / "sd15-shuffle"
    shutil.copytree(tiny["tiny-sd15-controlnet"], pooled)
    config = json.loads((pooled / "config.json").read_text())
    (pooled / "config.json").write_text(json.dumps(config | {"global_pool_conditions": True}))
    engine = engine_for(models, backend="onnx")
    controls = [ControlInput(model="sd15-shuffle", image=ramp(64, 64))]
    request = ImageRequest(prompt=PROMPT, model="sd15", steps=2, seed=3, width=64, height=64, controls=controls)
    _, started = run_job(engine, request)
    assert started[1] == "torch" and "ControlNet sd15-shuffle does not run on ONNX Runtime" in started[3], started
    assert "global_pool_conditions" in started[3]
    _, again = run_job(engine, request)
    assert again == started, "the recorded failure is not exported again"


def winograd_tiles(graph: Path) -> list[int]:
    """The output tile side of each Winograd convolution in an exported graph (its output transform)."""
    model = onnx.load(str(graph), load_external_data=False)
    return [next(a.ints[0] for a in node.attribute if a.name == "strides") for node in model.graph.node if node.op_type == "ConvTranspose"]


def test_the_cpu_export_runs_3x3_convolutions_as_winograd(tiny):
    folder = engine_for(TINY_ROOT).export("tiny-sd15")
    unet = winograd_tiles(folder / "unet" / "model.onnx")
    # The 4-level tiny UNet: F(4x4) on the two upper levels, F(2x2) on the third, none on the deepest.
    assert unet.count(4) > 0 and unet.count(2) > 0
    # The deepest level's 3x3 convolutions stay direct: 2 in each of its 2 down, 2 mid and 3 up ResNet blocks.
    attributes = [
        {a.name: list(a.ints) for a in node.attribute}
        for node in onnx.load(str(folder / "unet" / "model.onnx")).graph.node
        if node.op_type == "Conv"
    ]
    assert sum(a.get("kernel_shape") == [3, 3] and a["strides"] == [1, 1] for a in attributes) == 14
    assert set(winograd_tiles(folder / "vae_decoder" / "model.onnx")) == {4}


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("pad", [0, 1])
def test_winograd_convolutions_match_direct_ones(tmp_path, tile, pad):
    """Odd and even sides, a batch and a bias, against PyTorch's conv2d in float64."""

    class Conv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(5, 7, 3)

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return _WinogradConv.apply(input, self.conv.weight, self.conv.bias, pad, tile)

    torch.manual_seed(0)
    module = Conv()
    path = tmp_path / "conv.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    names = {"input_names": ["x"], "output_names": ["y"], "dynamic_axes": {"x": axes, "y": axes}}
    torch.onnx.export(module, (torch.randn(1, 5, 9, 9),), str(path), dynamo=False, **names)
    assert winograd_tiles(path) == [tile]
    session = ort.InferenceSession(str(path), session_options("cpu"), providers=["CPUExecutionProvider"])
    for shape in ((2, 5, 13, 10), (1, 5, 16, 16), (1, 5, 3, 4)):
        input = torch.randn(shape)
        with torch.no_grad():
            expected = F.conv2d(input.double(), module.conv.weight.double(), module.conv.bias.double(), padding=pad).numpy()
        (output,) = session.run(None, {"x": input.numpy()})
        assert output.shape == expected.shape
        assert np.abs(output - expected).max() <= (1e-4 if tile == 4 else 1e-5) * np.abs(expected).max()


# -- the export cache -------------------------------------------------------------------------


def unet_weights(folder: Path) -> Path:
    return folder / "unet" / "diffusion_pytorch_model.safetensors"


def perturb(weights: Path, key: str | None = None) -> None:
    """Change one tensor of a .safetensors file a little: new weights, same shapes."""
    state = load_file(str(weights))
    key = key or next(k for k in sorted(state) if k.endswith("conv_in.weight") or k.endswith("input_blocks.0.0.weight"))
    state[key] = state[key] + 0.05
    save_file(state, str(weights), metadata={"format": "pt"})


def test_a_second_start_reuses_the_export_and_new_weights_are_exported_again(tmp_path, tiny):
    models = tmp_path / "models"
    shutil.copytree(tiny["tiny-sd15"], models / "sd15")
    folder = engine_for(models).export("sd15")
    made = (folder.stat().st_ino, (folder / "unet" / "model.onnx").stat().st_mtime_ns)

    second = engine_for(models)
    assert second.backend_of("sd15") == ("", "auto: an ONNX export is cached (made again if the weights changed)")
    second.preload("sd15", "cpu")
    assert second.backend_of("sd15") == ("onnx", f"ONNX Runtime, from the export in {folder}")
    assert (folder.stat().st_ino, (folder / "unet" / "model.onnx").stat().st_mtime_ns) == made, "exported again"

    perturb(unet_weights(models / "sd15"))
    third = engine_for(models)
    third.preload("sd15", "cpu")
    again = third.export("sd15")  # found: the load above made it
    assert again != folder and not folder.exists(), "the export of the old weights is removed"
    assert third.backend_of("sd15") == ("onnx", f"ONNX Runtime, from the export in {again}")
    # ... and it holds the new weights.
    on_onnx = torch_pipeline(third, "sd15")
    use_onnx(on_onnx.text2img, again, "cpu")
    assert np.abs(generate(torch_pipeline(third, "sd15"), "np") - generate(on_onnx, "np")).mean() * 255 <= 1.0


def test_a_single_file_checkpoint_is_keyed_by_its_file(tmp_path, tiny):
    checkpoint = tmp_path / "sd15.safetensors"
    shutil.copy(tiny["tiny-sd15-single"], checkpoint)
    entries = [ModelEntry(name="single", path=str(checkpoint), config=str(tiny["tiny-sd15"]))]
    engine = engine_for(tmp_path / "models", entries)
    first = engine.export("single")
    assert engine.export("single") == first
    perturb(checkpoint, "model.diffusion_model.input_blocks.0.0.weight")
    assert engine.export("single") != first


def test_a_broken_export_falls_back_to_pytorch_and_backend_onnx_says_why(tmp_path, tiny):
    models = tmp_path / "models"
    shutil.copytree(tiny["tiny-sd15"], models / "sd15")
    folder = engine_for(models).export("sd15")
    (folder / "unet" / "model.onnx").write_bytes(b"not a protobuf")  # a disk error, a killed copy

    auto = engine_for(models)
    auto.preload("sd15", "cpu")
    backend, reason = auto.backend_of("sd15")
    assert backend == "torch" and reason.startswith("PyTorch, because the ONNX export failed to load:"), reason

    with pytest.raises(ArtForgeError) as error:
        engine_for(models, backend="onnx").preload("sd15", "cpu")
    assert error.value.code is ErrorCode.FAILED_PRECONDITION
    assert error.value.message.startswith("model sd15 asks for backend onnx, but the ONNX export failed to load:")


def test_a_model_whose_export_fails_is_served_by_pytorch_with_the_reason(tmp_path, tiny):
    """Through a real server: a TAESD VAE is outside what the exporter covers."""
    models = tmp_path / "models"
    build_tiny_sd15_taesd(models / "taesd", tiny["tiny-sd15"])
    config = f"""
[models]
default_text = "none"
preload = []

[model.taesd-strict]
path = "{models / "taesd"}"
backend = "onnx"
"""
    server = start_server(models, tmp_path, "--no-fetch", config=config)
    try:
        with server.client() as client:
            request = image_pb2.GenerateImageRequest(prompt=PROMPT, model="taesd", width=64, height=64, steps=2, seed=1)
            stream = client.generate_image(request)
            phases = [event.progress.phase for event in stream if event.HasField("progress")]
            assert jobs_pb2.JobProgress.PHASE_EXPORTING_MODEL in phases, "the first job says it is exporting"
            assert stream.started.backend == "torch" and len(stream.images) == 1
            reason = f"exporting taesd to ONNX (diffusion-{EXPORT_FORMAT}-fp32-cpu) failed: UnsupportedModel: the VAE is an AutoencoderTiny"
            info = {m.name: m for m in client.list_models()}
            assert info["taesd"].backend == "torch"
            assert info["taesd"].backend_reason.startswith(f"PyTorch, because {reason}"), info["taesd"].backend_reason
            assert reason in server.log()
            assert list((models / ".cache" / "onnx" / "taesd").glob("*.failed")), "the failure is remembered"

            request.model = "taesd-strict"
            with pytest.raises(ClientError) as error:
                client.generate_image(request).wait()
            assert error.value.code is grpc.StatusCode.FAILED_PRECONDITION
            assert error.value.message.startswith("model taesd-strict asks for backend onnx, but exporting taesd-strict"), (
                error.value.message
            )
            assert "AutoencoderTiny" in error.value.message
    finally:
        stop_server(server)
