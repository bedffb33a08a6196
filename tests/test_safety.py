"""The safety check with the real NudeNet 320n detector from the `nudenet` wheel.

What these tests cover, and what they do not: there is no NSFW picture in this repository, and
there will not be one, so nothing here shows that the detector catches nudity; that rests on
NudeNet's own training. What is covered, on the detector's real outputs: the input layout
(letterbox to 320 x 320), the output layout (1 x 22 x 2100 read as boxes and 18 class scores),
that benign pictures (gradients, drawn shapes, noise, a style-transfer result) score far below
the threshold and are not flagged, that only the exposed-nudity classes can flag, that the
threshold decides (a threshold placed between two real images' scores flags exactly the higher
one), and that flagged results are blurred beyond recognition and marked.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from artforge.config import Limits
from artforge.engines.base import ImageOutput, Provenance
from artforge.engines.safety import (
    DEFAULT_THRESHOLD,
    LABELS,
    NSFW_LABELS,
    SafetyChecker,
    apply_safety,
    blur,
    class_scores,
    letterbox,
    verdict,
)
from artforge.engines.stylize import StylizeEngine, StylizeRequest
from artforge.errors import ArtForgeError, ErrorCode
from artforge.models.embedded import NUDENET, STYLE_TRANSFER, fetch


@pytest.fixture(scope="module")
def safety_models(models_dir):
    fetch(NUDENET, models_dir, progress=False)
    return models_dir


@pytest.fixture(scope="module")
def checker(safety_models) -> SafetyChecker:
    return SafetyChecker(safety_models)


def drawing(height: int = 360, width: int = 480) -> np.ndarray:
    """A drawn picture: a house, a tree and a sun on a sky."""
    image = Image.new("RGB", (width, height), (120, 170, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 2 // 3, width, height), fill=(70, 140, 60))
    draw.rectangle((80, 150, 220, 260), fill=(190, 80, 60), outline=(40, 20, 20), width=4)
    draw.polygon([(70, 150), (150, 90), (230, 150)], fill=(120, 50, 40))
    draw.ellipse((360, 40, 430, 110), fill=(250, 220, 80))
    draw.rectangle((300, 170, 320, 250), fill=(100, 70, 40))
    draw.ellipse((260, 100, 360, 190), fill=(40, 110, 50))
    return np.asarray(image, dtype=np.float32) / 255


def gradient(height: int = 300, width: int = 400) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([x / width, y / height, 1 - x / width], axis=-1)


def checkerboard(height: int = 256, width: int = 256, square: int = 16) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    board = (((y // square) + (x // square)) % 2).astype(np.float32)
    return np.repeat(board[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def benign(models_dir) -> dict[str, np.ndarray]:
    fetch(STYLE_TRANSFER, models_dir, progress=False)
    engine = StylizeEngine(models_dir, Limits(), max_loaded=1)

    class Job:
        device = "cpu"

        def is_cancelled(self) -> bool:
            return False

        def started(self, model: str, backend: str, seed: int) -> None:
            pass

        def progress(self, *args, **kwargs) -> None:
            pass

    stylized = engine.run(engine.prepare(StylizeRequest(image=drawing(), style_index=19)), Job()).images[0].pixels
    rng = np.random.default_rng(0)
    return {
        "gradient": gradient(),
        "drawing": drawing(),
        "stylized drawing": stylized,
        "noise": rng.random((320, 320, 3), dtype=np.float32),
        "gray": np.full((200, 300, 1), 0.5, np.float32),
        "checkerboard": checkerboard(),
    }


def nsfw_max(scores: dict[str, float]) -> float:
    return max((score for label, score in scores.items() if label in NSFW_LABELS), default=0.0)


# -- the detector's input and output --------------------------------------------------------------


def test_letterbox_pads_right_and_bottom_with_black():
    image = np.ones((100, 200, 3), np.float32)  # wide: padded at the bottom
    x = letterbox(image)
    assert x.shape == (1, 3, 320, 320) and x.dtype == np.float32
    assert np.allclose(x[0, :, :158, :], 1.0, atol=1e-3)
    assert np.allclose(x[0, :, 162:, :], 0.0, atol=1e-3)
    tall = letterbox(np.ones((200, 100, 1), np.float32))  # tall and gray: padded at the right, gray repeated
    assert np.allclose(tall[0, :, :, :158], 1.0, atol=1e-3) and np.allclose(tall[0, :, :, 162:], 0.0, atol=1e-3)
    rgba = np.concatenate([np.full((64, 64, 3), 0.25, np.float32), np.zeros((64, 64, 1), np.float32)], axis=2)
    assert np.allclose(letterbox(rgba), 0.25, atol=1e-3)  # what lies under transparent pixels is checked too


def test_the_output_is_read_as_boxes_and_18_class_scores(checker, benign):
    output = checker.model.run({checker.model.input_names[0]: letterbox(benign["drawing"])})[0]
    assert output.shape == (1, 4 + len(LABELS), 40 * 40 + 20 * 20 + 10 * 10)
    scores = class_scores(output)
    assert scores and set(scores) <= set(LABELS)
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    # Rows 0..3 are box coordinates in 320-pixel units: reading them as scores would give values far above 1.
    assert output[0, :4].max() > 1.0


# -- decisions ------------------------------------------------------------------------------------


def test_benign_images_are_not_flagged(checker, benign):
    for name, pixels in benign.items():
        scores = checker.scores(pixels)
        assert nsfw_max(scores) < 0.5 * DEFAULT_THRESHOLD, (name, scores)
        result = checker.check(pixels)
        assert not result.flagged, (name, result)


def test_only_exposed_classes_flag():
    assert verdict({"FACE_FEMALE": 0.99, "FEET_EXPOSED": 0.95, "BELLY_EXPOSED": 0.9, "MALE_BREAST_EXPOSED": 0.9}, 0.4).flagged is False
    flagged = verdict({"FACE_FEMALE": 0.99, "BUTTOCKS_EXPOSED": 0.41}, 0.4)
    assert flagged.flagged and flagged.labels == [("FACE_FEMALE", 0.99), ("BUTTOCKS_EXPOSED", 0.41)]
    assert not verdict({"BUTTOCKS_EXPOSED": 0.39}, 0.4).flagged
    assert NSFW_LABELS <= set(LABELS)


def test_a_threshold_between_two_real_scores_flags_only_the_higher(safety_models, checker, benign):
    scores = {name: nsfw_max(checker.scores(pixels)) for name, pixels in benign.items()}
    high, low = max(scores, key=scores.get), min(scores, key=scores.get)
    assert scores[high] > 2 * scores[low] > 0
    between = SafetyChecker(safety_models, threshold=float(np.sqrt(scores[high] * scores[low])))
    assert between.check(benign[high]).flagged
    assert not between.check(benign[low]).flagged


def test_threshold_zero_flags_on_any_hint(safety_models, benign):
    # At 0 every anchor counts for its best class, and some anchor always favours an exposed
    # class a little: the strictest setting flags even these pictures, and says why.
    strict = SafetyChecker(safety_models, threshold=0.0)
    result = strict.check(benign["drawing"])
    assert result.flagged
    assert any(label in NSFW_LABELS for label, _ in result.labels)


# -- blurring ------------------------------------------------------------------------------------


def detail(img: np.ndarray) -> float:
    g = img[..., :3].mean(axis=2)
    return float(np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]).mean())


def test_blur_leaves_nothing_recognizable_and_keeps_shape_and_dtype():
    board = checkerboard()
    out = blur(board)
    assert out.shape == board.shape and out.dtype == board.dtype
    assert np.abs(out - board).mean() > 0.4  # every square is gone: all close to the average grey
    assert detail(out) < 0.02 * detail(board)
    picture = drawing(720, 960)
    blurred = blur(picture)
    assert blurred.shape == picture.shape
    assert detail(blurred) < 0.05 * detail(picture)
    # No outline survives: the drawing's edges jump by up to 0.8 from one pixel to the next, the
    # blurred one changes by less than 0.02 per pixel anywhere.
    assert max(np.abs(np.diff(picture, axis=a)).max() for a in (0, 1)) > 0.5
    assert max(np.abs(np.diff(blurred, axis=a)).max() for a in (0, 1)) < 0.02


def test_blur_keeps_alpha_and_works_on_gray():
    rgba = np.concatenate([checkerboard(), np.linspace(0, 1, 256, dtype=np.float32)[None, :, None].repeat(256, axis=0)], axis=2)
    out = blur(rgba)
    assert out.shape == rgba.shape and np.array_equal(out[:, :, 3], rgba[:, :, 3])
    gray = checkerboard()[:, :, 0]
    assert blur(gray).shape == gray.shape and detail(blur(gray)[..., None].repeat(3, axis=2)) < 0.02 * detail(checkerboard())


def image_output(pixels: np.ndarray, batch: int, role: str = "color") -> ImageOutput:
    return ImageOutput(pixels=pixels, provenance=Provenance(model="test"), role=role, batch_index=batch)


def test_apply_safety_blurs_and_marks_flagged_images_only(safety_models, checker, benign):
    scores = {name: nsfw_max(checker.scores(pixels)) for name, pixels in benign.items()}
    high, low = max(scores, key=scores.get), min(scores, key=scores.get)
    between = SafetyChecker(safety_models, threshold=float(np.sqrt(scores[high] * scores[low])))
    height_map = benign[high].mean(axis=2, keepdims=True)
    images = [image_output(benign[high], 0), image_output(height_map, 0, role="height"), image_output(benign[low], 1)]

    checked = apply_safety(between, images)
    assert [i.nsfw_blurred for i in checked] == [True, True, False]  # the derived map goes with its image
    assert np.array_equal(checked[0].pixels, blur(benign[high])) and checked[0].pixels.shape == benign[high].shape
    assert np.array_equal(checked[1].pixels, blur(height_map))
    assert checked[2] is images[2]
    assert checked[0].provenance == images[0].provenance and checked[1].role == "height"
    assert not images[0].nsfw_blurred  # the originals are left as they were

    untouched = apply_safety(checker, images)
    assert all(a is b for a, b in zip(untouched, images, strict=True))


# -- setup ----------------------------------------------------------------------------------------


def test_a_missing_detector_says_how_to_fetch_it(tmp_path):
    with pytest.raises(ArtForgeError) as caught:
        SafetyChecker(tmp_path)
    assert caught.value.code == ErrorCode.FAILED_PRECONDITION
    assert "artforge models fetch nudenet-320n" in caught.value.message


def test_a_threshold_outside_0_1_is_refused(safety_models):
    with pytest.raises(ArtForgeError) as caught:
        SafetyChecker(safety_models, threshold=1.5)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT and "0..1" in caught.value.message
