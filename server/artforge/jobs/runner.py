"""Where a job's engine runs: on a device thread of this process, or on a cluster's worker.

The scheduler owns the job lifecycle (queue, store, cancel, deadlines, accounting); a runner
only executes. It offers slots, one per job that may run at once, and says which slot suits a
job (the one whose device already holds its model). `LocalRunner` runs engines on threads of
this process, one job per device plus the jobs that join a batch there (text decoding);
`artforge.cluster.dispatch.RayRunner` runs them on Ray Serve workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from artforge.engines.base import Engine, ImageOutput, JobResult
from artforge.runtimes.devices import describe_device

if TYPE_CHECKING:
    from artforge.jobs.job import Job

log = logging.getLogger(__name__)

ImageFilter = Callable[[list[ImageOutput]], list[ImageOutput]]

# Models each device ran last, taken as still loaded there (engines keep a few per device):
# a job goes to an idle device that has its model rather than one that would load it.
RECENT_MODELS = 4


class WorkerLost(Exception):
    """The worker running a job went away (its process or node died): the job may run again elsewhere."""

    def __init__(self, worker: str, why: str) -> None:
        super().__init__(f"{worker}: {why}")
        self.worker = worker
        self.why = why


@dataclass
class WorkerStatus:
    """A device (or cluster worker) as ServerInfo and the admin stats show it."""

    name: str
    description: str
    busy: bool
    node: str = ""  # on a cluster: the machine it runs on
    loaded_models: list[str] = field(default_factory=list)


class Runner(Protocol):
    slots: list[str]  # one per job that may run at once
    devices: list[str]  # what the slots run on: devices, or cluster workers

    def device_of(self, slot: str) -> str:
        """The device a job in `slot` runs on."""

    async def start(self) -> None:
        """Get ready to run jobs (join a cluster): before the scheduler starts."""

    async def ready(self, slot: str) -> None:
        """Return once `slot` may take a job (a cluster worker is up for it)."""

    def suits(self, job: Job, slot: str, idle: list[str]) -> bool:
        """`slot` may take `job` now, given the other idle slots (model affinity)."""

    async def run(self, slot: str, job: Job, image_filter: ImageFilter | None) -> JobResult:
        """Run the job's engine to its end; its events go to `job`. WorkerLost if the worker died."""

    async def preload(self, engine: Engine, model: str) -> None:
        """Load `model` where jobs will use it."""

    def workers(self, busy: dict[str, Job]) -> list[WorkerStatus]:
        """Every worker and what it does; `busy`: running jobs by slot."""

    async def stop(self) -> None: ...


def execute(job: Job, image_filter: ImageFilter | None) -> JobResult:
    """On a device thread: run the engine (the job is its JobContext), filter (safety) and store its images."""
    result = job.engine.run(job.request, job)
    store_images(job, result, image_filter)
    return result


def store_images(job: Job, result: JobResult, image_filter: ImageFilter | None) -> None:
    """Filter a result's images and write them as the job's results (off the event loop)."""
    images = image_filter(result.images) if image_filter and result.images else result.images
    if not job.is_cancelled():
        for output in images:
            job.image(output)


class LocalRunner:
    """Threads of this process. Each device has a main slot, which takes any job, and `lanes - 1`
    more, which take only jobs that join a batch running on it (Engine.batches: text decoding);
    each slot has its own thread, so a lane's job waits on its batch while the main slot's job
    runs. A model loads on the main slot's thread, so it stays on the thread (and the GPU) it
    was loaded on."""

    def __init__(self, devices: list[str], lanes: int = 1) -> None:
        self.devices = devices
        self._devices = {device: device for device in devices}
        self._devices.update({f"{device}+{lane}": device for device in devices for lane in range(1, lanes)})
        self.slots = list(self._devices)
        self._threads = {slot: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"artforge-{slot}") for slot in self.slots}
        self._recent: dict[str, OrderedDict[tuple[str, str], None]] = {d: OrderedDict() for d in devices}

    def device_of(self, slot: str) -> str:
        return self._devices[slot]

    async def start(self) -> None:
        return

    async def ready(self, slot: str) -> None:
        return

    def suits(self, job: Job, slot: str, idle: list[str]) -> bool:
        """A lane: the job joins a batch on its device. The main slot: the device has the job's
        model, or no other idle device has it (an idle device's worker is about to look for a
        job too)."""
        device = self._devices[slot]
        batches = job.engine.batches(job.request, device)
        if slot != device:
            return batches
        if batches and any(self._devices[other] == device and other != device for other in idle):
            return False  # left to an idle lane: the main slot stays free for a job that cannot batch
        model = (job.kind, job.model)
        idle_devices = {self._devices[other] for other in idle} - {device}
        return model in self._recent[device] or not any(model in self._recent[other] for other in idle_devices)

    async def run(self, slot: str, job: Job, image_filter: ImageFilter | None) -> JobResult:
        self._ran(self._devices[slot], job.kind, job.model)
        return await self._on(slot, execute, job, image_filter)

    async def preload(self, engine: Engine, model: str) -> None:
        for device in self.devices:
            await self._on(device, engine.preload, model, device)
            self._ran(device, engine.kind, model)
            log.info("preloaded %s on %s", model, device)

    def workers(self, busy: dict[str, Job]) -> list[WorkerStatus]:
        running = {self._devices[slot] for slot in busy}
        return [WorkerStatus(d, describe_device(d), d in running, loaded_models=[m for _, m in self._recent[d]]) for d in self.devices]

    async def stop(self) -> None:
        for thread in self._threads.values():  # left to exit: an engine may still be finishing a step
            thread.shutdown(wait=False, cancel_futures=True)

    def _ran(self, device: str, kind: str, model: str) -> None:
        recent = self._recent[device]
        recent.pop((kind, model), None)
        recent[(kind, model)] = None
        while len(recent) > RECENT_MODELS:
            recent.popitem(last=False)

    async def _on(self, device: str, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._threads[device], fn, *args)
