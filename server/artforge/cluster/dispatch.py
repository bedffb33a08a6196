"""Running jobs on a Ray cluster: the gateway's side of the ArtForge workers.

The gateway keeps everything a client talks to (TLS, tokens, deadlines, the fair queue, quotas,
the job store, metrics) and hands each job to a worker only when one is free, so the queue's
order holds. A slot here is a place for one running job; slot i may take a job while the
deployment has more than i running workers. A job goes through a streaming DeploymentHandle
call named by its model (Serve's router prefers a worker that holds it); its events come back
as the engine reports them.

A worker that dies mid-job (its process, or its node) ends the call with a RayActorError: the
scheduler queues the job again and it runs from the start on another worker. The deployment
outlives the gateway: a restarted gateway finds the running application and its workers.

With `max_workers`, the gateway scales the deployment itself through Serve's external scaler
API: Serve's own autoscaling counts requests at the workers, and the gateway sends a worker one
job at a time, so the backlog it would scale on is in the gateway's queue, not at the workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ray
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import RequestCancelledError
from ray.util.state import list_actors

from artforge.cluster.worker import DEPLOYMENT, Failed, Hello, model_id, worker_deployment
from artforge.config import Config
from artforge.engines.base import Engine, JobResult
from artforge.errors import ArtForgeError, ErrorCode
from artforge.jobs.events import Started
from artforge.jobs.runner import RECENT_MODELS, ImageFilter, WorkerLost, WorkerStatus, store_images

if TYPE_CHECKING:
    from artforge.jobs.job import Job

log = logging.getLogger(__name__)

# How often the gateway asks Serve how many workers run, and checks a running job for a cancel.
POLL_SECONDS = 1.0
CANCEL_POLL_SECONDS = 0.05


@dataclasses.dataclass
class _Seen:
    """A worker as the gateway knows it from the jobs it ran."""

    hello: Hello
    models: OrderedDict[str, None] = dataclasses.field(default_factory=OrderedDict)


class RayRunner:
    """Jobs on the workers of a Ray Serve application (see `artforge.cluster.worker`)."""

    def __init__(self, config: Config, readers: Mapping[str, Callable[[bytes], Any]], in_flight: Callable[[], int]) -> None:
        """`readers`: for each job kind, how its request bytes read (the workers read them too);
        `in_flight`: the gateway's jobs queued or running (what autoscaling follows)."""
        self.config = config
        self.readers = readers
        self.in_flight = in_flight
        self.cluster = config.cluster
        self.slots = [f"ray-{index}" for index in range(max(self.cluster.workers, self.cluster.max_workers))]
        self.devices = self.slots  # a worker is one device (its name is known once it runs a job)
        self._target = self.cluster.initial_workers  # the worker count last asked of Serve
        self._below_since: float | None = None  # since when fewer workers would do
        self._dashboard = ""
        self._live = 0  # running workers, as Serve last said
        self._replicas: dict[str, tuple[str, str]] = {}  # alive workers: replica id -> (node id, node address)
        self._live_changed = asyncio.Event()
        self._seen: dict[str, _Seen] = {}  # by replica id
        self._handle: Any = None
        self._poller: asyncio.Task | None = None

    async def start(self) -> None:
        """Join the cluster; deploy the workers, or find those a previous gateway deployed. Jobs
        wait in the queue until workers run (deploying takes a while: each loads its models)."""
        try:
            await asyncio.to_thread(self._join)
        except Exception as exc:  # no cluster there, or another Ray version: say so, not a traceback
            problem = f"could not join the Ray cluster at {self.cluster.address!r} ({_first_line(exc)})"
            raise ArtForgeError(ErrorCode.UNAVAILABLE, f"[cluster] address: {problem}") from None
        self._poller = asyncio.create_task(self._poll(), name="ray-workers")

    def _join(self) -> None:
        # SIGTERM is the gateway's signal to drain; Ray's own handler would log it as a crash.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        context = ray.init(address=self.cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        self._dashboard = context.dashboard_url
        serve.start(http_options={"location": "NoServer"})  # clients talk to the gateway, never to Serve

    def _deploy(self) -> Any:
        """A handle on the workers: those running already, or a new deployment of them."""
        cluster = self.cluster
        application = serve.status().applications.get(cluster.app_name)
        if application is not None and application.status in ("RUNNING", "DEPLOYING"):
            log.info("found the workers of application %r on the Ray cluster at %s", cluster.app_name, cluster.address)
            deployment = application.deployments.get(DEPLOYMENT)
            self._target = deployment.replica_states.get("RUNNING", 0) if deployment else self._target
            return serve.get_deployment_handle(DEPLOYMENT, cluster.app_name)
        log.info("deploying %d ArtForge workers (application %r) on the Ray cluster", cluster.initial_workers, cluster.app_name)
        workers = worker_deployment(self.config).bind(self.config, self.readers)
        return serve.run(workers, name=cluster.app_name, route_prefix=None, external_scaler_enabled=cluster.autoscaling)

    async def _poll(self) -> None:
        """Follow how many workers run (nodes come and go, Serve replaces dead replicas)."""
        while True:
            try:
                if self._handle is None:
                    self._handle = await asyncio.to_thread(self._deploy)
                live, self._replicas = await asyncio.to_thread(self._running_workers)
            except Exception as exc:  # the cluster may be briefly unreachable: keep the last count
                log.warning("could not ask Ray Serve for its workers: %s", exc)
            else:
                if live != self._live:
                    log.info("%d ArtForge workers running on the cluster", live)
                    self._live = live
                    self._live_changed.set()
                if self.cluster.autoscaling and (wanted := self._scale()) is not None:
                    await asyncio.to_thread(self._scale_to, wanted)
            await asyncio.sleep(POLL_SECONDS)

    def _scale(self) -> int | None:
        """The worker count to ask for now, if it should change: up at once to the jobs in flight
        (within min..max), down once fewer would have done for `scale_down_seconds`."""
        cluster = self.cluster
        wanted = min(max(self.in_flight(), cluster.min_workers), cluster.max_workers)
        if wanted >= self._target:
            self._below_since = None
            return wanted if wanted > self._target else None
        now = time.monotonic()
        if self._below_since is None:
            self._below_since = now
        return wanted if now - self._below_since >= cluster.scale_down_seconds else None

    def _scale_to(self, workers: int) -> None:
        """Serve's external scaler API (the dashboard's REST endpoint)."""
        cluster = self.cluster
        url = f"http://{self._dashboard}/api/v1/applications/{cluster.app_name}/deployments/{DEPLOYMENT}/scale"
        request = urllib.request.Request(url, json.dumps({"target_num_replicas": workers}).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        except OSError as exc:  # URLError and HTTPError too
            log.warning("could not scale the workers to %d: %s", workers, exc)
            return
        log.info("scaling the workers from %d to %d (jobs in flight: %d)", self._target, workers, self.in_flight())
        self._target, self._below_since = workers, None

    def _running_workers(self) -> tuple[int, dict[str, tuple[str, str]]]:
        """How many workers Serve runs, and each live one's node."""
        application = serve.status().applications.get(self.cluster.app_name)
        deployment = application.deployments.get(DEPLOYMENT) if application else None
        live = deployment.replica_states.get("RUNNING", 0) if deployment else 0
        replica_class = f"ServeReplica:{self.cluster.app_name}:{DEPLOYMENT}"
        actors = list_actors(filters=[("class_name", "=", replica_class), ("state", "=", "ALIVE")])
        nodes = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
        return live, {actor.name.rsplit("#", 1)[-1]: (actor.node_id, nodes.get(actor.node_id, "?")) for actor in actors}

    def device_of(self, slot: str) -> str:
        return slot

    async def ready(self, slot: str) -> None:
        index = self.slots.index(slot)
        while self._live <= index:
            self._live_changed.clear()
            await self._live_changed.wait()

    def suits(self, job: Job, slot: str, idle: list[str]) -> bool:
        return True  # Serve's router picks the worker, preferring one that holds the job's model

    async def run(self, slot: str, job: Job, image_filter: ImageFilter | None) -> JobResult:
        model = model_id(job.kind, job.model)
        stored = job.store.job(job.id)
        payload = stored.request if stored is not None and stored.request is not None else b""
        stream = self._handle.options(stream=True, multiplexed_model_id=model).run.remote(job.kind, payload)
        watcher = asyncio.create_task(self._cancel_when_asked(job, stream))
        seen: _Seen | None = None
        result = JobResult()
        try:
            async for item in stream:
                if isinstance(item, Hello):
                    seen = self._seen.setdefault(item.worker, _Seen(item))
                    seen.models.pop(model, None)
                    seen.models[model] = None
                    while len(seen.models) > RECENT_MODELS:
                        seen.models.popitem(last=False)
                    job.device = item.name
                elif isinstance(item, Started):
                    job.append(dataclasses.replace(item, attempt=job.attempts, worker=job.device))
                elif isinstance(item, JobResult):
                    result = item
                elif isinstance(item, Failed):
                    raise ArtForgeError(item.code, item.message)
                else:
                    job.append(item)
        except RayActorError as exc:
            worker = seen.hello.name if seen else "a worker"
            if seen is not None:
                self._seen.pop(seen.hello.worker, None)
            raise WorkerLost(worker, _first_line(exc)) from None
        except (RequestCancelledError, asyncio.CancelledError):
            if not job.is_cancelled():  # the gateway itself is stopping
                raise
            return JobResult()  # the scheduler finishes it as cancelled
        finally:
            watcher.cancel()
        await asyncio.to_thread(store_images, job, result, image_filter)
        return result

    @staticmethod
    async def _cancel_when_asked(job: Job, stream: Any) -> None:
        """A cancel or a deadline seen here cancels the worker's call: the engine stops at its next token or step."""
        while not job.is_cancelled():
            await asyncio.sleep(CANCEL_POLL_SECONDS)
        stream.cancel()

    async def preload(self, engine: Engine, model: str) -> None:
        return  # each worker loads `[models] preload` as it starts

    def workers(self, busy: dict[str, Job]) -> list[WorkerStatus]:
        """The live workers: their node, their device once they ran a job, the models they ran last."""
        running = {job.device for job in busy.values()}
        listed = []
        for replica, (node, address) in sorted(self._replicas.items(), key=lambda item: (item[1], item[0])):
            seen = self._seen.get(replica)
            name = f"{address}/{replica}"
            device = seen.hello.device if seen else "no job yet"
            models = [model.split(":", 1)[1] for model in seen.models] if seen else []
            listed.append(WorkerStatus(name, f"ArtForge worker on {address}, {device}", name in running, node, models))
        return listed

    async def stop(self) -> None:
        """Leave the cluster; the workers stay deployed for the next gateway."""
        if self._poller is not None:
            self._poller.cancel()
        await asyncio.to_thread(ray.shutdown)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
