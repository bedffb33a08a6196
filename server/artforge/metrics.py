"""Prometheus metrics: series fed by job lifecycle events, served on their own HTTP port.

The scheduler calls the lifecycle methods (submitted, refused, started, finished, queue_depths)
on the event loop's thread as jobs move; each is a few dictionary look-ups and never raises, so
a metrics bug can never fail a job. The gRPC server adds `interceptor()` for the standard
`grpc_server_*` series. Every Metrics has a registry of its own (never prometheus_client's
global one), so one process can run many servers, as the tests do.

    artforge_jobs_submitted_total{user,kind,model}          jobs accepted into the queue
    artforge_jobs_finished_total{user,kind,model,state}     state: succeeded, failed, cancelled, deadline_exceeded
    artforge_quota_rejections_total{user,quota}             submissions refused by a quota or a full queue
    artforge_queue_wait_seconds{kind,model}                 histogram: submitted -> started on a device
    artforge_run_seconds{kind,model}                        histogram: device time of the jobs that started
    artforge_time_to_first_token_seconds{model}             histogram: text jobs only
    artforge_generated_tokens_total{model}                  completion tokens, whatever the job's end
    artforge_generated_images_total{model}
    artforge_device_busy_seconds_total{device}              rate() of it is the device's utilization
    artforge_queue_depth{user}                              jobs waiting now
    artforge_device_memory_bytes{device}                    CUDA devices only: torch's allocated bytes, read at scrape time
    artforge_prefix_cache_hits_total{device,model}          text prompts that reused a cached prefix (read at scrape time,
    artforge_prefix_cache_misses_total{device,model}          as the next two, from the loaded models: a model unloaded
    artforge_prefix_cache_reused_tokens_total{device,model}   takes its series with it)
    artforge_prefix_cache_bytes{device,model}
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Concatenate, ParamSpec
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from artforge.api.grpc_metrics import GrpcMetricsInterceptor
from artforge.runtimes.prefix_cache import PrefixCache

log = logging.getLogger(__name__)

# Jobs take from a fraction of a second (a short text reply) to many minutes (a queue behind
# large images), so the buckets run from 50 ms to an hour.
JOB_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# A first token comes in milliseconds with a warm prefix cache, in seconds behind a long prompt.
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

P = ParamSpec("P")


def _never_raises(method: Callable[Concatenate[Metrics, P], None]) -> Callable[Concatenate[Metrics, P], None]:
    """A lifecycle method that logs its failure instead of raising it into the scheduler."""

    @functools.wraps(method)
    def quietly(self: Metrics, *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception:
            log.exception("metrics: %s failed; the job goes on", method.__name__)

    return quietly


class DeviceMemoryCollector(Collector):
    """`artforge_device_memory_bytes{device}`: torch.cuda.memory_allocated of each CUDA device, at scrape time."""

    NAME = "artforge_device_memory_bytes"
    HELP = "Bytes of device memory held by tensors (torch.cuda.memory_allocated)."

    def __init__(self, devices: list[str]) -> None:
        self.devices = devices

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["device"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        import torch  # only servers with CUDA devices get here, and torch is loaded there by then

        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["device"])
        for device in self.devices:
            try:
                family.add_metric([device], torch.cuda.memory_allocated(device))
            except Exception:  # a device that went away must not fail the whole scrape
                log.warning("metrics: cannot read the memory of %s", device, exc_info=True)
        yield family


class PrefixCacheCollector(Collector):
    """`artforge_prefix_cache_*{device,model}`: what the loaded text models' prefix caches saved, at scrape time."""

    SERIES = (
        ("hits", "Prompts that reused a cached prefix.", "counter"),
        ("misses", "Prompts that found no cached prefix.", "counter"),
        ("reused_tokens", "Prompt tokens taken from the cache instead of run.", "counter"),
        ("bytes", "Bytes of keys and values the cache holds.", "gauge"),
    )

    def __init__(self, caches: Callable[[], list[tuple[str, str, PrefixCache]]]) -> None:
        self.caches = caches

    def describe(self) -> Iterator[Metric]:
        for name, help_, kind in self.SERIES:
            yield self._family(name, help_, kind)

    def collect(self) -> Iterator[Metric]:
        caches = self.caches()
        for name, help_, kind in self.SERIES:
            family = self._family(name, help_, kind)
            for device, model, cache in caches:
                family.add_metric([device, model], getattr(cache, name))
            yield family

    @staticmethod
    def _family(name: str, help_: str, kind: str) -> Metric:
        labels = ["device", "model"]
        if kind == "counter":
            return CounterMetricFamily(f"artforge_prefix_cache_{name}", help_, labels=labels)
        return GaugeMetricFamily(f"artforge_prefix_cache_{name}", help_, labels=labels)


class Metrics:
    def __init__(self, devices: list[str], prefix_caches: Callable[[], list[tuple[str, str, PrefixCache]]] = list) -> None:
        """`devices`: the server's devices, as the scheduler names them ("cpu", "cuda:0", ...);
        `prefix_caches`: (device, model, cache) of the text models loaded now."""
        self.registry = CollectorRegistry()
        registry = self.registry
        self.jobs_submitted = Counter(
            "artforge_jobs_submitted", "Jobs accepted into the queue.", ["user", "kind", "model"], registry=registry
        )
        self.jobs_finished = Counter(
            "artforge_jobs_finished", "Jobs that ended, by how they ended.", ["user", "kind", "model", "state"], registry=registry
        )
        self.quota_rejections = Counter(
            "artforge_quota_rejections", "Submissions refused by a quota or a full queue.", ["user", "quota"], registry=registry
        )
        self.queue_wait = Histogram(
            "artforge_queue_wait_seconds",
            "Seconds from submission to the start on a device.",
            ["kind", "model"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=registry,
        )
        self.run_seconds = Histogram(
            "artforge_run_seconds",
            "Seconds a job held its device (jobs that started).",
            ["kind", "model"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "artforge_time_to_first_token_seconds",
            "Seconds from a text job's start to its first token.",
            ["model"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.generated_tokens = Counter("artforge_generated_tokens", "Completion tokens generated.", ["model"], registry=registry)
        self.generated_images = Counter("artforge_generated_images", "Images generated.", ["model"], registry=registry)
        self.busy_seconds = Counter("artforge_device_busy_seconds", "Seconds the device ran jobs.", ["device"], registry=registry)
        self.queue_depth = Gauge("artforge_queue_depth", "Jobs waiting in the queue, per user.", ["user"], registry=registry)
        for device in devices:  # present from the first scrape, so rate() sees the first job too
            self.busy_seconds.labels(device)
        cuda_devices = [device for device in devices if device.startswith("cuda")]
        if cuda_devices:
            registry.register(DeviceMemoryCollector(cuda_devices))
        registry.register(PrefixCacheCollector(prefix_caches))
        self._grpc = GrpcMetricsInterceptor(registry)
        self._queued_users: set[str] = set()
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None

    # -- serving ----------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP on a thread of its own; the bound port (`port` 0: a free one)."""
        self._http, self._http_thread = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def stop(self) -> None:
        if self._http is None:
            return
        self._http.shutdown()
        self._http.server_close()
        self._http_thread.join()
        self._http = self._http_thread = None

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """The `grpc_server_*` series, in this registry. Put it first, so that it also counts the
        calls that auth and the request guard refuse."""
        return self._grpc

    # -- job lifecycle ----------------------------------------------------------------------

    @_never_raises
    def submitted(self, user: str, kind: str, model: str) -> None:
        self.jobs_submitted.labels(user, kind, model).inc()

    @_never_raises
    def refused(self, user: str, quota: str) -> None:
        """`quota`: "max_queued_jobs", "device_seconds_per_hour", "max_image_pixels" or "max_queue"."""
        self.quota_rejections.labels(user, quota).inc()

    @_never_raises
    def started(self, kind: str, model: str, device: str, queue_wait_seconds: float) -> None:
        self.queue_wait.labels(kind, model).observe(max(queue_wait_seconds, 0.0))

    @_never_raises
    def finished(
        self,
        user: str,
        kind: str,
        model: str,
        state: str,
        run_seconds: float,
        time_to_first_token_seconds: float,
        completion_tokens: int,
        images: int,
    ) -> None:
        """`state`: "succeeded", "failed", "cancelled" or "deadline_exceeded". `run_seconds` is 0
        for a job that never started, `time_to_first_token_seconds` 0 for one without tokens."""
        self.jobs_finished.labels(user, kind, model, state).inc()
        if run_seconds > 0:
            self.run_seconds.labels(kind, model).observe(run_seconds)
        if time_to_first_token_seconds > 0:
            self.time_to_first_token.labels(model).observe(time_to_first_token_seconds)
        if completion_tokens > 0:
            self.generated_tokens.labels(model).inc(completion_tokens)
        if images > 0:
            self.generated_images.labels(model).inc(images)

    @_never_raises
    def device_busy(self, device: str, seconds: float) -> None:
        if seconds > 0:
            self.busy_seconds.labels(device).inc(seconds)

    @_never_raises
    def queue_depths(self, depths: dict[str, int]) -> None:
        """The whole picture: jobs queued per user; users not in `depths` have none now."""
        for user in self._queued_users - depths.keys():
            self.queue_depth.labels(user).set(0)
        for user, depth in depths.items():
            self.queue_depth.labels(user).set(depth)
        self._queued_users.update(depths)
