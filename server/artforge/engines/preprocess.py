"""The preprocess engine: a control image made from a picture, returned on its own.

What GenerateImage's controls do first with Control.preprocessor, as a job of its own, so an
artist sees the control image before using it (Krita's "from canvas" makes a layer of it). A job
like the others: queued fairly, charged by its pixels, kept through a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from artforge.engines.base import ImageOutput, JobContext, JobResult, Provenance, Work
from artforge.engines.control_images import PREPROCESSORS, ControlImages
from artforge.errors import invalid, shown
from artforge.models.registry import ModelSpec

# A 512 x 512 picture is this much of a unit of work: Canny is milliseconds, a depth model about
# one UNet step's worth, so the scheduler learns the real cost from finished jobs.
UNIT_PIXELS = 512 * 512


@dataclass
class PreprocessRequest:
    """A preprocess job as the API hands it over: the picture decoded, the rest unchecked."""

    image: np.ndarray | None = None  # float32 H x W x C in 0..1
    preprocessor: str = ""


@dataclass(frozen=True)
class PreparedPreprocess:
    image: np.ndarray
    preprocessor: str
    depth_model: ModelSpec | None

    @property
    def model(self) -> str:
        """What makes the image: the depth model's name, or the preprocessor's."""
        return self.depth_model.name if self.depth_model is not None else self.preprocessor


class PreprocessEngine:
    kind = "preprocess"

    def __init__(self, control_images: ControlImages) -> None:
        self.control_images = control_images

    def request_limits(self) -> dict[str, int]:
        return {}

    def batches(self, request: PreparedPreprocess, device: str) -> bool:
        return False

    def prepare(self, request: PreprocessRequest) -> PreparedPreprocess:
        if request.image is None:
            raise invalid("image", "is required: the picture to make a control image from")
        if request.preprocessor not in PREPROCESSORS:
            raise invalid("preprocessor", f"{shown(request.preprocessor)} is not one of {', '.join(PREPROCESSORS)}")
        depth_model = self.control_images.depth_model("preprocessor") if request.preprocessor == "depth" else None
        return PreparedPreprocess(request.image, request.preprocessor, depth_model)

    def work(self, request: PreparedPreprocess) -> Work:
        pixels = int(request.image.shape[0] * request.image.shape[1])
        return Work(pixels / UNIT_PIXELS, pixels)

    def run(self, request: PreparedPreprocess, job: JobContext) -> JobResult:
        job.started(request.model, "torch" if request.depth_model is not None else "opencv", 0)
        height, width = request.image.shape[:2]
        job.progress("preprocessing", message=f"{request.preprocessor} on {width}x{height}")
        pixels = self.control_images.make(request.preprocessor, request.image, width, height, job.device, request.depth_model)
        if job.is_cancelled():
            return JobResult()
        provenance = Provenance(model=request.model, width=width, height=height)
        return JobResult(images=[ImageOutput(pixels, provenance)])

    def preload(self, model: str, device: str) -> None:
        """Nothing to load ahead: the depth model loads on its first job, and stays."""

    def loaded_models(self) -> set[str]:
        return self.control_images.loaded_models()
