"""Jobs on worker threads, their results applied on Blender's main thread from bpy.app.timers.

One job per key at a time: the kind ("concept", "projection", "describe", "blockout", "connection"), or for
textures the kind and the object (texture_key), so several objects get textures at once. The
worker only talks to the server and fills a JobState; `tick()`, the timer, is the only place that
touches bpy data for a job: streamed text, previews, and the result once the job has finished.
Tests (and any host without an event loop, like the bpy module) call `tick()` themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import bpy
from bpy.app.handlers import persistent

from artforge_client.job_state import JobSnapshot, JobState, Phase, describe_error

TICK_SECONDS = 0.1


@dataclass
class Job:
    kind: str
    state: JobState = field(default_factory=JobState)
    # Main thread: called with every new snapshot while the job runs, then once more when it has
    # finished; returns the sentence to show when the job is done (None: the state's message).
    update: Callable[[Job, JobSnapshot], str | None] | None = None
    stream: object = None  # the JobStream, set by the worker, read for previews
    request: object = None  # what the worker sends, where an operator keeps it (a projection's, with its depth)
    applied_revision: int = -1
    done_message: str = ""  # what the panel shows after the job has finished
    failed: bool = False


_jobs: dict[str, Job] = {}
_threads: list[threading.Thread] = []


def texture_key(uid: int) -> str:
    """The key of the texture job of the object with this session_uid."""
    return f"texture {uid}"


def running_textures() -> int:
    return sum(1 for key, job in _jobs.items() if key.startswith("texture ") and job.state.snapshot().phase.active)


def get(kind: str) -> Job | None:
    return _jobs.get(kind)


def active(kind: str) -> bool:
    job = _jobs.get(kind)
    return job is not None and job.state.snapshot().phase.active


def start(kind: str, label: str, work: Callable[[Job], None], update: Callable[[Job, JobSnapshot], str | None] | None = None) -> Job | None:
    """Run `work(job)` on a worker thread (it must leave job.state finished, as run_stream does).
    None when a job of this kind is still running."""
    if active(kind):
        return None
    job = Job(kind, update=update)
    job.state.begin(label)
    _jobs[kind] = job
    thread = threading.Thread(target=_run, args=(job, work), name=f"artforge-{kind}", daemon=True)
    _threads.append(thread)
    thread.start()
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_SECONDS, persistent=True)
    return job


def _run(job: Job, work: Callable[[Job], None]) -> None:
    try:
        work(job)
    except Exception as error:  # run_stream never raises; this catches work done before it (opening a client)
        job.state.fail(describe_error(error, ""))
    finally:
        if not job.state.snapshot().phase.finished:
            job.state.fail("The job ended without a result: try again.")


def cancel(kind: str) -> bool:
    job = _jobs.get(kind)
    return job is not None and job.state.request_cancel()


def cancel_all() -> None:
    """File closed or add-on disabled: stop every job and forget them, so nothing is applied to
    datablocks that are gone."""
    for job in _jobs.values():
        job.state.request_cancel()
    _jobs.clear()


def join_threads(timeout: float = 5.0) -> None:
    """Wait for the workers (after cancel_all) so none outlives the add-on."""
    for thread in _threads:
        thread.join(timeout)
    _threads[:] = [t for t in _threads if t.is_alive()]


def tick() -> float | None:
    """The timer: apply what changed; keeps running while any job is active."""
    for job in list(_jobs.values()):
        snapshot = job.state.snapshot()
        if snapshot.revision == job.applied_revision:
            continue
        job.applied_revision = snapshot.revision
        message = None
        try:
            if job.update is not None:
                message = job.update(job, snapshot)
        except Exception as error:  # a result that cannot be applied is a message, not a traceback in a timer
            message, job.failed = f"Could not apply the result: {describe_error(error, '')}", True
        if snapshot.phase.finished:
            job.failed = job.failed or snapshot.phase is not Phase.SUCCEEDED
            job.done_message = message or snapshot.message or snapshot.phase.value.capitalize()
    _redraw()
    return TICK_SECONDS if any(j.state.snapshot().phase.active for j in _jobs.values()) else None


def _redraw() -> None:
    window_manager = bpy.context.window_manager
    for window in window_manager.windows if window_manager else ():
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "NODE_EDITOR", "IMAGE_EDITOR", "TEXT_EDITOR", "PREFERENCES"):
                area.tag_redraw()


@persistent
def _on_load_post(*_args: object) -> None:
    cancel_all()


def register() -> None:
    bpy.app.handlers.load_post.append(_on_load_post)


def unregister() -> None:
    cancel_all()
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    join_threads()
