"""The job queue: priority then FIFO, one worker per device, cancel, deadlines, retention.

Each device has one worker coroutine and one thread: the worker takes the next job from the
shared queue and runs its engine on the device's thread, so a model stays on the thread (and
the GPU) it was loaded on while the event loop keeps serving other calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from artforge.config import Limits
from artforge.engines.base import ImageOutput, JobResult
from artforge.errors import ArtForgeError, ErrorCode, shown
from artforge.jobs.events import Finished, JobState
from artforge.jobs.job import Job

log = logging.getLogger(__name__)

# The server's copy of a call's deadline starts when the request arrives, so it trails the
# client's by the transport latency: a call that ends this close to it ended by its deadline.
DEADLINE_SLACK_SECONDS = 0.25


ImageFilter = Callable[[list[ImageOutput]], list[ImageOutput]]


def _execute(job: Job, image_filter: ImageFilter | None) -> JobResult:
    """On the device thread: run the engine, filter (safety) and encode its images."""
    result = job.engine.run(job.request, job)
    images = image_filter(result.images) if image_filter and result.images else result.images
    if not job.is_cancelled():
        for output in images:
            job.image(output)
    return result


class Scheduler:
    def __init__(self, devices: list[str], limits: Limits, result_ttl_seconds: float, image_filter: ImageFilter | None = None) -> None:
        """`image_filter` sees every image result before it is sent (the optional safety check)."""
        self.devices = devices
        self.image_filter = image_filter
        self.limits = limits
        self.result_ttl_seconds = result_ttl_seconds
        self.jobs: dict[str, Job] = {}
        self.running: dict[str, Job] = {}
        self._queue: list[Job] = []
        self._counter = 0
        self._order: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._threads = {d: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"artforge-{d}") for d in devices}
        self._workers: list[asyncio.Task] = []

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._worker(d), name=f"worker-{d}") for d in self.devices]

    async def stop(self) -> None:
        for job in list(self.jobs.values()):
            self._cancel(job, JobState.CANCELLED, "the server is shutting down")
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for thread in self._threads.values():
            thread.shutdown(wait=True, cancel_futures=True)

    async def run_on_device(self, device: str, fn: Any, *args: Any) -> Any:
        """Run `fn` on a device's thread (for preloading models where jobs will use them)."""
        return await asyncio.get_running_loop().run_in_executor(self._threads[device], fn, *args)

    # -- submitting and controlling jobs ----------------------------------------------------

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def submit(self, job: Job, timeout: float | None = None) -> Job:
        """Queue a job; `timeout` (seconds from now) is its deadline, queued or running."""
        if len(self._queue) >= self.limits.max_queue:
            raise ArtForgeError(
                ErrorCode.RESOURCE_EXHAUSTED, f"the queue is full ({self.limits.max_queue} jobs waiting); try again shortly"
            )
        self.jobs[job.id] = job
        self._counter += 1
        self._order[job.id] = self._counter
        self._queue.append(job)
        self._queue.sort(key=lambda j: (-j.priority, self._order[j.id]))
        if timeout is not None:
            job.deadline = time.monotonic() + timeout
            job.deadline_timer = asyncio.get_running_loop().call_later(max(0.0, timeout), self._expire, job, timeout)
        self._announce_positions()
        self._wake.set()
        log.info("job %s queued: %s %s %s", job.id, job.kind, job.model, shown(job.label))
        return job

    def get(self, job_id: str, caller: str = "") -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            kept = f"finished jobs are kept {self.result_ttl_seconds:g} s"
            raise ArtForgeError(ErrorCode.NOT_FOUND, f"job_id: no job {shown(job_id)} ({kept})")
        if job.owner and caller != job.owner:
            raise ArtForgeError(ErrorCode.PERMISSION_DENIED, f"job_id: job {job_id} belongs to another caller")
        return job

    def cancel(self, job_id: str, caller: str = "", message: str = "cancelled by the client") -> Job:
        job = self.get(job_id, caller)
        self._cancel(job, JobState.CANCELLED, message)
        return job

    def disconnected(self, job: Job) -> None:
        """The submitting client went away (or its deadline passed) before the job finished."""
        if job.deadline is not None and time.monotonic() >= job.deadline - DEADLINE_SLACK_SECONDS:
            self._cancel(job, JobState.DEADLINE_EXCEEDED, "the deadline passed")
        elif not job.keep_on_disconnect:
            self._cancel(job, JobState.CANCELLED, "the client disconnected")

    def _expire(self, job: Job, timeout: float) -> None:
        self._cancel(job, JobState.DEADLINE_EXCEEDED, f"the deadline of {timeout:.3g} s passed")

    def _cancel(self, job: Job, state: JobState, message: str) -> None:
        if not job.request_cancel(state, message):
            return
        log.info("job %s: %s", job.id, message)
        if job in self._queue:  # never started: finish it now; a running one stops at its next token
            self._queue.remove(job)
            self._finish(job, JobResult())
            self._announce_positions()

    def _announce_positions(self) -> None:
        for position, job in enumerate(self._queue):
            job.announce_position(position, len(self._queue))

    # -- running ----------------------------------------------------------------------------

    async def _next_job(self) -> Job:
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        job = self._queue.pop(0)
        self._announce_positions()
        return job

    async def _worker(self, device: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._next_job()
            job.device = device
            job.state = JobState.RUNNING
            job.started_at = time.monotonic()
            self.running[device] = job
            try:
                result = await loop.run_in_executor(self._threads[device], _execute, job, self.image_filter)
            except ArtForgeError as exc:
                self._finish(job, JobResult(), exc.code, exc.message)
            except Exception as exc:  # an engine bug or a device failure: report it, keep serving
                code = ErrorCode.RESOURCE_EXHAUSTED if "out of memory" in str(exc).lower() else ErrorCode.INTERNAL
                log.exception("job %s failed", job.id)
                self._finish(job, JobResult(), code, f"{type(exc).__name__}: {exc}")
            else:
                self._finish(job, result)
            finally:
                self.running.pop(device, None)

    def _finish(self, job: Job, result: JobResult, code: ErrorCode | None = None, message: str = "") -> None:
        now = time.monotonic()
        usage = result.usage
        usage.queued_seconds = (job.started_at or now) - job.submitted_at
        usage.run_seconds = now - job.started_at if job.started_at else 0.0
        if job.is_cancelled():  # an accepted cancel wins, even over a job that just completed
            state = job.cancel_state
            code = ErrorCode.CANCELLED if state is JobState.CANCELLED else ErrorCode.DEADLINE_EXCEEDED
            message = job.cancel_message
        else:
            state = JobState.SUCCEEDED if code is None else JobState.FAILED
        job.append(Finished(state, usage, result.text, result.finish_reason, code, message))
        if job.deadline_timer is not None:
            job.deadline_timer.cancel()
        self._order.pop(job.id, None)
        asyncio.get_running_loop().call_later(self.result_ttl_seconds, self.jobs.pop, job.id, None)
        done = f"{usage.completion_tokens} tokens" if job.kind == "text" else f"{job.results} images"
        log.info("job %s %s: %s in %.2f s %s", job.id, state.name.lower(), done, usage.run_seconds, message)
