"""What happens to a job, in order. The API turns these into artforge.v1.JobEvent messages."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from artforge.engines.base import Provenance, Usage
from artforge.errors import ErrorCode
from artforge.images import EncodedImage


class JobState(enum.Enum):
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5
    DEADLINE_EXCEEDED = 6

    @property
    def finished(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class Queued:
    position: int
    queue_length: int
    estimated_wait_seconds: float = 0.0  # 0: not known yet


@dataclass(frozen=True)
class Started:
    model: str
    backend: str
    device: str
    seed: int
    attempt: int = 1  # 2 when a server restart or a lost worker interrupted the first run
    worker: str = ""  # on a cluster: the worker that runs it
    reason: str = ""  # why this backend, when it is not the model's own


@dataclass(frozen=True)
class Progress:
    phase: str  # "loading_model", "exporting_model", "preprocessing", "generating", "postprocessing", "restarting"
    step: int = 0
    total_steps: int = 0
    message: str = ""
    preview: EncodedImage | None = None  # a small PNG


@dataclass(frozen=True)
class ImageHeader:
    """Starts one result; its bytes follow in ImageChunk events with the same result_index.

    `image` describes the result without its bytes: those are in the result's file."""

    result_index: int
    batch_index: int
    role: str
    image: EncodedImage  # data is empty
    total_bytes: int
    sha256: str
    provenance: Provenance
    nsfw_blurred: bool = False


@dataclass(frozen=True)
class ImageChunk:
    """`length` bytes of a result's file from `offset`. The log keeps `data` empty; the bytes
    are read from the file as the chunk is sent, so memory holds only chunks in flight."""

    result_index: int
    offset: int
    length: int
    data: bytes = b""


@dataclass(frozen=True)
class TextDelta:
    text: str
    completion_tokens: int


@dataclass(frozen=True)
class Finished:
    state: JobState
    usage: Usage
    text: str = ""
    finish_reason: str = ""
    error_code: ErrorCode | None = None
    error_message: str = ""


Event = Queued | Started | Progress | TextDelta | ImageHeader | ImageChunk | Finished
