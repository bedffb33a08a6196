"""An ArtForge worker on a Ray cluster: the same engines as the server, on one device of one
node, deployed as replicas of a Ray Serve deployment.

The gateway calls `run` through a streaming DeploymentHandle, one job per call and one call per
worker at a time (`max_ongoing_requests = 1`): the gateway's queue decides what runs next, not
Serve's. A job travels as the request bytes the job store keeps; the worker reads and checks them
with the gateway's own readers and engines' checks (prepared requests hold per-process objects,
such as a compiled grammar), then streams the engine's events back as it reports them, then the
result. A cancelled call (the client's cancel or deadline, seen by the gateway) sets the job's cancel
flag, and the engine stops at its next token or step, as it does in-process.

Each call names its model as Serve's multiplexed model id, so Serve's router sends a job to a
worker that already holds its model when one is free; the engines load and evict models
themselves, within `[models] max_loaded`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import serve

from artforge.app import App
from artforge.config import Config
from artforge.engines.base import JobResult
from artforge.errors import ArtForgeError, ErrorCode
from artforge.images import encode_preview
from artforge.jobs.events import Event, Progress, Started, TextDelta

log = logging.getLogger(__name__)

DEPLOYMENT = "ArtForgeWorker"
GRACEFUL_SHUTDOWN_SECONDS = 900


@dataclass(frozen=True)
class Hello:
    """The first item of every call: who runs the job."""

    worker: str  # the replica's id
    address: str  # the node's IP address
    device: str

    @property
    def name(self) -> str:
        return f"{self.address}/{self.worker}"


@dataclass(frozen=True)
class Failed:
    """The engine refused or failed the job (the last item of the call)."""

    code: ErrorCode
    message: str


def model_id(kind: str, model: str) -> str:
    """The multiplexed model id of a job: Serve's router prefers workers that ran it."""
    return f"{kind}:{model}"


class _Context:
    """The JobContext an engine reports to on a worker: events go into the call's stream."""

    def __init__(self, device: str, loop: asyncio.AbstractEventLoop, events: asyncio.Queue[Any]) -> None:
        self.device = device
        self._loop = loop
        self._events = events
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def started(self, model: str, backend: str, seed: int, reason: str = "") -> None:
        self._post(Started(model, backend, self.device, seed, reason=reason))

    def progress(self, phase: str, step: int = 0, total: int = 0, message: str = "", preview: np.ndarray | None = None) -> None:
        self._post(Progress(phase, step, total, message, encode_preview(preview) if preview is not None else None))

    def text(self, delta: str, completion_tokens: int) -> None:
        self._post(TextDelta(delta, completion_tokens))

    def _post(self, event: Event) -> None:
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)


_DONE = object()


class Worker:
    """One device's engines. Built by Serve on the node it placed the replica on."""

    def __init__(self, config: Config, readers: Mapping[str, Callable[[bytes], Any]]) -> None:
        """`readers`: the gateway's, for each job kind how its request bytes read."""
        logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.app = App(dataclasses.replace(config, devices=["auto"]))
        self.device = self.app.devices[0]
        self.engines = {engine.kind: engine for engine in self.app.engines}
        self.readers = readers
        self.hello = Hello(serve.get_replica_context().replica_tag, ray.util.get_node_ip_address(), self.device)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="artforge-worker")
        for name in config.preload:
            engine = self.app.image if any(spec.name == name for spec in self.app.registry.list("image")) else self.app.text
            try:
                engine.preload(name, self.device)
                log.info("worker %s preloaded %s on %s", self.hello.worker, name, self.device)
            except Exception as exc:  # a missing preload model must not stop the worker
                log.warning("worker %s could not preload %s: %s", self.hello.worker, name, exc)

    async def run(self, kind: str, payload: bytes) -> AsyncIterator[Hello | Event | JobResult | Failed]:
        """Run one job: Hello, the engine's events, then its JobResult (or Failed)."""
        await self._model(serve.get_multiplexed_model_id())  # tells the router this worker holds it
        yield self.hello
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        context = _Context(self.device, loop, events)
        running = loop.run_in_executor(self._thread, self._execute, kind, payload, context)
        running.add_done_callback(lambda _: events.put_nowait(_DONE))
        try:
            while (event := await events.get()) is not _DONE:
                yield event
        except asyncio.CancelledError:  # the gateway cancelled the call: stop at the next token or step
            context.cancel()
            raise
        try:
            yield running.result()
        except ArtForgeError as exc:
            yield Failed(exc.code, exc.message)
        except Exception as exc:  # an engine bug or a device failure: the gateway reports it
            log.exception("a %s job failed on worker %s", kind, self.hello.worker)
            code = ErrorCode.RESOURCE_EXHAUSTED if "out of memory" in str(exc).lower() else ErrorCode.INTERNAL
            yield Failed(code, f"{type(exc).__name__}: {exc}")

    def _execute(self, kind: str, payload: bytes, context: _Context) -> JobResult:
        engine = self.engines[kind]
        return engine.run(engine.prepare(self.readers[kind](payload)), context)

    async def _model(self, model: str) -> str:
        return model  # replaced per deployment by a @serve.multiplexed wrapper (its LRU size comes from the config)


def worker_deployment(config: Config) -> serve.Deployment:
    """The Serve deployment of workers for `config`: `[cluster]` sets how many and their resources."""
    cluster = config.cluster

    class ArtForgeWorker(Worker):
        @serve.multiplexed(max_num_models_per_replica=max(config.max_loaded_models, 1))
        async def _model(self, model: str) -> str:
            return model

    ArtForgeWorker.__name__ = ArtForgeWorker.__qualname__ = DEPLOYMENT
    actor = {"num_cpus": cluster.cpus_per_worker, "num_gpus": cluster.gpus_per_worker}
    return serve.deployment(
        ArtForgeWorker,
        name=DEPLOYMENT,
        num_replicas=cluster.initial_workers,
        max_ongoing_requests=1,
        ray_actor_options=actor,
        # A worker scaled down (or replaced) finishes the job it runs first.
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_SECONDS,
    )
