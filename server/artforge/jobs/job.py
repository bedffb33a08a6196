"""A job: one request, its state and the ordered log of its events.

The log is what WatchJob replays, so every event is kept until the job is dropped (the
scheduler drops finished jobs after the configured time). Engines call the JobContext
methods from a device thread; those hop onto the event loop, which alone touches the log.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from artforge.engines.base import Engine, ImageOutput, Usage
from artforge.errors import ArtForgeError, ErrorCode
from artforge.images import EncodedImage, encode_output, encode_png
from artforge.jobs.events import Event, Finished, ImageChunk, ImageHeader, JobState, Progress, Queued, Started, TextDelta

# The default, and for now the highest a caller may ask for: a caller may lower its jobs'
# priority, but not put them ahead of other callers' (until callers have roles).
DEFAULT_PRIORITY = 0


class Job:
    def __init__(
        self,
        kind: str,
        engine: Engine,
        request: Any,
        *,
        model: str,
        label: str = "",
        priority: int = DEFAULT_PRIORITY,
        keep_on_disconnect: bool = False,
        owner: str = "",
        output_format: str = "png8",
        chunk_bytes: int = 1 << 20,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.kind = kind
        self.engine = engine
        self.request = request
        self.model = model
        self.label = label
        self.priority = priority
        self.keep_on_disconnect = keep_on_disconnect
        self.owner = owner
        self.output_format = output_format
        self.chunk_bytes = chunk_bytes
        self.results = 0
        self.state = JobState.QUEUED
        self.device = ""
        self.position = -1  # last announced queue position
        self.submitted_at = time.monotonic()
        self.started_at = 0.0
        self.events: list[tuple[float, Event]] = []  # (seconds since submission, event)
        self.deadline: float | None = None  # time.monotonic() by which the job must finish
        self.deadline_timer: asyncio.TimerHandle | None = None
        self._loop = loop
        self._cancel = threading.Event()
        self.cancel_state = JobState.CANCELLED
        self.cancel_message = ""
        self._wakeups: set[asyncio.Event] = set()

    # -- the loop side --------------------------------------------------------------------

    def append(self, event: Event) -> None:
        """Record an event and wake the watchers. Event-loop thread only."""
        self.events.append((time.monotonic() - self.submitted_at, event))
        if isinstance(event, Finished):
            self.state = event.state
        for wake in self._wakeups:
            wake.set()

    def request_cancel(self, state: JobState, message: str) -> bool:
        """Ask the job to stop; the first reason wins. False if it had finished already."""
        if self.state.finished:
            return False
        if not self._cancel.is_set():
            self.cancel_state, self.cancel_message = state, message
            self._cancel.set()
        return True

    @property
    def finished(self) -> Finished | None:
        return self.events[-1][1] if self.events and isinstance(self.events[-1][1], Finished) else None

    @property
    def usage(self) -> Usage:
        finished = self.finished
        return finished.usage if finished else Usage()

    def check_replay(self, from_sequence: int) -> None:
        """OUT_OF_RANGE unless `from_sequence` is one of the job's events, or the next while it runs."""
        count = len(self.events)
        last = count - 1 if self.state.finished else count
        if from_sequence > last:
            state = f"has finished with {count} events" if self.state.finished else f"is running and has {count} events so far"
            message = f"from_sequence: {from_sequence} is past the end of job {self.id}, which {state}; ask for 0..{last}"
            raise ArtForgeError(ErrorCode.OUT_OF_RANGE, message)

    async def watch(self, from_sequence: int = 0) -> AsyncIterator[tuple[int, float, Event]]:
        """(sequence, elapsed, event) from `from_sequence` on, live, until the job finishes."""
        wake = asyncio.Event()
        self._wakeups.add(wake)
        try:
            sequence = from_sequence
            while True:
                while sequence < len(self.events):
                    elapsed, event = self.events[sequence]
                    yield sequence, elapsed, event
                    sequence += 1
                if self.state.finished:
                    return
                wake.clear()
                await wake.wait()
        finally:
            self._wakeups.discard(wake)

    # -- the JobContext the engine sees, called from the device thread ----------------------

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def started(self, model: str, backend: str, seed: int) -> None:
        self._loop.call_soon_threadsafe(self.append, Started(model, backend, self.device, seed))

    def progress(self, phase: str, step: int = 0, total: int = 0, message: str = "", preview: np.ndarray | None = None) -> None:
        encoded = None
        if preview is not None:
            height, width, channels = preview.shape
            encoded = EncodedImage(encode_png(preview, 8, {}), "png", "uint8", width, height, channels)
        self._loop.call_soon_threadsafe(self.append, Progress(phase, step, total, message, encoded))

    def image(self, output: ImageOutput) -> None:
        """Encode one result in the requested format and queue it as a header and its chunks."""
        encoded = encode_output(output, self.output_format)
        index = self.results
        self.results += 1
        events: list[Event] = [ImageHeader(index, output.batch_index, output.role, encoded, output.provenance, output.nsfw_blurred)]
        events += [ImageChunk(index, offset, data) for offset, data in encoded.chunks(self.chunk_bytes)]
        for event in events:
            self._loop.call_soon_threadsafe(self.append, event)

    def text(self, delta: str, completion_tokens: int) -> None:
        self._loop.call_soon_threadsafe(self.append, TextDelta(delta, completion_tokens))

    def announce_position(self, position: int, queue_length: int) -> None:
        if position != self.position:
            self.position = position
            self.append(Queued(position, queue_length))

    def error(self) -> tuple[ErrorCode | None, str]:
        finished = self.finished
        return (finished.error_code, finished.error_message) if finished else (None, "")
