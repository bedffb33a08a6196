"""Controls (ControlNets) in the image engine, on the tiny SD 1.5 and SDXL pipelines and tiny
ControlNets made for them (real diffusers classes, random weights: these check how controls
steer a job, not what a trained ControlNet draws), and the preprocessors that make control
images from pictures (a tiny DPT depth model, random weights, for depth)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub

from pathlib import Path

import numpy as np
import pytest

from artforge.config import Limits
from artforge.engines.control_images import ControlImages, canny, lineart, scribble
from artforge.engines.image import ControlInput, ImageEngine, ImageRequest
from artforge.engines.preprocess import PreprocessEngine, PreprocessRequest
from artforge.errors import ArtForgeError, ErrorCode
from artforge.models.registry import ModelRegistry
from artforge.runtimes.depth import DepthEstimator
from tests.conftest import REPO
from tests.test_stylize_engine import RecordingJob
from tests.tiny_pipelines import build_all

TINY_ROOT = REPO / ".cache" / "tiny-models"
FAMILIES = {"tiny-sd15": "tiny-sd15-depth", "tiny-sdxl": "tiny-sdxl-depth"}


@pytest.fixture(scope="module")
def tiny() -> dict[str, Path]:
    return build_all(TINY_ROOT)


@pytest.fixture(scope="module")
def engine(tiny) -> ImageEngine:
    return ImageEngine(ModelRegistry(TINY_ROOT, [], {}, "torch"), Limits(), 2)


def ramp(height: int, width: int) -> np.ndarray:
    """A depth-like picture: near at the bottom, far at the top, a square nearer still."""
    picture = np.repeat(np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None], width, axis=1)
    picture[height // 4 : height // 2, width // 4 : width // 2] = 1.0
    return picture[..., None]


def generate(engine: ImageEngine, model: str, **fields) -> np.ndarray:
    request = ImageRequest(prompt="a stone idol", model=model, steps=2, seed=3, width=64, height=64, **fields)
    job = RecordingJob()
    result = engine.run(engine.prepare(request), job)
    assert job.started_with[0][1] == "torch"
    return result.images[0].pixels


def depth(**fields) -> ControlInput:
    return ControlInput(type="depth", image=ramp(64, 64), **fields)


@pytest.mark.parametrize("model", FAMILIES)
def test_a_control_steers_the_pixels_and_strength_zero_or_a_late_range_leaves_them(engine, model):
    plain = generate(engine, model)
    steered = generate(engine, model, controls=[depth()])
    assert np.abs(steered - plain).mean() * 255 > 1.0
    # Strength 0, or a range that starts after the last step: the ControlNet adds nothing. (The
    # last step starts at 0.5 of the schedule, or 0.67 for PNDM, which runs one step more.)
    assert np.array_equal(generate(engine, model, controls=[depth(strength=0.0)]), plain)
    assert np.array_equal(generate(engine, model, controls=[depth(start=0.95, end=1.0)]), plain)
    # By name, the same ControlNet the type picked.
    assert np.array_equal(generate(engine, model, controls=[ControlInput(model=FAMILIES[model], image=ramp(64, 64))]), steered)


def test_two_controls_act_together_and_any_image_size_is_resized(engine):
    one = generate(engine, "tiny-sd15", controls=[depth()])
    flipped = ControlInput(type="depth", image=ramp(40, 24)[::-1].copy(), strength=0.7, start=0.0, end=0.5)
    two = generate(engine, "tiny-sd15", controls=[depth(), flipped])
    assert two.shape == one.shape == (64, 64, 3)
    assert np.abs(two - one).mean() * 255 > 1.0
    assert np.abs(generate(engine, "tiny-sd15", controls=[flipped]) - one).mean() * 255 > 1.0


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_controls_steer_img2img_and_inpaint(engine, mode):
    picture = np.random.default_rng(1).random((64, 64, 3), dtype=np.float32)
    mask = np.zeros((64, 64, 1), np.float32)
    mask[16:48, 16:48] = 1.0
    fields = {"mode": mode, "init_image": picture, "strength": 1.0, "mask": mask if mode == "inpaint" else None}
    plain = generate(engine, "tiny-sd15", **fields)
    steered = generate(engine, "tiny-sd15", controls=[depth()], **fields)
    changed = np.abs(steered - plain).mean(axis=-1)
    assert changed.mean() * 255 > 0.5
    if mode == "inpaint":  # outside the mask the input stays exactly as it was
        assert changed[mask[..., 0] == 0].max() == 0.0


INVALID, NOT_FOUND = ErrorCode.INVALID_ARGUMENT, ErrorCode.NOT_FOUND
IMAGE = ramp(64, 64)


@pytest.mark.parametrize(
    ("control", "code", "named"),
    [
        (ControlInput(model="tiny-sd15-depth", image=IMAGE), INVALID, "controls[0].model: tiny-sd15-depth is a ControlNet for"),
        (ControlInput(type="canny", image=IMAGE), NOT_FOUND, "controls[0].type: no canny ControlNet for"),
        (ControlInput(type="depht", image=IMAGE), INVALID, "controls[0].type: 'depht' is not one of depth, canny"),
        (ControlInput(model="nothing-here", image=IMAGE), NOT_FOUND, "controls[0].model: no controlnet model named 'nothing-here'"),
        (ControlInput(type="depth"), INVALID, "controls[0].image: is required"),
        (ControlInput(type="depth", image=IMAGE, strength=2.5), INVALID, "controls[0].strength: 2.5 is outside 0..2"),
        (ControlInput(type="depth", image=IMAGE, start=0.8, end=0.2), INVALID, "controls[0].start: start 0.8 and end 0.2"),
        (ControlInput(image=IMAGE), INVALID, "controls[0].type: give a type"),
    ],
)
def test_a_control_that_cannot_work_is_refused_naming_its_field(engine, control, code, named):
    with pytest.raises(ArtForgeError) as refused:
        engine.prepare(ImageRequest(prompt="x", model="tiny-sdxl", controls=[control]))
    assert refused.value.code == code and named in refused.value.message, refused.value.message


def test_more_controls_than_the_limit_are_refused(engine):
    with pytest.raises(ArtForgeError) as refused:
        engine.prepare(ImageRequest(prompt="x", model="tiny-sd15", controls=[depth()] * 5))
    assert refused.value.code == ErrorCode.INVALID_ARGUMENT and "controls: has 5; the limit is 4" in refused.value.message


def test_the_registry_lists_controlnets_with_their_type(engine):
    listed = {spec.name: spec for spec in engine.registry.list("controlnet")}
    assert set(listed) == set(FAMILIES.values())
    assert {spec.control_type for spec in listed.values()} == {"depth"}


# -- preprocessors ------------------------------------------------------------------------------


def a_square(size: int = 64) -> np.ndarray:
    picture = np.zeros((size, size, 3), np.float32)
    picture[16:48, 16:48] = 1.0
    return picture


def test_canny_of_a_drawn_square_is_its_outline():
    edges = canny(a_square())[..., 0]
    assert edges.shape == (64, 64) and set(np.unique(edges)) == {0.0, 1.0}
    ring = np.zeros((64, 64), bool)
    ring[14:50, 14:50] = True
    ring[18:46, 18:46] = False  # within two pixels of the square's border
    assert edges[ring].sum() >= 4 * 28, "the four sides are found"
    assert edges[~ring].sum() == 0, "nothing inside or outside the outline"


def test_scribble_and_lineart_read_a_layers_strokes_as_white_on_black():
    # A Krita layer: transparent, one painted line 1 pixel wide.
    layer = np.zeros((32, 32, 4), np.float32)
    layer[16, 4:28] = (0.2, 0.3, 0.9, 1.0)
    thick = scribble(layer)[..., 0]
    assert thick[15:18, 4:28].all() and thick.sum() == pytest.approx(3 * 24 + 2 * 3, abs=6), "thickened to 3 pixels"
    assert np.array_equal(lineart(layer)[..., 0], layer[..., 3]), "line art keeps the strokes as drawn"
    # Ink on paper (no alpha): dark lines become white.
    paper = np.ones((32, 32, 3), np.float32)
    paper[:, 10] = 0.0
    assert np.array_equal(lineart(paper)[..., 0] > 0.99, paper[..., 0] < 0.01)


def test_the_depth_model_gives_the_pictures_size_in_zero_to_one(tiny):
    estimate = DepthEstimator(tiny["tiny-depth"], "cpu").estimate(np.random.default_rng(2).random((48, 40, 3), dtype=np.float32))
    assert estimate.shape == (48, 40, 1) and estimate.dtype == np.float32
    assert estimate.min() >= 0.0 and estimate.max() <= 1.0 and estimate.max() - estimate.min() > 0.5


@pytest.mark.parametrize("preprocessor", ["canny", "scribble", "lineart", "depth"])
def test_a_preprocessed_control_steers_the_job(engine, preprocessor):
    plain = generate(engine, "tiny-sd15")
    control = ControlInput(type="depth", image=a_square(96), preprocessor=preprocessor)
    steered = generate(engine, "tiny-sd15", controls=[control])
    assert np.abs(steered - plain).mean() * 255 > 1.0
    as_given = generate(engine, "tiny-sd15", controls=[ControlInput(type="depth", image=a_square(96))])
    assert not np.array_equal(steered, as_given), "the preprocessor's image, not the picture, reached the ControlNet"


def test_a_preprocessor_that_cannot_run_is_refused_naming_it(tiny):
    unknown = ImageEngine(ModelRegistry(TINY_ROOT, [], {}, "torch"), Limits(), 2)
    with pytest.raises(ArtForgeError) as refused:
        unknown.prepare(ImageRequest(prompt="x", model="tiny-sd15", controls=[depth(preprocessor="hed")]))
    assert refused.value.code == INVALID and "controls[0].preprocessor: 'hed' is not one of canny" in refused.value.message
    no_depth_model = ImageEngine(ModelRegistry(TINY_ROOT, [], {"depth": "not-pulled"}, "torch"), Limits(), 2)
    with pytest.raises(ArtForgeError) as refused:
        no_depth_model.prepare(ImageRequest(prompt="x", model="tiny-sd15", controls=[depth(preprocessor="depth")]))
    assert refused.value.code == NOT_FOUND and "controls[0].preprocessor: no depth model named 'not-pulled'" in refused.value.message


def test_a_preprocess_job_returns_what_a_control_would_read(tiny):
    picture = a_square(96)
    engine = PreprocessEngine(ControlImages(ModelRegistry(TINY_ROOT, [], {"depth": "tiny-dpt-depth"}, "torch")))
    job = RecordingJob()
    edges = engine.run(engine.prepare(PreprocessRequest(picture, "canny")), job).images[0]
    assert job.started_with[0][:2] == ("canny", "opencv") and edges.provenance.width == 96
    assert np.array_equal(edges.pixels, canny(picture))
    estimated = engine.run(engine.prepare(PreprocessRequest(picture, "depth")), RecordingJob()).images[0]
    assert estimated.pixels.shape == (96, 96, 1) and estimated.provenance.model == "tiny-dpt-depth"
    assert engine.loaded_models() == {"tiny-dpt-depth"}
    assert engine.work(engine.prepare(PreprocessRequest(picture, "lineart"))).pixels == 96 * 96


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (PreprocessRequest(None, "canny"), INVALID, "image: is required"),
        (PreprocessRequest(np.zeros((8, 8, 3), np.float32), "hed"), INVALID, "preprocessor: 'hed' is not one of canny"),
        (PreprocessRequest(np.zeros((8, 8, 3), np.float32), "depth"), NOT_FOUND, "preprocessor: no depth model named 'not-pulled'"),
    ],
)
def test_a_preprocess_job_that_cannot_run_is_refused_naming_its_field(tiny, request_, code, message):
    engine = PreprocessEngine(ControlImages(ModelRegistry(TINY_ROOT, [], {"depth": "not-pulled"}, "torch")))
    with pytest.raises(ArtForgeError) as refused:
        engine.prepare(request_)
    assert refused.value.code == code and message in refused.value.message
