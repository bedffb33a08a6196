"""The facade the api calls: submit, watch, cancel, get, list, stats, info, models; and start,
drain, stop, and reloading the users.

The api hands a request over as the bytes it arrived as, with a reader that turns those bytes
into the engine's request: the job store keeps the bytes, so after a restart the same reader
and the same checks make the job ready to run again. Everything a caller may learn of the
server comes from here, and what it lists (schedulers, styles, limits, devices) from the
engines' own capabilities.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from artforge import __version__
from artforge.app import App
from artforge.engines.base import Engine
from artforge.engines.stylize import Style
from artforge.engines.text import TextTask
from artforge.errors import ArtForgeError, ErrorCode, invalid
from artforge.jobs.costs import CostModel
from artforge.jobs.events import Event, JobState
from artforge.jobs.job import DEFAULT_PRIORITY, MAX_ATTEMPTS, Job, new_job_id
from artforge.jobs.observer import JobObserver
from artforge.jobs.queue import FairShare, PriorityFifo, QueuePolicy
from artforge.jobs.runner import LocalRunner, Runner, WorkerStatus
from artforge.jobs.scheduler import JobSummary, Scheduler, UserLoad
from artforge.jobs.store import JobStore, StoredJob
from artforge.models.registry import ModelSpec
from artforge.users import User, Users

log = logging.getLogger(__name__)

RequestReader = Callable[[bytes], Any]  # a request's bytes -> the engine's request (INVALID_ARGUMENT when bad)


@dataclass
class SubmitOptions:
    priority: int = DEFAULT_PRIORITY
    keep_on_disconnect: bool = False
    label: str = ""
    output_format: str = "png8"


@dataclass
class ModelStatus:
    spec: ModelSpec
    loaded: bool
    is_default: bool
    context_length: int
    backend: str
    backend_reason: str


@dataclass
class UserStats:
    user: User
    load: UserLoad


@dataclass
class ServerStats:
    users: list[UserStats]
    queue_length: int
    running_jobs: int
    queue_policy: str
    caller: User
    workers: list[WorkerStatus] = field(default_factory=list)


# ListJobs returns at most this many jobs, whatever the caller asks.
MAX_LISTED_JOBS = 1000
DEFAULT_LISTED_JOBS = 100


@dataclass
class ServerInfo:
    version: str
    devices: list[WorkerStatus]  # on a cluster: its workers
    limits: dict[str, int | float]  # by the names of ServerInfo.limits in the API
    tasks: list[TextTask]
    default_text_model: str
    default_image_model: str
    schedulers: list[str]
    styles: list[Style]
    images_available: bool
    stylize_available: bool
    queue_length: int
    running_jobs: int
    loaded_models: list[ModelStatus] = field(default_factory=list)


class Service:
    def __init__(self, app: App, readers: Mapping[str, RequestReader], observer: JobObserver | None = None) -> None:
        """`readers`: for each job kind ("text", "image", "stylize", "preprocess"), how its request bytes read;
        `observer`: told of every job's lifecycle (the metrics)."""
        self.app = app
        self.config = app.config
        self.readers = readers
        self.observer = observer
        self.users = Users.from_config(app.config)
        self.engines: dict[str, Engine] = {engine.kind: engine for engine in app.engines}
        self.accepting = False
        self.stopping = False  # a stop was asked for: no job is taken or started from then on
        self._store: JobStore | None = None
        self._scheduler: Scheduler | None = None

    @property
    def scheduler(self) -> Scheduler:
        assert self._scheduler is not None, "the service has not started"
        return self._scheduler

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the job store, resume what it holds, start the workers; then accept jobs."""
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._store = JobStore(config.data_dir)
        costs = CostModel()
        runner = self._runner()
        await runner.start()
        self._scheduler = Scheduler(
            runner,
            self._store,
            self._policy(costs),
            max_queue=config.limits.max_queue,
            result_ttl_seconds=config.result_ttl_seconds,
            max_result_bytes=config.max_result_bytes,
            users=self.user,
            costs=costs,
            image_filter=self.app.safety_filter(),
            observer=self.observer,
        )
        self._scheduler.start()
        await self._resume()
        self.accepting = not self.stopping

    def _runner(self) -> Runner:
        """Jobs run on this process's devices, or on a Ray cluster's workers (`[cluster] engine = "ray"`)."""
        if self.config.cluster.engine == "ray":
            from artforge.cluster.dispatch import RayRunner  # ray, only where a cluster is configured

            return RayRunner(self.config, self.readers, in_flight=lambda: len(self.scheduler.jobs))
        return LocalRunner(self.app.devices, self.config.text.batch_size)

    def _policy(self, costs: CostModel) -> QueuePolicy:
        if self.config.queue == "fifo":
            return PriorityFifo()
        return FairShare(weight=lambda name: self.user(name).weight, estimate=costs.estimate)

    def user(self, name: str) -> User:
        return self.users.get(name)

    def reload_users(self) -> None:
        """Read the users again (SIGHUP): new tokens, roles, weights and quotas apply to the next
        call and the next turn in the queue; jobs in flight stay. A bad file keeps the old users."""
        try:
            users = Users.from_config(self.config)
        except ArtForgeError as error:
            log.error("kept the users as they were: %s", error.message)
            return
        self.users = users
        log.info("reloaded the users: %d", len(users))

    async def _resume(self) -> None:
        """Queue again the jobs that were queued or running when the server stopped: running ones
        first, then queued ones in the order the queue had last announced, so turns go on as
        they would have."""
        store = self._store
        resumed = []
        for stored in store.unfinished():
            job = self._job(stored, None, [(elapsed, event) for _, elapsed, event in store.events(stored.id)])
            if stored.state is JobState.RUNNING and stored.attempts >= MAX_ATTEMPTS:
                times = stored.attempts
                message = f"the server stopped {times} times while this job ran (a crash or a kill each time); it is not run again"
                log.warning("job %s: %s", job.id, message)
                self.scheduler.fail_unqueued(job, ErrorCode.ABORTED, message)
                continue
            try:
                job.prepared(await asyncio.to_thread(self._prepare, stored.kind, stored.request or b""))
            except ArtForgeError as error:
                self.scheduler.fail_unqueued(job, error.code, f"after a server restart the request no longer checks: {error.message}")
                continue
            if stored.state is JobState.RUNNING:
                store.set_state(job.id, JobState.QUEUED)
            resumed.append((stored.state is not JobState.RUNNING, job.last_position(), job))
        for was_queued, _, job in sorted(resumed, key=lambda entry: entry[:2]):  # stable: submission order breaks ties
            self.scheduler.queue(job)
            log.info("job %s resumed: it was %s", job.id, "queued" if was_queued else "running (it starts again)")

    async def preload(self) -> None:
        """Load the configured models where jobs will run (every device; a cluster's workers
        load them as they start)."""
        for name in self.config.preload:
            engine = self.app.image if any(spec.name == name for spec in self.app.registry.list("image")) else self.app.text
            try:
                await self.scheduler.runner.preload(engine, name)
            except Exception as exc:  # a missing preload model must not stop the server
                log.warning("could not preload %s: %s", name, exc)

    def ready(self) -> None:
        """Models are loaded: run jobs (resumed ones first, in their order)."""
        if not self.stopping:
            self.scheduler.dispatch()

    def refuse_new_jobs(self) -> None:
        """Take no new jobs and start no queued ones: called from the signal handler itself, so no
        queued job starts between the signal and the drain."""
        self.stopping = True
        self.accepting = False
        if self._scheduler is not None:
            self._scheduler.hold()

    async def drain(self, stop_now: asyncio.Event) -> None:
        """Refuse new jobs; let running ones finish for up to the drain time (or until `stop_now`)."""
        self.refuse_new_jobs()
        await self.scheduler.drain(self.config.drain_seconds, stop_now)

    async def stop(self) -> None:
        await self.scheduler.stop()

    # -- jobs -----------------------------------------------------------------------------------

    def _prepare(self, kind: str, request: bytes) -> Any:
        try:
            return self.engines[kind].prepare(self.readers[kind](request))
        except ArtForgeError:
            raise
        except Exception as exc:  # a check that failed on this request rather than refusing it
            log.exception("checking a %s request failed", kind)
            problem = f"could not be checked ({type(exc).__name__}: {exc}); the server's log has the details"
            raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"request: {problem}") from None

    def _max_priority(self, caller: User) -> int:
        return self.config.limits.max_priority if caller.is_admin else DEFAULT_PRIORITY

    async def submit(self, kind: str, request: bytes, options: SubmitOptions, caller: User, timeout: float | None) -> str:
        """Check a request (off the event loop: decoding images and tokenizing take time), commit
        it as a job and queue it; its id. `timeout`: seconds from now to its deadline."""
        self._check_accepting()
        lowest, highest = -self.config.limits.max_priority, self._max_priority(caller)
        if not lowest <= options.priority <= highest:
            why = "the range this server allows" if caller.is_admin else "an artist may lower priority to reorder their jobs, not raise it"
            raise invalid("options.priority", f"{options.priority} is outside {lowest}..{highest}: {why}")
        prepared = await asyncio.to_thread(self._prepare, kind, request)
        self._check_accepting()
        now = time.time()
        stored = StoredJob(
            id=new_job_id(),
            kind=kind,
            model=prepared.model,
            label=options.label,
            owner=caller.name,
            priority=options.priority,
            output_format=options.output_format,
            request=request,
            submitted_at=now,
            deadline=now + timeout if timeout is not None else None,
            state=JobState.QUEUED,
            attempts=0,
            events=0,
            results=0,
            result_bytes=0,
            finished_at=None,
            dropped=None,
        )
        job = self._job(stored, prepared)
        job.keep_on_disconnect = options.keep_on_disconnect
        self.scheduler.submit(job, stored, caller)
        return job.id

    def _job(self, stored: StoredJob, prepared: Any, events: list[tuple[float, Event]] | None = None) -> Job:
        engine, chunk_bytes, loop = self.engines[stored.kind], self.config.limits.chunk_bytes, asyncio.get_running_loop()
        return Job(stored, engine, prepared, store=self.scheduler.store, chunk_bytes=chunk_bytes, loop=loop, events=events)

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise ArtForgeError(ErrorCode.UNAVAILABLE, "the server is stopping and takes no new jobs; try again once it has restarted")

    async def watch(self, job_id: str, from_sequence: int, caller: User) -> AsyncIterator[tuple[int, float, Event]]:
        return await self.scheduler.watch(job_id, from_sequence, caller)

    def disconnected(self, job_id: str) -> None:
        self.scheduler.disconnected(job_id)

    def get(self, job_id: str, caller: User) -> JobSummary:
        return self.scheduler.summary(job_id, caller)

    def cancel(self, job_id: str, caller: User) -> JobSummary:
        """The job's owner, or an admin, cancels it."""
        return self.scheduler.cancel(job_id, caller)

    def list_jobs(self, caller: User, all_users: bool, include_finished: bool, limit: int) -> tuple[list[JobSummary], int, int]:
        """The caller's jobs (an admin's: everyone's, with `all_users`), and counts of the others'."""
        if all_users and not caller.is_admin:
            raise ArtForgeError(ErrorCode.PERMISSION_DENIED, f"all_users: only admins list other users' jobs; {caller.name} is an artist")
        if limit > MAX_LISTED_JOBS:
            raise invalid("limit", f"{limit} is over {MAX_LISTED_JOBS}")
        return self.scheduler.list(caller, all_users, include_finished, limit or DEFAULT_LISTED_JOBS)

    def stats(self, caller: User) -> ServerStats:
        """Per user: jobs in flight, device time, quota headroom; an artist sees only their own."""
        if caller.is_admin:
            names = dict.fromkeys([*(user.name for user in self.users), *sorted(self.scheduler.owners())])
            shown = [self.user(name) for name in names]
        else:
            shown = [caller]
        scheduler = self.scheduler
        rows = [UserStats(user, scheduler.load(user)) for user in shown]
        workers = scheduler.runner.workers(scheduler.running)
        return ServerStats(rows, scheduler.queue_length, len(scheduler.running), scheduler.policy.name, caller, workers)

    # -- what the server offers ---------------------------------------------------------------

    async def info(self, caller: User) -> ServerInfo:
        """What the server offers this caller: priorities and image sizes follow their role and quotas."""
        app, config, limits = self.app, self.config, self.config.limits
        pixels = min(limits.max_image_pixels, caller.quota.max_image_pixels or limits.max_image_pixels)
        # The first call renders the style previews (under a second); later ones find them made.
        styles = await asyncio.to_thread(app.stylize.styles)
        engine_limits = {name: value for engine in app.engines for name, value in engine.request_limits().items()}
        busy = self.scheduler.running
        return ServerInfo(
            version=__version__,
            devices=self.scheduler.runner.workers(busy),
            limits={
                "max_tokens": limits.max_tokens,
                "default_max_tokens": limits.default_max_tokens,
                "max_prompt_chars": limits.max_prompt_chars,
                "max_image_pixels": pixels,
                "max_steps": limits.max_steps,
                "max_batch": limits.max_batch,
                "max_queue": limits.max_queue,
                "chunk_bytes": limits.chunk_bytes,
                "max_request_bytes": limits.max_request_bytes,
                "max_priority": self._max_priority(caller),
                "min_priority": -limits.max_priority,
                "result_ttl_seconds": config.result_ttl_seconds,
                "max_result_bytes": config.max_result_bytes,
                "drain_seconds": config.drain_seconds,
                "max_history_messages": limits.max_history_messages,
                "max_history_chars": limits.max_history_chars,
                "max_name_chars": limits.max_name_chars,
                "max_label_chars": limits.max_label_chars,
                "max_concurrent_rpcs": limits.max_concurrent_rpcs,
                **engine_limits,
            },
            tasks=list(app.text.tasks.values()),
            default_text_model=app.registry.default_name("text"),
            default_image_model=app.registry.default_name("image"),
            schedulers=app.image.schedulers,
            styles=styles,
            images_available=bool(app.registry.list("image")),
            stylize_available=app.stylize.available(),
            queue_length=self.scheduler.queue_length,
            running_jobs=len(busy),
            loaded_models=self.models(None, only_loaded=True),
        )

    def models(self, kind: str | None, only_loaded: bool = False) -> list[ModelStatus]:
        app = self.app
        loaded = app.loaded_models()
        models = []
        for spec in app.registry.list(kind):
            is_loaded = spec.name in loaded
            if only_loaded and not is_loaded:
                continue
            context_length = app.text.context_length(spec) if is_loaded and spec.kind == "text" else 0
            backend, reason = app.backend_of(spec)
            is_default = spec.name == app.registry.default_name(spec.kind)
            models.append(ModelStatus(spec, is_loaded, is_default, context_length, backend, reason))
        return models
