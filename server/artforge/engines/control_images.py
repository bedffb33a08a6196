"""Control images made on the server from a picture (Control.preprocessor), before a job runs.

- canny: OpenCV's Canny edges of the picture, white on black;
- scribble: the strokes of a drawn layer, white on black and thickened, as scribble
  ControlNets were trained on;
- lineart: the lines of a drawing, white on black, keeping their softness;
- depth: a depth-estimation model's estimate, near bright (artforge.runtimes.depth).

A drawn layer's strokes are where it is painted: its alpha when it has one that is not opaque
everywhere (a Krita layer on transparency), otherwise where it is dark (ink on paper).

ControlImages makes them for both engines that need them (image jobs' controls, preprocess
jobs), so the depth model is loaded once per device whichever asked first.
"""

from __future__ import annotations

import numpy as np

from artforge.engines.pbr import LUMA_WEIGHTS
from artforge.images import resize, to_rgb
from artforge.models.registry import ModelRegistry, ModelSpec
from artforge.runtimes.depth import DepthEstimator
from artforge.runtimes.loaded import LoadedModels

PREPROCESSORS = ("canny", "scribble", "lineart", "depth")
# Canny's hysteresis thresholds on 8-bit gradients: the pair most ControlNet front ends default to.
CANNY_LOW, CANNY_HIGH = 100, 200
SCRIBBLE_WIDTH = 3  # pixels a stroke grows to, at least


def luminance(pixels: np.ndarray) -> np.ndarray:
    """H x W lightness in 0..1 (as artforge.engines.pbr reads it), alpha ignored."""
    return (to_rgb(pixels)[0] @ LUMA_WEIGHTS).astype(np.float32)


def strokes(pixels: np.ndarray) -> np.ndarray:
    """H x W in 0..1: how much each pixel is drawn on (see the module's docstring)."""
    alpha = to_rgb(pixels)[1]
    if alpha is not None and alpha.min() < 1.0:
        return alpha[..., 0]
    return 1.0 - luminance(pixels)


def canny(pixels: np.ndarray) -> np.ndarray:
    import cv2

    gray = np.round(luminance(pixels) * 255).astype(np.uint8)
    return (cv2.Canny(gray, CANNY_LOW, CANNY_HIGH) / 255.0).astype(np.float32)[..., None]


def scribble(pixels: np.ndarray) -> np.ndarray:
    import cv2

    drawn = (strokes(pixels) > 0.5).astype(np.uint8)
    kernel = np.ones((SCRIBBLE_WIDTH, SCRIBBLE_WIDTH), np.uint8)
    return cv2.dilate(drawn, kernel).astype(np.float32)[..., None]


def lineart(pixels: np.ndarray) -> np.ndarray:
    return strokes(pixels).astype(np.float32)[..., None]


class ControlImages:
    """The preprocessors, with the depth model kept loaded (one per device)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._estimators: LoadedModels[DepthEstimator] = LoadedModels(1)

    def depth_model(self, field: str) -> ModelSpec:
        """The registered depth model the depth preprocessor uses; NOT_FOUND naming `field` without one."""
        return self.registry.get("", "depth", field)

    def make(
        self, preprocessor: str, pixels: np.ndarray, width: int, height: int, device: str, depth_model: ModelSpec | None
    ) -> np.ndarray:
        """H x W x 1 in 0..1 at `width` x `height`: what `preprocessor` makes of `pixels`."""
        if preprocessor == "depth":
            assert depth_model is not None, "a depth preprocessor is prepared with its model"
            estimator = self._estimators.get(device, depth_model.name, lambda: DepthEstimator(depth_model.path, device))
            return resize(estimator.estimate(pixels), width, height)
        made = {"canny": canny, "scribble": scribble, "lineart": lineart}[preprocessor]
        return made(resize(pixels, width, height))  # edges and strokes at the size the job sees them

    def loaded_models(self) -> set[str]:
        return self._estimators.loaded_names()
