"""A job: one request, its state and the ordered log of its events.

The log is what WatchJob replays. Every event goes to the job store first and is shown to
watchers once it is on disk, so a client never sees an event a crash could take back. While
the job is in flight its log is also kept here (image chunks without their bytes, which stay
in the result files); once it has finished, the scheduler lets go of it and the store
answers for it. Engines call the JobContext methods from a device thread; those hop onto the
event loop, which alone touches the log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from artforge.engines.base import Engine, ImageOutput, Usage, Work
from artforge.errors import ArtForgeError, ErrorCode
from artforge.images import EncodedImage, encode_output, encode_preview
from artforge.jobs.events import Event, Finished, ImageChunk, ImageHeader, JobState, Progress, Queued, Started, TextDelta
from artforge.jobs.store import JobStore, StoredJob

# The default, and the highest an artist may ask for; only admins go higher (a higher band).
DEFAULT_PRIORITY = 0
# A job whose run was cut this many times (a server crash or kill, a lost cluster worker) is not run again.
MAX_ATTEMPTS = 2


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


class Job:
    def __init__(
        self,
        stored: StoredJob,
        engine: Engine,
        request: Any,
        *,
        store: JobStore,
        chunk_bytes: int,
        loop: asyncio.AbstractEventLoop,
        events: list[tuple[float, Event]] | None = None,
    ) -> None:
        """`stored` is the job's row; `events` its log so far when it resumes after a restart."""
        self.id = stored.id
        self.kind = stored.kind
        self.model = stored.model
        self.label = stored.label
        self.owner = stored.owner
        self.priority = stored.priority
        self.output_format = stored.output_format
        self.submitted_at = stored.submitted_at  # unix time: elapsed times go on across restarts
        self.deadline = stored.deadline  # unix time by which the job must finish, or None
        self.attempts = stored.attempts
        self.results = stored.results
        self.engine = engine
        self.request = request  # dropped once the job has finished
        self.work = engine.work(request) if request is not None else Work(0.0)
        self.charged = 0.0  # device-seconds the queue policy charged its owner when it started
        self.store = store
        self.chunk_bytes = chunk_bytes
        self.keep_on_disconnect = False
        self.state = JobState.QUEUED
        self.device = ""
        self.position = -1  # last announced queue position
        self.estimated_wait_seconds = 0.0
        self.started_at = 0.0
        self.events: list[tuple[float, Event]] = list(events or [])  # (seconds since submission, event)
        self.visible = len(self.events)  # events on disk, which watchers may see
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.detached = ""  # why watchers must go: the server is stopping and the job stays queued
        self._loop = loop
        self._cancel = threading.Event()
        self.cancel_state = JobState.CANCELLED
        self.cancel_message = ""
        self._wakeups: set[asyncio.Event] = set()

    # -- the loop side --------------------------------------------------------------------

    def append(self, event: Event) -> None:
        """Record an event; watchers see it once the store has it on disk. Event-loop thread only.

        Nothing follows the finished event (an engine stopped at shutdown may still report)."""
        if self.state.finished:
            return
        sequence = len(self.events)
        elapsed = time.time() - self.submitted_at
        self.events.append((elapsed, event))
        if isinstance(event, Finished):
            self.state = event.state
        self.store.append(self.id, sequence, elapsed, event, self._publish)

    def _publish(self) -> None:
        self.visible = len(self.events)
        self._wake()

    def _wake(self) -> None:
        for wake in self._wakeups:
            wake.set()

    def detach(self, reason: str) -> None:
        """End every watcher's stream with UNAVAILABLE and `reason` (the job stays in the store)."""
        self.detached = reason
        self._wake()

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

    async def watch(self, from_sequence: int = 0) -> AsyncIterator[tuple[int, float, Event]]:
        """(sequence, elapsed, event) from `from_sequence` on, live, until the job finishes."""
        wake = asyncio.Event()
        self._wakeups.add(wake)
        try:
            sequence = from_sequence
            while True:
                while sequence < self.visible:
                    elapsed, event = self.events[sequence]
                    if isinstance(event, ImageChunk):
                        event = dataclasses.replace(event, data=self.store.read_chunk(self.id, event))
                    yield sequence, elapsed, event
                    if isinstance(event, Finished):
                        return
                    sequence += 1
                if self.detached:
                    raise ArtForgeError(ErrorCode.UNAVAILABLE, self.detached)
                wake.clear()
                await wake.wait()
        finally:
            self._wakeups.discard(wake)

    # -- the JobContext the engine sees, called from the device thread ----------------------

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def started(self, model: str, backend: str, seed: int, reason: str = "") -> None:
        self._post(Started(model, backend, self.device, seed, self.attempts, reason=reason))

    def progress(self, phase: str, step: int = 0, total: int = 0, message: str = "", preview: np.ndarray | None = None) -> None:
        self._post(Progress(phase, step, total, message, encode_preview(preview) if preview is not None else None))

    def image(self, output: ImageOutput) -> None:
        """Encode one result in the requested format, write it to its file, then queue its header
        and chunks (which name the file's bytes rather than hold them)."""
        encoded = encode_output(output, self.output_format)
        index = self.results
        self.results += 1
        self.store.write_result(self.id, index, encoded.data)
        size = len(encoded.data)
        shape = EncodedImage(b"", encoded.encoding, encoded.dtype, encoded.width, encoded.height, encoded.channels)
        self._post(ImageHeader(index, output.batch_index, output.role, shape, size, encoded.sha256, output.provenance, output.nsfw_blurred))
        for offset in range(0, size, self.chunk_bytes):
            self._post(ImageChunk(index, offset, min(self.chunk_bytes, size - offset)))

    def text(self, delta: str, completion_tokens: int) -> None:
        self._post(TextDelta(delta, completion_tokens))

    def _post(self, event: Event) -> None:
        self._loop.call_soon_threadsafe(self.append, event)

    def prepared(self, request: Any) -> None:
        """The request checked again after a restart: the job can run."""
        self.request = request
        self.work = self.engine.work(request)

    def last_position(self) -> int:
        """The last place in the queue announced before a restart (0 if none)."""
        return next((event.position for _, event in reversed(self.events) if isinstance(event, Queued)), 0)

    def announce_position(self, position: int, queue_length: int, estimated_wait_seconds: float) -> None:
        """A new place in the queue is an event; a new estimate alone is not (it changes often)."""
        self.estimated_wait_seconds = estimated_wait_seconds
        if position != self.position:
            self.position = position
            self.append(Queued(position, queue_length, estimated_wait_seconds))
