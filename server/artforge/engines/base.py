"""What every engine sees of its job, and what it hands back.

Engines run on a device's worker thread. They report through a JobContext (never touching
the queue, the event log or gRPC) and return a JobResult; the scheduler does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np


class JobContext(Protocol):
    device: str

    def is_cancelled(self) -> bool:
        """True once the job was cancelled or its deadline passed: stop at the next token/step."""

    def started(self, model: str, backend: str, seed: int, reason: str = "") -> None:
        """`reason`: why `backend` when it is not the model's own (a job the ONNX graphs cannot run)."""

    def progress(self, phase: str, step: int = 0, total: int = 0, message: str = "", preview: np.ndarray | None = None) -> None:
        """`preview`: a small float32 H x W x 3 image in 0..1 (diffusion steps)."""

    def text(self, delta: str, completion_tokens: int) -> None: ...


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token_seconds: float = 0.0
    tokens_per_second: float = 0.0
    queued_seconds: float = 0.0
    run_seconds: float = 0.0
    # The device time charged for it: its run time, or its share of the steps of a batch it
    # ran in (text jobs decoded together). 0 from an engine: the scheduler uses run_seconds.
    device_seconds: float = 0.0


@dataclass
class Provenance:
    """What produced an image: returned as fields and written into PNG text chunks."""

    model: str
    seed: int = 0
    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 0
    scheduler: str = ""
    width: int = 0
    height: int = 0
    guidance_scale: float = 0.0
    strength: float = 0.0
    tiling_x: bool = False
    tiling_y: bool = False
    loras: list[tuple[str, float]] = field(default_factory=list)
    style: str = ""
    controls: list[tuple[str, float, float, float, str]] = field(default_factory=list)  # model, strength, start, end, preprocessor


@dataclass
class ImageOutput:
    """One image of a result: float32 pixels, H x W x C (1, 3 or 4 channels), values in 0..1."""

    pixels: np.ndarray
    provenance: Provenance
    role: str = "color"  # "color" (the image, the albedo of a texture), "height", "normal", "roughness"
    batch_index: int = 0
    nsfw_blurred: bool = False


@dataclass
class JobResult:
    text: str = ""
    finish_reason: str = ""
    usage: Usage = field(default_factory=Usage)
    images: list[ImageOutput] = field(default_factory=list)


@dataclass(frozen=True)
class Work:
    """What a checked request asks of a device, known before it runs. `units`: a measure the
    scheduler learns seconds per unit of from finished jobs (to estimate waits and charge
    users fairly); `pixels`: an image job's output pixels, batch included (per-user quotas)."""

    units: float
    pixels: int = 0


class Engine(Protocol):
    kind: str

    def prepare(self, request: Any) -> Any:
        """Check a request and make it ready to run (INVALID_ARGUMENT naming the field), before it queues."""

    def work(self, request: Any) -> Work:
        """The work a prepared request asks for."""

    def run(self, request: Any, job: JobContext) -> JobResult: ...

    def batches(self, request: Any, device: str) -> bool:
        """The job would join a batch of jobs running on `device` (text decoding), so it may
        start beside them rather than wait for the device."""

    def request_limits(self) -> dict[str, int]:
        """The limits this engine checks requests against, by their ServerInfo.limits names."""

    def preload(self, model: str, device: str) -> None: ...

    def loaded_models(self) -> set[str]: ...
