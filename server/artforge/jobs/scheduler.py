"""Running jobs: the queue (through its policy), one worker per runner slot, cancel, deadlines,
retention, and the drain at shutdown. The job store keeps what this holds in memory.

Each slot of the runner (a device here, or a cluster worker) has one worker coroutine: it takes
the next job the policy offers that suits the slot and has the runner run it. Only jobs in
flight are held here; a finished job is read back from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from artforge.engines.base import JobResult, Usage
from artforge.errors import ArtForgeError, ErrorCode, shown
from artforge.jobs.costs import CostModel
from artforge.jobs.events import Event, Finished, ImageChunk, JobState, Progress
from artforge.jobs.job import MAX_ATTEMPTS, Job
from artforge.jobs.observer import JobObserver, NoObserver
from artforge.jobs.queue import QueuePolicy
from artforge.jobs.quotas import QuotaExceeded, QuotaLedger
from artforge.jobs.runner import ImageFilter, Runner, WorkerLost
from artforge.jobs.store import JobStore, StoredJob
from artforge.users import User

log = logging.getLogger(__name__)

# The server's copy of a call's deadline starts when the request arrives, so it trails the
# client's by the transport latency: a call that ends this close to it ended by its deadline.
DEADLINE_SLACK_SECONDS = 0.25
# Finished jobs past their TTL and results over the byte cap are looked for this often.
SWEEP_SECONDS = 30.0
# Events of a finished job are read from the store this many at a time.
REPLAY_PAGE = 64
# Test-only: a job with this label kills the server (SIGKILL) each time it starts running, so
# tests can crash a worker mid-job the way a driver fault or the OOM killer would.
CRASH_LABEL_ENV = "ARTFORGE_TEST_CRASH_LABEL"


@dataclass
class JobSummary:
    """What GetJob, CancelJob and ListJobs show of a job, in flight or finished: never its
    request (prompts) or results."""

    id: str
    kind: str
    model: str
    label: str
    owner: str
    priority: int
    state: JobState
    position: int  # while queued
    events: int
    usage: Usage
    submitted_at: float
    started_at: float = 0.0
    finished_at: float = 0.0
    device: str = ""
    estimated_wait_seconds: float = 0.0  # while queued; 0: not known
    error_code: ErrorCode | None = None
    error_message: str = ""


def _summary(job: Job | StoredJob, finished: Event | None) -> JobSummary:
    done = finished if isinstance(finished, Finished) else None
    usage = done.usage if done else Usage()
    in_flight = isinstance(job, Job)
    queued = job.state is JobState.QUEUED
    if in_flight:
        started_at = job.started_at if not queued else 0.0
    else:
        started_at = job.submitted_at + usage.queued_seconds if done and usage.run_seconds else 0.0
    return JobSummary(
        job.id,
        job.kind,
        job.model,
        job.label,
        job.owner,
        job.priority,
        job.state,
        max(job.position, 0) if in_flight and queued else 0,
        job.visible if in_flight else job.events,
        usage,
        job.submitted_at,
        started_at,
        0.0 if in_flight else job.finished_at or 0.0,
        job.device if in_flight and job.state is JobState.RUNNING else "",
        job.estimated_wait_seconds if in_flight and queued else 0.0,
        done.error_code if done else None,
        done.error_message if done else "",
    )


@dataclass
class UserLoad:
    """A user's jobs in flight and device time, for GetServerStats."""

    queued: int
    running: int
    device_seconds_last_hour: float
    device_seconds_left: float  # the quota's bucket less the estimates of unfinished jobs
    device_seconds_charged: float  # since the server started: estimates corrected to measured


class Scheduler:
    def __init__(
        self,
        runner: Runner,
        store: JobStore,
        policy: QueuePolicy,
        *,
        max_queue: int,
        result_ttl_seconds: float,
        max_result_bytes: int,
        users: Callable[[str], User],
        costs: CostModel,
        image_filter: ImageFilter | None = None,
        observer: JobObserver | None = None,
    ) -> None:
        """`users`: a job owner's user (role, quotas); `costs`: device-seconds estimates, which
        the policy also uses; `image_filter` sees every image result before it is sent (the
        optional safety check); `observer` is told of every job's lifecycle (metrics)."""
        self.runner = runner
        self.store = store
        self.policy = policy
        self.users = users
        self.costs = costs
        self.quotas = QuotaLedger()
        self.observer = observer or NoObserver()
        self.charged: Counter[str] = Counter()  # device-seconds per user since the start, as the policy charged them
        self.max_queue = max_queue
        self.result_ttl_seconds = result_ttl_seconds
        self.max_result_bytes = max_result_bytes
        self.image_filter = image_filter
        self.jobs: dict[str, Job] = {}  # in flight: queued or running
        self.running: dict[str, Job] = {}  # by runner slot
        self._busy_since: dict[str, float] = {}  # device -> since when it runs jobs (monotonic)
        self.dispatching = False  # until dispatch(): jobs wait while the server loads its models
        self._readers: Counter[str] = Counter()  # watchers per job id: their results are not dropped
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._crash_label = os.environ.get(CRASH_LABEL_ENV, "")

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(slot), name=f"worker-{slot}") for slot in self.runner.slots]
        self._tasks.append(asyncio.create_task(self._sweeper(), name="retention"))

    def dispatch(self) -> None:
        """Start running queued jobs (the server is ready)."""
        self.dispatching = True
        self._wake.set()

    def hold(self) -> None:
        """Start no more jobs (the server is stopping); running ones go on."""
        self.dispatching = False

    # -- submitting and controlling jobs ----------------------------------------------------

    @property
    def queue_length(self) -> int:
        return len(self.policy)

    def submit(self, job: Job, stored: StoredJob, user: User) -> None:
        """Commit a new job to the store and queue it (RESOURCE_EXHAUSTED when the queue is full
        or the user is over a quota)."""
        if len(self.policy) >= self.max_queue:
            self.observer.refused(user.name, "max_queue")
            raise ArtForgeError(ErrorCode.RESOURCE_EXHAUSTED, f"the queue is full ({self.max_queue} jobs waiting); try again shortly")
        queued, _, pending = self._in_flight(user)
        waits = [other.estimated_wait_seconds for other in queued if other.estimated_wait_seconds]
        try:
            self.quotas.check(user, job.work.pixels, len(queued), pending, min(waits, default=None))
        except QuotaExceeded as refusal:
            self.observer.refused(user.name, refusal.quota)
            raise
        self.store.add(stored)
        self.queue(job)
        self.observer.submitted(user.name, job.kind, job.model)
        log.info("job %s queued: %s %s for %s %s", job.id, job.kind, job.model, user.name, shown(job.label))

    def queue(self, job: Job) -> None:
        """Queue a job the store already holds (a new one, or one resumed after a restart)."""
        self.jobs[job.id] = job
        self.policy.push(job)
        if job.deadline is not None:
            remaining = job.deadline - time.time()
            job.deadline_timer = asyncio.get_running_loop().call_later(max(0.0, remaining), self._expire, job)
        self._announce_positions()
        self._wake.set()

    def fail_unqueued(self, job: Job, code: ErrorCode, message: str) -> None:
        """End a stored job that will not run again (it crashed the server twice, or no longer checks)."""
        self.jobs[job.id] = job
        self._finish(job, JobResult(), code, message)

    def summary(self, job_id: str, caller: User) -> JobSummary:
        job = self.jobs.get(job_id)
        if job is not None:
            self._check_owner(job.owner, job_id, caller)
            return _summary(job, job.finished)
        stored = self._stored(job_id, caller)
        return _summary(stored, self.store.last_event(job_id))

    def cancel(self, job_id: str, caller: User) -> JobSummary:
        job = self.jobs.get(job_id)
        if job is not None:
            self._check_owner(job.owner, job_id, caller)
            by = "by the client" if job.owner == caller.name or not job.owner else f"by {caller.name} (admin)"
            self._cancel(job, JobState.CANCELLED, f"cancelled {by}")
        return self.summary(job_id, caller)

    def list(self, caller: User, all_users: bool, include_finished: bool, limit: int) -> tuple[list[JobSummary], int, int]:
        """Jobs in the order they will run (queued), then running, then finished ones if asked
        (newest first): the caller's own, or everyone's for an admin asking for all. With them,
        how many queued and running jobs of others were left out."""
        mine = (lambda owner: True) if all_users else (lambda owner: owner == caller.name)
        in_flight = [*self.policy, *self.running.values()]
        listed = [_summary(job, None) for job in in_flight if mine(job.owner)][:limit]
        if include_finished and len(listed) < limit:
            owner = None if all_users else caller.name
            listed += [_summary(stored, self.store.last_event(stored.id)) for stored in self.store.finished(limit - len(listed), owner)]
        others_queued = sum(1 for job in self.policy if not mine(job.owner))
        others_running = sum(1 for job in self.running.values() if not mine(job.owner))
        return listed, others_queued, others_running

    def _in_flight(self, user: User) -> tuple[list[Job], list[Job], float]:
        """A user's queued jobs, their running ones, and the estimated device-seconds of all of them."""
        mine = [job for job in self.jobs.values() if job.owner == user.name]
        queued = [job for job in mine if job.state is JobState.QUEUED]
        running = [job for job in mine if job.state is JobState.RUNNING]
        return queued, running, sum(self.costs.estimate(job) for job in queued + running)

    def load(self, user: User) -> UserLoad:
        queued, running, pending = self._in_flight(user)
        return UserLoad(
            len(queued),
            len(running),
            self.quotas.last_hour(user),
            self.quotas.device_seconds_left(user, pending),
            self.charged[user.name],
        )

    def owners(self) -> set[str]:
        """Users with jobs in flight."""
        return {job.owner for job in self.jobs.values()}

    async def watch(self, job_id: str, from_sequence: int, caller: User) -> AsyncIterator[tuple[int, float, Event]]:
        """A job's events from `from_sequence` on: live while it is in flight, from the store after.

        OUT_OF_RANGE (before any event) when `from_sequence` is past its end."""
        summary = self.summary(job_id, caller)
        last = summary.events - 1 if summary.state.finished else summary.events
        if from_sequence > last:
            so_far = "has finished with {} events" if summary.state.finished else "is running and has {} events so far"
            state = so_far.format(summary.events)
            message = f"from_sequence: {from_sequence} is past the end of job {job_id}, which {state}; ask for 0..{last}"
            raise ArtForgeError(ErrorCode.OUT_OF_RANGE, message)
        return self._watch(job_id, from_sequence)

    async def _watch(self, job_id: str, from_sequence: int) -> AsyncIterator[tuple[int, float, Event]]:
        self._readers[job_id] += 1
        try:
            job = self.jobs.get(job_id)
            if job is not None:
                async for item in job.watch(from_sequence):
                    yield item
                return
            sequence = from_sequence
            while page := self.store.events(job_id, sequence, REPLAY_PAGE):
                for sequence, elapsed, event in page:
                    if isinstance(event, ImageChunk):
                        event = dataclasses.replace(event, data=self.store.read_chunk(job_id, event))
                    yield sequence, elapsed, event
                sequence += 1
        finally:
            self._readers[job_id] -= 1
            if not self._readers[job_id]:
                del self._readers[job_id]

    def disconnected(self, job_id: str) -> None:
        """The submitting client went away (or its deadline passed) before the job finished."""
        job = self.jobs.get(job_id)
        if job is None or job.state.finished or job.detached:  # a server stopping drops calls; their jobs stay
            return
        if job.deadline is not None and time.time() >= job.deadline - DEADLINE_SLACK_SECONDS:
            self._cancel(job, JobState.DEADLINE_EXCEEDED, "the deadline passed")
        elif not job.keep_on_disconnect:
            self._cancel(job, JobState.CANCELLED, "the client disconnected")

    def _stored(self, job_id: str, caller: User) -> StoredJob:
        stored = self.store.job(job_id)
        if stored is None:
            kept = f"finished jobs are kept {self.result_ttl_seconds:g} s"
            raise ArtForgeError(ErrorCode.NOT_FOUND, f"job_id: no job {shown(job_id)} ({kept})")
        self._check_owner(stored.owner, job_id, caller)
        if stored.dropped:
            raise ArtForgeError(ErrorCode.NOT_FOUND, f"job_id: job {job_id} finished, but {stored.dropped}")
        return stored

    @staticmethod
    def _check_owner(owner: str, job_id: str, caller: User) -> None:
        if owner and caller.name != owner and not caller.is_admin:
            raise ArtForgeError(ErrorCode.PERMISSION_DENIED, f"job_id: job {job_id} belongs to another user")

    def _expire(self, job: Job) -> None:
        self._cancel(job, JobState.DEADLINE_EXCEEDED, "the deadline passed")

    def _cancel(self, job: Job, state: JobState, message: str) -> None:
        if not job.request_cancel(state, message):
            return
        log.info("job %s: %s", job.id, message)
        if self.policy.remove(job):  # never started: finish it now; a running one stops at its next token
            self._finish(job, JobResult())
            self._announce_positions()

    def _announce_positions(self) -> None:
        """Each queued job's place in the policy's order and its estimated wait: the device time
        of the jobs ahead and the rest of the running ones, spread over the devices; 0 unless
        every one of those is of a kind and model this server has measured."""
        queued = list(self.policy)
        now = time.time()
        known = all(self.costs.measured(job) for job in self.running.values())
        ahead = sum(max(self.costs.estimate(job) - (now - job.started_at), 0.0) for job in self.running.values())
        for position, job in enumerate(queued):
            job.announce_position(position, len(queued), ahead / len(self.runner.devices) if known else 0.0)
            known = known and self.costs.measured(job)
            ahead += self.costs.estimate(job)
        self.observer.queue_depths(dict(Counter(job.owner for job in queued)))

    # -- running ----------------------------------------------------------------------------

    async def _next_job(self, slot: str) -> Job:
        def runnable(job: Job) -> bool:
            idle = [other for other in self.runner.slots if other not in self.running]
            return self._runnable(job) and self.runner.suits(job, slot, idle)

        while not (self.dispatching and (job := self.policy.pop(runnable))):
            self._wake.clear()
            await self._wake.wait()
        self._wake.set()  # this slot is busy now: a job another idle slot left to it may suit that one
        job.charged = self.costs.estimate(job)
        self.charged[job.owner] += job.charged
        self._announce_positions()
        return job

    def _runnable(self, job: Job) -> bool:
        """Under its owner's running-jobs quota."""
        cap = self.users(job.owner).quota.max_running_jobs
        return not cap or sum(1 for other in self.running.values() if other.owner == job.owner) < cap

    async def _worker(self, slot: str) -> None:
        while True:
            await self.runner.ready(slot)
            job = await self._next_job(slot)
            job.device = self.runner.device_of(slot)
            job.state = JobState.RUNNING
            job.started_at = time.time()
            job.attempts += 1
            self.store.set_state(job.id, JobState.RUNNING, job.attempts)  # on disk first: a crash now counts
            if self._crash_label and job.label == self._crash_label:
                os.kill(os.getpid(), signal.SIGKILL)
            device = job.device
            if not self._running_on(device):
                self._busy_since[device] = time.monotonic()
            self.running[slot] = job
            self.observer.started(job.kind, job.model, device, job.started_at - job.submitted_at)
            try:
                result = await self.runner.run(slot, job, self.image_filter)
            except WorkerLost as lost:
                self._run_again(job, lost)
            except ArtForgeError as exc:
                self._finish(job, JobResult(), exc.code, exc.message)
            except Exception as exc:  # an engine bug or a device failure: report it, keep serving
                code = ErrorCode.RESOURCE_EXHAUSTED if "out of memory" in str(exc).lower() else ErrorCode.INTERNAL
                log.exception("job %s failed", job.id)
                self._finish(job, JobResult(), code, f"{type(exc).__name__}: {exc}")
            else:
                self._finish(job, result)
            finally:
                self.running.pop(slot, None)
                if not self._running_on(device) and (since := self._busy_since.pop(device, None)) is not None:
                    self.observer.device_busy(device, time.monotonic() - since)
                self._wake.set()  # a user under a running-jobs quota may start another

    def _running_on(self, device: str) -> bool:
        return any(self.runner.device_of(slot) == device for slot in self.running)

    def _run_again(self, job: Job, lost: WorkerLost) -> None:
        """The worker running `job` died: queue it again ahead of its user's other jobs, to run
        from the start on another worker, unless it has run out of attempts. The lost run is
        not charged to its owner."""
        if job.is_cancelled():
            self._finish(job, JobResult())
            return
        if job.attempts >= MAX_ATTEMPTS:
            message = f"the job's worker was lost {job.attempts} times ({lost}); it is not run again"
            self._finish(job, JobResult(), ErrorCode.ABORTED, message)
            return
        log.warning("job %s: worker %s was lost (%s); it runs again", job.id, lost.worker, lost.why)
        self.policy.settle(job, 0.0)
        self.charged[job.owner] -= job.charged
        why = f"the worker running this job was lost ({lost.worker}: {lost.why}); it starts again on another worker"
        job.append(Progress("restarting", message=why))
        job.state, job.started_at, job.position = JobState.QUEUED, 0.0, -1
        self.store.set_state(job.id, JobState.QUEUED, job.attempts)
        self.policy.push(job, ahead=True)
        self._announce_positions()

    def _finish(self, job: Job, result: JobResult, code: ErrorCode | None = None, message: str = "") -> None:
        if job.state.finished:  # stopped at shutdown before its engine returned
            return
        now = time.time()
        usage = result.usage
        usage.queued_seconds = max(0.0, (job.started_at or now) - job.submitted_at)
        usage.run_seconds = now - job.started_at if job.started_at else 0.0
        usage.device_seconds = usage.device_seconds or usage.run_seconds
        if job.is_cancelled():  # an accepted cancel wins, even over a job that just completed
            state = job.cancel_state
            code = ErrorCode.CANCELLED if state is JobState.CANCELLED else ErrorCode.DEADLINE_EXCEEDED
            message = job.cancel_message
        elif code is None:
            state = JobState.SUCCEEDED
        else:
            state = JobState.FAILED
        job.append(Finished(state, usage, result.text, result.finish_reason, code, message))
        if job.started_at:
            self._account(job, usage.device_seconds, learn=state is JobState.SUCCEEDED)
        self.observer.finished(
            job.owner,
            job.kind,
            job.model,
            state.name.lower(),
            usage.run_seconds,
            usage.time_to_first_token_seconds,
            usage.completion_tokens,
            len(result.images) if state is JobState.SUCCEEDED else 0,
        )
        job.request = None  # the payload (prompts, input images) is not kept past the finish
        if job.deadline_timer is not None:
            job.deadline_timer.cancel()
        self.store.after_commit(lambda: self._retire(job))
        done = f"{usage.completion_tokens} tokens" if job.kind == "text" else f"{job.results} images"
        log.info("job %s %s: %s in %.2f s %s", job.id, state.name.lower(), done, usage.run_seconds, message)

    def _account(self, job: Job, device_seconds: float, learn: bool) -> None:
        """Charge a finished job's measured device time: to its owner's quota, to the fair
        share (correcting the estimate charged at its start); learn estimates from it if it
        did all its work (`learn`: it succeeded)."""
        self.policy.settle(job, device_seconds)
        self.charged[job.owner] += device_seconds - job.charged
        self.quotas.charge(self.users(job.owner), device_seconds)
        if learn:
            self.costs.learn(job, device_seconds)

    def _retire(self, job: Job) -> None:
        """The finished event is on disk: the store answers for the job from now on."""
        self.jobs.pop(job.id, None)
        self._drop_over_cap()

    # -- retention ----------------------------------------------------------------------------

    async def _sweeper(self) -> None:
        while True:
            expired = self.store.expire(time.time() - self.result_ttl_seconds, keep=self._readers)
            if expired:
                log.info("forgot %d finished jobs older than %g s", len(expired), self.result_ttl_seconds)
            self._drop_over_cap()
            await asyncio.sleep(min(SWEEP_SECONDS, max(self.result_ttl_seconds, 1.0)))

    def _drop_over_cap(self) -> None:
        reason = f"its results were dropped to keep the server's stored results under {self.max_result_bytes} bytes (oldest first)"
        dropped = self.store.drop_over(self.max_result_bytes, keep=self._readers, reason=reason)
        if dropped:
            log.info("dropped the results of %d finished jobs to stay under %d bytes", len(dropped), self.max_result_bytes)

    # -- stopping -----------------------------------------------------------------------------

    async def drain(self, seconds: float, stop_now: asyncio.Event) -> None:
        """Stop starting jobs; let running ones finish for up to `seconds` (or until `stop_now`),
        then cancel them with a finished event. Queued jobs stay in the store for the next start;
        their watchers are told so (UNAVAILABLE) and can re-attach then."""
        self.hold()
        for job in list(self.policy):
            if job.deadline_timer is not None:
                job.deadline_timer.cancel()
            job.detach(f"the server is stopping; job {job.id} stays queued and runs when it is back: watch it again then")
        if self.running:
            log.info("draining: waiting up to %g s for %d running jobs", seconds, len(self.running))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until(lambda: not self.running or stop_now.is_set()), seconds)
        for job in list(self.running.values()):
            self._cancel(job, JobState.CANCELLED, f"the server stopped before the job finished (it waits {seconds:g} s for running jobs)")
        if self.running and not stop_now.is_set():  # engines stop at their next step or token
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until(lambda: not self.running or stop_now.is_set()), 30)
        for slot, job in list(self.running.items()):  # stopped at once, or an engine that did not stop
            self.running.pop(slot)
            self._finish(job, JobResult())

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """After drain(): stop the workers and the runner, and close the store."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runner.stop()
        self.store.close()
