"""A running job as the UI sees it: a small thread-safe state machine, and errors as sentences.

The worker thread feeds it (`run_stream` does the whole loop: submit, apply every JobEvent,
cancel, map failures); the host's main thread (a `bpy.app.timers` callback in Blender, a Qt
timer in Krita) polls `snapshot()`, drains streamed text with `take_new_text()`, and asks to
stop with `request_cancel()`. Shared by both plugins.

    idle -> submitting -> queued(position, estimated wait) -> running(progress 0..1, message)
                                           -> succeeded | failed(message) | cancelled

When the server goes away mid-job the stream re-attaches (artforge_client.JobStream): the
message says "Reconnecting..." meanwhile, and the phase stays. If the restarted server runs the
job again from the start (a `started` event with attempt > 1), the text so far is dropped, the
progress starts again, and a running job may be queued again before that.

Once a job has finished, later updates are ignored: a stream whose job failed yields the
finished event and then raises ArtForgeError, and the second report must not overwrite the first.

Needs grpcio and protobuf importable: each plugin puts its bundled wheels on sys.path before
importing this module.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc

from artforge_client import ArtForgeError, JobStream
from artforge_client.v1 import jobs_pb2

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    IDLE = "idle"
    SUBMITTING = "submitting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)

    @property
    def active(self) -> bool:
        return self in (Phase.SUBMITTING, Phase.QUEUED, Phase.RUNNING)


# Where each phase may go next; anything else is a stale or out-of-order update and is ignored.
_NEXT = {
    Phase.IDLE: {Phase.SUBMITTING},
    Phase.SUBMITTING: {Phase.QUEUED, Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED},
    Phase.QUEUED: {Phase.QUEUED, Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED},
    Phase.RUNNING: {Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED},
    Phase.SUCCEEDED: {Phase.SUBMITTING},
    Phase.FAILED: {Phase.SUBMITTING},
    Phase.CANCELLED: {Phase.SUBMITTING},
}

_PHASE_MESSAGES = {
    jobs_pb2.JobProgress.PHASE_LOADING_MODEL: "Loading the model",
    jobs_pb2.JobProgress.PHASE_EXPORTING_MODEL: "Preparing the model (first use only, can take minutes)",
    jobs_pb2.JobProgress.PHASE_GENERATING: "Generating",
    jobs_pb2.JobProgress.PHASE_POSTPROCESSING: "Finishing",
}


@dataclass(frozen=True)
class JobSnapshot:
    """One consistent view for the UI; `revision` grows with every change, so a timer can skip redraws."""

    phase: Phase
    revision: int
    label: str = ""
    job_id: str = ""
    queue_position: int | None = None
    estimated_wait_seconds: float | None = None  # while queued, from the queued event; None: not known
    progress: float = 0.0  # 0..1 while running
    message: str = ""  # what to show under the progress bar, or the failure sentence
    cancel_requested: bool = False
    result: Any = None  # whatever the worker handed to succeed(), for the main thread to apply


class JobState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = JobSnapshot(Phase.IDLE, 0)
        self._text: list[str] = []  # streamed text not yet taken by the main thread
        self._text_void = False  # the job started again since the main thread last took text
        self._reconnected = False  # the stream re-attached: a running job may be queued again
        self._again = False  # this run is a restarted server's second one: its messages say so
        self._max_tokens: int | None = None
        self._canceller: Callable[[], None] | None = None

    # -- main thread --------------------------------------------------------------------------

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return self._snapshot

    def take_text(self) -> str:
        """Text streamed since the last call (text jobs), in order; for a host that drops it.
        A host that shows the text uses take_new_text(), which says when to clear it."""
        return self.take_new_text()[0]

    def take_new_text(self) -> tuple[str, bool]:
        """(text streamed since the last call, restarted). `restarted` is True when the job ran
        again from the start since then (the server restarted): the text shown so far is void,
        and `text` is the new attempt's beginning. One call, so that no text falls between."""
        with self._lock:
            text, restarted = "".join(self._text), self._text_void
            self._text, self._text_void = [], False
            return text, restarted

    def begin(self, label: str = "", max_tokens: int | None = None) -> bool:
        """Start a new job (idle or finished -> submitting). `max_tokens` lets text progress show.
        False while another job is active: one job per state."""
        with self._lock:
            if self._snapshot.phase.active:
                return False
            self._snapshot = JobSnapshot(Phase.SUBMITTING, self._snapshot.revision + 1, label=label, message="Sending the request")
            self._text, self._max_tokens, self._canceller = [], max_tokens, None
            self._text_void = self._reconnected = self._again = False
            return True

    def request_cancel(self) -> bool:
        """Ask the running job to stop (Cancel button, file closed, add-on disabled). Returns at once;
        the phase becomes CANCELLED when the worker sees the stream end. False if nothing is active."""
        with self._lock:
            if not self._snapshot.phase.active or self._snapshot.cancel_requested:
                return False
            self._update(cancel_requested=True, message="Cancelling")
            canceller = self._canceller
        if canceller is not None:
            canceller()  # outside the lock: it may make the worker report at once
        return True

    # -- worker thread ------------------------------------------------------------------------

    @property
    def cancel_requested(self) -> bool:
        with self._lock:
            return self._snapshot.cancel_requested

    def attach_canceller(self, canceller: Callable[[], None]) -> None:
        """What request_cancel() calls to stop the job; it must not block (JobStream.disconnect).
        Called at once if a cancel was already requested."""
        with self._lock:
            self._canceller = canceller
            already = self._snapshot.cancel_requested
        if already:
            canceller()

    def queued(self, position: int, job_id: str = "", estimated_wait_seconds: float = 0.0) -> bool:
        """The job waits with `position` jobs ahead; `estimated_wait_seconds` is the server's guess
        of when it starts (JobQueued.estimated_wait_seconds: 0 when it has none yet)."""
        wait = estimated_wait_seconds if math.isfinite(estimated_wait_seconds) and estimated_wait_seconds > 0 else None
        message = queue_message(position, wait)
        queued = {"queue_position": position, "estimated_wait_seconds": wait, "message": message}
        with self._lock:
            if self._snapshot.phase is Phase.RUNNING and self._reconnected:
                # Not stale: the server restarted and queued the interrupted job again.
                self._update(phase=Phase.QUEUED, progress=0.0, **queued)
                return True
            return self._move_locked(Phase.QUEUED, job_id=job_id, **queued)

    def started(self, message: str = "Running", job_id: str = "") -> bool:
        with self._lock:
            self._reconnected = False
            return self._move_locked(Phase.RUNNING, progress=0.0, message=message, job_id=job_id)

    def restarted(self, job_id: str = "") -> bool:
        """The job runs again from the start (the server restarted while it ran): what it wrote so far is void."""
        with self._lock:
            self._reconnected = False
            message = "Running again (the server restarted)"
            if not self._move_locked(Phase.RUNNING, progress=0.0, message=message, job_id=job_id):
                return False
            self._text, self._text_void, self._again = [], True, True
            return True

    def reconnecting(self, message: str) -> bool:
        """The server went away and the stream is re-attaching: show `message`; the phase stays."""
        with self._lock:
            if not self._snapshot.phase.active:
                return False
            self._reconnected = True
            self._update(message=message)
            return True

    def progressed(self, fraction: float, message: str | None = None) -> bool:
        fraction = min(max(fraction, 0.0), 1.0)
        with self._lock:
            message = self._snapshot.message if message is None else self._running(message)
            return self._move_locked(Phase.RUNNING, progress=fraction, message=message)

    def add_text(self, text: str, completion_tokens: int = 0) -> bool:
        with self._lock:
            if not self._move_locked(Phase.RUNNING, message=self._running("Writing")):
                return False
            self._text.append(text)
            if self._max_tokens and completion_tokens:
                self._update(progress=min(completion_tokens / self._max_tokens, 1.0))
            return True

    def succeed(self, result: Any = None, message: str = "Done") -> bool:
        return self._move(Phase.SUCCEEDED, progress=1.0, message=message, result=result)

    def fail(self, message: str) -> bool:
        return self._move(Phase.FAILED, message=message)

    def cancelled(self, message: str = "Cancelled") -> bool:
        return self._move(Phase.CANCELLED, message=message)

    def apply_event(self, event: jobs_pb2.JobEvent, address: str = "", result: Any = None) -> bool:
        """One JobEvent from a JobStream; `result` is handed to succeed() on a successful finish."""
        match event.WhichOneof("event"):
            case "queued":
                return self.queued(event.queued.position, event.job_id, event.queued.estimated_wait_seconds)
            case "started":
                if event.started.attempt > 1:
                    return self.restarted(event.job_id)
                where = f" on {event.started.device}" if event.started.device else ""
                return self.started(f"Running{where}", event.job_id)
            case "progress":
                progress = event.progress
                fraction = progress.step / progress.total_steps if progress.total_steps else 0.0
                message = progress.message or _PHASE_MESSAGES.get(progress.phase, "Working")
                if progress.total_steps:
                    # A share, not "step/total": the server counts the steps it runs, which some
                    # schedulers make one more than the artist asked for, and img2img fewer.
                    message = f"{message} {round(fraction * 100)}%"
                return self.progressed(fraction, message)
            case "text":
                return self.add_text(event.text.text, event.text.completion_tokens)
            case "finished":
                return self._finish(event.finished, address, result)
        return False  # image chunks and headers: JobStream reassembles them; nothing to show

    def _finish(self, finished: jobs_pb2.JobFinished, address: str, result: Any) -> bool:
        if finished.state == jobs_pb2.JOB_STATE_SUCCEEDED:
            return self.succeed(result)
        if finished.state == jobs_pb2.JOB_STATE_CANCELLED:
            return self.cancelled()
        code = _code_from_number(finished.error.code)
        if finished.state == jobs_pb2.JOB_STATE_DEADLINE_EXCEEDED:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
        return self.fail(status_sentence(code, finished.error.message, address))

    # -- internals ----------------------------------------------------------------------------

    def _running(self, message: str) -> str:
        # A bar that went back to 0 or a text that started over needs its reason in view, and
        # "Running again" itself lasts only until the first token or step.
        return f"{message} (again: the server restarted)" if self._again else message

    def _move(self, phase: Phase, **changes: Any) -> bool:
        with self._lock:
            return self._move_locked(phase, **changes)

    def _move_locked(self, phase: Phase, **changes: Any) -> bool:
        current = self._snapshot.phase
        if phase not in _NEXT[current]:
            return False
        if not changes.get("job_id"):
            changes.pop("job_id", None)  # events without an id keep the one already known
        if phase is not Phase.QUEUED:
            # A place and a wait belong to a queued job only; a progress or text event may be
            # the first news that it started.
            changes.update(queue_position=None, estimated_wait_seconds=None)
        self._update(phase=phase, **changes)
        return True

    def _update(self, **changes: Any) -> None:
        self._snapshot = replace(self._snapshot, **changes, revision=self._snapshot.revision + 1)


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)  # round() takes halves to even: 150 s would read "2 min", as 90 s does


def duration_words(seconds: float) -> str:
    """A duration (finite, in seconds) as an artist reads it, as precise as an estimate deserves:
    "8 s", "45 s", "2 min", "1 h 20 min". Anything above 0 is at least "1 s"."""
    seconds = max(seconds, 0.0)
    if seconds < 9.5:
        return f"{max(_half_up(seconds), 1) if seconds > 0 else 0} s"
    if seconds < 57.5:
        return f"{_half_up(seconds / 5) * 5} s"
    if seconds < 59.5 * 60:
        return f"{_half_up(seconds / 60)} min"
    hours, minutes = divmod(_half_up(seconds / 300) * 5, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def queue_message(position: int, estimated_wait_seconds: float | None = None) -> str:
    """What a queued job shows: its place, and when the server expects it to start if it knows."""
    place = "Next in the queue" if position == 0 else f"Waiting in the queue: {position} job{'s' if position != 1 else ''} ahead"
    return f"{place}, about {duration_words(estimated_wait_seconds)}" if estimated_wait_seconds else place


def _code_from_number(number: int) -> grpc.StatusCode:
    return next((code for code in grpc.StatusCode if code.value[0] == number), grpc.StatusCode.UNKNOWN)


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


# How the server begins a quota refusal (RESOURCE_EXHAUSTED): "quota max_queued_jobs: alice may
# have 2 jobs queued at once and has 2; a place frees when one of them starts, in about 20 s (or is
# cancelled)". The sentence names the quota and says when it frees, so it is shown as it is.
QUOTA_PREFIX = "quota "


def status_sentence(code: grpc.StatusCode, message: str, address: str) -> str:
    """One sentence an artist can act on, for a gRPC status and the server's own sentence."""
    detail = _sentence(message)
    match code:
        case grpc.StatusCode.UNAVAILABLE:
            return f"Cannot reach the ArtForge server at {address}: is it running?"
        case grpc.StatusCode.UNAUTHENTICATED:
            return f"The ArtForge server at {address} did not accept the token: check the token in the plugin's server settings."
        case grpc.StatusCode.PERMISSION_DENIED:
            return f"The token is not allowed to do this on the ArtForge server at {address}: ask whoever runs it for a token that is."
        case grpc.StatusCode.DEADLINE_EXCEEDED:
            return "The server did not finish in time: try again, or ask for less (fewer steps, a smaller size, fewer tokens)."
        case grpc.StatusCode.CANCELLED:
            return "Cancelled."
        case grpc.StatusCode.INVALID_ARGUMENT | grpc.StatusCode.FAILED_PRECONDITION | grpc.StatusCode.OUT_OF_RANGE:
            return f"The server refused the request: {detail}" if detail else "The server refused the request."
        case grpc.StatusCode.NOT_FOUND:
            return f"Not found on the server: {detail}" if detail else "The server does not have that model."
        case grpc.StatusCode.RESOURCE_EXHAUSTED:
            if detail.lower().startswith(QUOTA_PREFIX):
                # Not "too busy": the artist is at a limit set for them, which a prefix would blur.
                return detail
            return f"The server is too busy right now: {detail}" if detail else "The server is too busy right now: try again shortly."
        case grpc.StatusCode.UNIMPLEMENTED:
            return "The server does not support this request: is it an older ArtForge version?"
        case grpc.StatusCode.DATA_LOSS:
            return f"The result arrived damaged: {detail} Try again." if detail else "The result arrived damaged: try again."
    return f"The server failed: {detail}" if detail else f"The server failed ({code.name})."


def describe_error(error: BaseException, address: str) -> str:
    """Any exception from a client call as one sentence for the artist (never a traceback)."""
    if isinstance(error, ArtForgeError):
        return status_sentence(error.code, error.message, address)
    return f"Unexpected error: {type(error).__name__}: {error}" if str(error) else f"Unexpected error: {type(error).__name__}."


def run_stream(state: JobState, start: Callable[[], JobStream], address: str, result: Callable[[JobStream], Any] | None = None) -> None:
    """The worker thread's whole job: submit with `start()`, apply every event, honour cancel
    requests, and leave `state` finished whatever happens. Never raises.

    `result(stream)` builds what succeed() hands the main thread (for example stream.images);
    it runs on the worker, before the finished event is applied, and raises ValueError with a
    sentence for the artist when what came back cannot be used. The caller calls begin() first.

    The stream (a JobStream, or a wrapper that iterates events and has `disconnect()` and a
    settable `on_reconnecting`) re-attaches by itself when the server goes away mid-job; its
    hook puts "Reconnecting..." in the state meanwhile."""
    try:
        if state.cancel_requested:
            state.cancelled()
            return
        stream = start()
        # While the stream re-attaches after losing the server, the artist reads why it waits.
        stream.on_reconnecting = state.reconnecting
        # Dropping the call is local and instant, and the server cancels a job whose caller left.
        state.attach_canceller(stream.disconnect)
        for event in stream:
            value = None
            if event.WhichOneof("event") == "finished" and result is not None and event.finished.state == jobs_pb2.JOB_STATE_SUCCEEDED:
                try:
                    value = result(stream)
                except ValueError as error:
                    state.fail(str(error))
                    return
            state.apply_event(event, address, value)
        if not state.snapshot().phase.finished:
            state.fail("The server ended the job without a result: try again.")
    except ArtForgeError as error:
        if error.code is grpc.StatusCode.CANCELLED and state.cancel_requested:
            state.cancelled()
        elif error.code is grpc.StatusCode.UNAVAILABLE and state.snapshot().job_id:
            # The server took the job, then went away and did not come back while the stream
            # tried to re-attach: not the "is it running?" of one never reached.
            state.fail(f"Lost the ArtForge server at {address} while the job ran: it stopped or restarted. Try again once it is back.")
        else:
            state.fail(describe_error(error, address))
    except Exception as error:  # the artist gets a sentence; the console keeps the traceback
        log.exception("ArtForge job failed")
        state.fail(describe_error(error, address))
