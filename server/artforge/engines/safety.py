"""The safety check: the NudeNet 320n detector (from the `nudenet` wheel) on every image result,
and a strong blur over the ones it flags.

The detector is a YOLOv8n model run on our own onnxruntime runtime; only its layouts are taken
from the package (its code is never imported):
- input `images`: 1 x 3 x 320 x 320 RGB in 0..1, the picture padded at the right or bottom with
  black to a square (letterbox) and scaled to 320 x 320 (bilinear; PIL's filter smooths when it
  shrinks, where NudeNet's OpenCV call samples);
- output `output0`: 1 x 22 x 2100 (one column per anchor over the 40x40, 20x20 and 10x10
  grids): rows 0..3 a box (centre x, centre y, width, height), rows 4..21 the scores of the 18
  classes in LABELS, already in 0..1.

Each anchor is given its best class, as NudeNet does; a class's score is the highest score among
the anchors it wins. Only the exposed-nudity classes in NSFW_LABELS can flag an image; faces,
feet, bellies, armpits, a male chest and covered body parts are reported but never flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from artforge.engines.base import ImageOutput
from artforge.errors import ArtForgeError, ErrorCode
from artforge.models.embedded import NUDENET, is_fetched
from artforge.runtimes.onnx import OnnxModel

log = logging.getLogger(__name__)

LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
NSFW_LABELS = frozenset({"FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED", "ANUS_EXPOSED"})
INPUT_SIZE = 320
DEFAULT_THRESHOLD = 0.4  # NudeNet itself keeps detections from 0.25; a little above, fewer false alarms
REPORT_FLOOR = 0.2  # classes scoring below this are left out of a verdict's labels (NudeNet's own floor)
BLUR_SIDE = 12  # a blurred image keeps this many cells on its long side, no more


@dataclass(frozen=True)
class SafetyVerdict:
    flagged: bool
    labels: list[tuple[str, float]] = field(default_factory=list)  # (label, score), best first, scores >= REPORT_FLOOR or the threshold


def _rgb(pixels: np.ndarray) -> np.ndarray:
    """float32 H x W x 3 in 0..1: gray repeated; an alpha channel is ignored, so content under it is checked too."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.clip(pixels[:, :, :3].astype(np.float32, copy=False), 0.0, 1.0)


def letterbox(pixels: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The detector's input: 1 x 3 x size x size, the picture padded with black at the right or bottom to a square."""
    from PIL import Image

    rgb = _rgb(pixels)
    height, width = rgb.shape[:2]
    side = max(height, width)
    square = np.zeros((side, side, 3), np.float32)
    square[:height, :width] = rgb
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(square[:, :, c])).resize((size, size), Image.Resampling.BILINEAR)) for c in range(3)
    ]
    return np.stack(planes)[None].astype(np.float32)


def class_scores(output: np.ndarray) -> dict[str, float]:
    """Per class, the highest score among the anchors whose best class it is (from 1 x 22 x N)."""
    scores = np.asarray(output)[0, 4:, :]  # classes x anchors
    if scores.shape[0] != len(LABELS):
        raise ArtForgeError(ErrorCode.INTERNAL, f"the NSFW detector gave {scores.shape[0]} classes; expected {len(LABELS)}")
    best = scores.argmax(axis=0)
    top = scores.max(axis=0)
    result: dict[str, float] = {}
    for class_id in np.unique(best):
        result[LABELS[int(class_id)]] = float(top[best == class_id].max())
    return result


def verdict(scores: dict[str, float], threshold: float) -> SafetyVerdict:
    """Flagged when an exposed-nudity class scores `threshold` or more."""
    flagged = any(score >= threshold for label, score in scores.items() if label in NSFW_LABELS)
    floor = min(REPORT_FLOOR, threshold)
    labels = sorted(((label, score) for label, score in scores.items() if score >= floor), key=lambda item: -item[1])
    return SafetyVerdict(flagged, labels)


def blur(pixels: np.ndarray) -> np.ndarray:
    """A blur that leaves nothing recognizable: area-average down to at most BLUR_SIDE cells on the long side,
    then smoothly back up. Same shape and dtype; an alpha channel is kept as it was."""
    from PIL import Image

    squeeze = pixels.ndim == 2
    image = pixels[:, :, None] if squeeze else pixels
    height, width, channels = image.shape
    scale = BLUR_SIDE / max(height, width)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    color = min(channels, 3)
    out = image.astype(np.float32, copy=True)
    for c in range(color):
        plane = Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32))
        small = plane.resize(small_size, Image.Resampling.BOX)
        out[:, :, c] = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))
    np.clip(out[:, :, :color], 0.0, 1.0, out=out[:, :, :color])
    out = out.astype(pixels.dtype, copy=False)
    return out[:, :, 0] if squeeze else out


class SafetyChecker:
    """The NSFW detector on one device; thread-safe (onnxruntime sessions may run concurrently)."""

    def __init__(self, models_dir: Path, threshold: float = DEFAULT_THRESHOLD, device: str = "cpu") -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"safety threshold: {threshold:g} is outside 0..1")
        if not is_fetched(NUDENET, models_dir):
            raise ArtForgeError(
                ErrorCode.FAILED_PRECONDITION,
                f"the safety check needs the NSFW detector in {NUDENET.folder(models_dir)}; run `artforge models fetch {NUDENET.name}`",
            )
        self.threshold = threshold
        self.model = OnnxModel(NUDENET.file(models_dir, "320n.onnx"), device)
        self._input = self.model.input_names[0]

    def scores(self, pixels: np.ndarray) -> dict[str, float]:
        """Per-class scores of one image (H x W x C float pixels in 0..1)."""
        return class_scores(self.model.run({self._input: letterbox(pixels)})[0])

    def check(self, pixels: np.ndarray) -> SafetyVerdict:
        return verdict(self.scores(pixels), self.threshold)

    def blur(self, pixels: np.ndarray) -> np.ndarray:
        return blur(pixels)


def apply_safety(checker: SafetyChecker, images: list[ImageOutput]) -> list[ImageOutput]:
    """Each image checked; flagged ones come back blurred with nsfw_blurred=True, the rest unchanged.

    Only "color" images are checked: derived maps (height, normal, roughness) of a flagged
    image are blurred with it, as they show the same picture.
    """
    flagged_batches: set[int] = set()
    checked: list[ImageOutput] = []
    for image in images:
        if image.role == "color":
            result = checker.check(image.pixels)
            if result.flagged:
                log.info(
                    "safety: blurred image %d (%s)", image.batch_index, ", ".join(f"{label} {score:.2f}" for label, score in result.labels)
                )
                flagged_batches.add(image.batch_index)
    for image in images:
        if image.batch_index in flagged_batches:
            checked.append(replace(image, pixels=checker.blur(image.pixels), nsfw_blurred=True))
        else:
            checked.append(image)
    return checked
