"""Prometheus metrics: the Metrics series read back from their registry, the gRPC interceptor in
a real grpc.aio server, and a real ArtForge server scraped by Debian's real Prometheus
(installers/setup-prometheus.sh), asked in PromQL what the jobs did.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from artforge.metrics import Metrics
from artforge_client import ArtForgeError, Client
from artforge_client.v1 import jobs_pb2, service_pb2_grpc, text_pb2
from tests.conftest import TEST_CONFIG, start_server, stop_server
from tests.restarting_server import free_port
from tests.test_text_server import LONG_PROMPT, busy, until_started

PROMETHEUS = Path("/usr/bin/prometheus")
DASHBOARD = Path(__file__).resolve().parent.parent / "installers" / "grafana-dashboard.json"
SERVICE = "artforge.v1.ArtForge"
WAIT = 60.0  # a safety net against a hang while polling, not a performance threshold


def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
    return value


# -- the lifecycle series ---------------------------------------------------------------------


def test_lifecycle_calls_become_series_with_their_labels():
    metrics = Metrics(["cpu"])
    value = metrics.registry.get_sample_value
    metrics.submitted("alice", "text", "smollm2")
    metrics.submitted("alice", "text", "smollm2")
    metrics.submitted("bob", "image", "sd15")
    metrics.refused("bob", "max_queued_jobs")
    metrics.refused("bob", "max_queued_jobs")
    metrics.refused("alice", "device_seconds_per_hour")
    metrics.started("text", "smollm2", "cpu", queue_wait_seconds=0.2)
    metrics.started("text", "smollm2", "cpu", queue_wait_seconds=40.0)
    metrics.started("image", "sd15", "cpu", queue_wait_seconds=3.0)
    metrics.finished("alice", "text", "smollm2", "succeeded", 1.5, 0.03, 24, 0)
    metrics.finished("alice", "text", "smollm2", "cancelled", 0.5, 0.0, 3, 0)
    metrics.finished("bob", "image", "sd15", "succeeded", 70.0, 0.0, 0, 2)
    metrics.finished("bob", "text", "smollm2", "cancelled", 0.0, 0.0, 0, 0)  # cancelled while queued
    metrics.device_busy("cpu", 71.5)  # the two text jobs ran side by side, in a batch

    assert value("artforge_jobs_submitted_total", {"user": "alice", "kind": "text", "model": "smollm2"}) == 2
    assert value("artforge_jobs_submitted_total", {"user": "bob", "kind": "image", "model": "sd15"}) == 1
    assert value("artforge_quota_rejections_total", {"user": "bob", "quota": "max_queued_jobs"}) == 2
    assert value("artforge_quota_rejections_total", {"user": "alice", "quota": "device_seconds_per_hour"}) == 1
    finished = {"kind": "text", "model": "smollm2"}
    assert value("artforge_jobs_finished_total", {"user": "alice", **finished, "state": "succeeded"}) == 1
    assert value("artforge_jobs_finished_total", {"user": "alice", **finished, "state": "cancelled"}) == 1
    assert value("artforge_jobs_finished_total", {"user": "bob", **finished, "state": "cancelled"}) == 1
    assert value("artforge_jobs_finished_total", {"user": "bob", "kind": "image", "model": "sd15", "state": "succeeded"}) == 1

    # Histograms: a count, a sum and cumulative buckets from 50 ms to an hour.
    text = {"kind": "text", "model": "smollm2"}
    assert value("artforge_queue_wait_seconds_count", text) == 2
    assert value("artforge_queue_wait_seconds_sum", text) == pytest.approx(40.2)
    assert value("artforge_queue_wait_seconds_bucket", {**text, "le": "0.25"}) == 1
    assert value("artforge_queue_wait_seconds_bucket", {**text, "le": "60.0"}) == 2
    assert value("artforge_queue_wait_seconds_bucket", {**text, "le": "+Inf"}) == 2
    # Run time only of the jobs that ran: the one cancelled while queued is not a 0 s run.
    assert value("artforge_run_seconds_count", text) == 2
    assert value("artforge_run_seconds_sum", text) == pytest.approx(2.0)
    assert value("artforge_run_seconds_bucket", {"kind": "image", "model": "sd15", "le": "60.0"}) == 0
    assert value("artforge_run_seconds_bucket", {"kind": "image", "model": "sd15", "le": "120.0"}) == 1
    # Time to first token: text jobs that had one.
    assert value("artforge_time_to_first_token_seconds_count", {"model": "smollm2"}) == 1
    assert value("artforge_time_to_first_token_seconds_sum", {"model": "smollm2"}) == pytest.approx(0.03)
    assert value("artforge_time_to_first_token_seconds_count", {"model": "sd15"}) is None
    assert value("artforge_generated_tokens_total", {"model": "smollm2"}) == 27
    assert value("artforge_generated_images_total", {"model": "sd15"}) == 2
    assert value("artforge_device_busy_seconds_total", {"device": "cpu"}) == pytest.approx(71.5)
    # No CUDA device, no device memory series.
    assert not [m for m in metrics.registry.collect() if m.name == "artforge_device_memory_bytes"]


def test_every_device_has_its_series_from_the_start():
    metrics = Metrics(["cuda:0", "cuda:1"])
    value = metrics.registry.get_sample_value
    for device in ("cuda:0", "cuda:1"):
        assert value("artforge_device_busy_seconds_total", {"device": device}) == 0
        # Read from torch at scrape time: 0 here, where CUDA was never initialized.
        assert value("artforge_device_memory_bytes", {"device": device}) >= 0


def test_queue_depths_are_the_whole_picture():
    metrics = Metrics(["cpu"])
    depth = lambda user: metrics.registry.get_sample_value("artforge_queue_depth", {"user": user})  # noqa: E731
    metrics.queue_depths({"alice": 3, "bob": 1})
    assert (depth("alice"), depth("bob")) == (3, 1)
    metrics.queue_depths({"bob": 2})
    assert (depth("alice"), depth("bob")) == (0, 2)  # alice is absent: she has none queued now
    metrics.queue_depths({})
    assert (depth("alice"), depth("bob")) == (0, 0)


def test_lifecycle_calls_never_raise():
    metrics = Metrics(["cpu"])
    metrics.finished("alice", "text", "smollm2", "succeeded", -1.0, -1.0, -5, -1)  # nothing counts down
    metrics.device_busy("cpu", -1.0)
    metrics.queue_depths({"alice": None})  # a gauge refuses None: logged, not raised
    labels = {"user": "alice", "kind": "text", "model": "smollm2", "state": "succeeded"}
    assert metrics.registry.get_sample_value("artforge_jobs_finished_total", labels) == 1
    assert metrics.registry.get_sample_value("artforge_device_busy_seconds_total", {"device": "cpu"}) == 0


def test_each_instance_serves_its_own_registry_over_http():
    first, second = Metrics(["cpu"]), Metrics(["cpu"])  # the global registry would refuse the second
    first.submitted("alice", "text", "smollm2")
    ports = [first.serve("127.0.0.1", 0), second.serve("127.0.0.1", 0)]
    submitted = ("artforge_jobs_submitted_total", (("kind", "text"), ("model", "smollm2"), ("user", "alice")))
    try:
        assert 0 not in ports and ports[0] != ports[1]
        assert scrape(ports[0])[submitted] == 1
        assert submitted not in scrape(ports[1])
    finally:
        first.stop()
        second.stop()
    with pytest.raises(urllib.error.URLError):
        scrape(ports[0])
    first.stop()  # a second stop does nothing


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """A /metrics page: (sample name, its sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    families = text_string_to_metric_families(text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def dashboard_queries() -> list[str]:
    """The PromQL of every panel of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_dashboard_asks_only_for_series_that_exist():
    metrics = Metrics(["cuda:0"])  # with the CUDA-only series
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    families = list(metrics.registry.collect())
    exposed = {family.name + suffix for family in families for suffix in suffixes[family.type]}
    queries = dashboard_queries()
    asked = {name for query in queries for name in re.findall(r"\b(?:artforge|grpc_server)_\w+", query)}
    assert len(queries) >= 10
    assert asked - exposed == set()
    histograms = {family.name for family in families if family.type == "histogram"}
    assert {f"{name}_bucket" for name in histograms} <= asked, "every histogram has its quantiles on the dashboard"


# -- the gRPC interceptor, in a real grpc.aio server ------------------------------------------


class ScriptedServicer(service_pb2_grpc.ArtForgeServicer):
    """Each call does what its job_id or prompt says: how calls end is what is under test here."""

    def __init__(self) -> None:
        self.hold = asyncio.Event()  # set to let held calls go on

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.JobInfo:
        if request.job_id == "abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no job abort")
        if request.job_id == "set-code":
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details("set, not raised")
            return jobs_pb2.JobInfo()
        if request.job_id == "raise":
            raise RuntimeError("a bug")
        if request.job_id == "hold":
            await self.hold.wait()
        return jobs_pb2.JobInfo(job_id=request.job_id)

    async def GenerateText(self, request: text_pb2.GenerateTextRequest, context: grpc.aio.ServicerContext):
        for sequence in range(3):
            yield jobs_pb2.JobEvent(job_id="j", sequence=sequence)
            if request.prompt == "abort":
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the queue is full")
            if request.prompt == "hold":
                await self.hold.wait()
        if request.prompt == "set-code":
            context.set_code(grpc.StatusCode.CANCELLED)


async def interceptor_calls(metrics: Metrics) -> dict[str, object]:
    """Calls of every ending against a grpc.aio server with the interceptor; what the client saw."""
    servicer = ScriptedServicer()
    server = grpc.aio.server(interceptors=[metrics.interceptor()])
    service_pb2_grpc.add_ArtForgeServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    seen: dict[str, object] = {}

    async def until_handled(grpc_type: str, service: str, method: str, code: str, count: int = 1) -> None:
        """Until the server has recorded `count` calls that ended with `code` (the client may see
        its call end first)."""
        labels = {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": method, "grpc_code": code}
        while (metrics.registry.get_sample_value("grpc_server_handled_total", labels) or 0) < count:
            await asyncio.sleep(0.02)

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.ArtForgeStub(channel)
            for job_id in ("ok", "ok", "abort", "set-code", "raise"):
                try:
                    await stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id))
                    seen[job_id] = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    seen[job_id] = error.code()
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.GetJob(jobs_pb2.GetJobRequest(job_id="hold"), timeout=0.2)
            seen["deadline"] = error.value.code()
            await until_handled("unary", SERVICE, "GetJob", "DEADLINE_EXCEEDED")

            for prompt in ("ok", "abort", "set-code"):
                call = stub.GenerateText(text_pb2.GenerateTextRequest(prompt=prompt))
                events = []
                try:
                    async for event in call:
                        events.append(event.sequence)
                except grpc.aio.AioRpcError:
                    pass
                seen[f"stream-{prompt}"] = (events, await call.code())

            # A client that leaves mid-stream: the server's handler sees the cancel.
            call = stub.GenerateText(text_pb2.GenerateTextRequest(prompt="hold"))
            seen["stream-left"] = [(await call.read()).sequence]
            call.cancel()
            await until_handled("server_stream", SERVICE, "GenerateText", "CANCELLED", count=2)  # set-code's and this one

            # The health service: its Watch is a coroutine that writes, not an async generator.
            health_stub = health_pb2_grpc.HealthStub(channel)
            await health_stub.Check(health_pb2.HealthCheckRequest())
            watch = health_stub.Watch(health_pb2.HealthCheckRequest())
            seen["watch"] = (await watch.read()).status
            watch.cancel()
            await until_handled("server_stream", "grpc.health.v1.Health", "Watch", "CANCELLED")
    finally:
        servicer.hold.set()
        await server.stop(None)
    return seen


def test_interceptor_records_every_ending_and_keeps_streams_whole():
    metrics = Metrics(["cpu"])
    seen = asyncio.run(asyncio.wait_for(interceptor_calls(metrics), WAIT))

    # The calls themselves are untouched: the same codes, every streamed message.
    assert seen["ok"] is grpc.StatusCode.OK
    assert seen["abort"] is grpc.StatusCode.NOT_FOUND
    assert seen["set-code"] is grpc.StatusCode.FAILED_PRECONDITION
    assert seen["raise"] is grpc.StatusCode.UNKNOWN
    assert seen["deadline"] is grpc.StatusCode.DEADLINE_EXCEEDED
    assert seen["stream-ok"] == ([0, 1, 2], grpc.StatusCode.OK)
    assert seen["stream-abort"] == ([0], grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert seen["stream-set-code"] == ([0, 1, 2], grpc.StatusCode.CANCELLED)
    assert seen["stream-left"] == [0]
    assert seen["watch"] == health_pb2.HealthCheckResponse.SERVING

    value = metrics.registry.get_sample_value
    unary = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "GetJob"}
    stream = {"grpc_type": "server_stream", "grpc_service": SERVICE, "grpc_method": "GenerateText"}
    assert value("grpc_server_started_total", unary) == 6
    handled = {
        code: value("grpc_server_handled_total", {**unary, "grpc_code": code})
        for code in ("OK", "NOT_FOUND", "FAILED_PRECONDITION", "UNKNOWN", "DEADLINE_EXCEEDED")
    }
    assert handled == {"OK": 2, "NOT_FOUND": 1, "FAILED_PRECONDITION": 1, "UNKNOWN": 1, "DEADLINE_EXCEEDED": 1}
    assert value("grpc_server_handling_seconds_count", unary) == 6
    assert value("grpc_server_started_total", stream) == 4
    handled = {
        code: value("grpc_server_handled_total", {**stream, "grpc_code": code}) for code in ("OK", "RESOURCE_EXHAUSTED", "CANCELLED")
    }
    assert handled == {"OK": 1, "RESOURCE_EXHAUSTED": 1, "CANCELLED": 2}  # set_code, and the client that left
    assert value("grpc_server_handling_seconds_count", stream) == 4
    health_labels = {"grpc_service": "grpc.health.v1.Health"}
    assert value("grpc_server_handled_total", {"grpc_type": "unary", **health_labels, "grpc_method": "Check", "grpc_code": "OK"}) == 1
    assert value("grpc_server_started_total", {"grpc_type": "server_stream", **health_labels, "grpc_method": "Watch"}) == 1


# -- the real server, scraped by the real Prometheus --------------------------------------------

TOKENS = {"alice": "alice-secret-token", "bob": "bob-secret-token"}


def studio_config(metrics_port: int) -> str:
    return (
        TEST_CONFIG
        + f"""
[metrics]
port = {metrics_port}
host = "127.0.0.1"

[users.alice]
token = "{TOKENS["alice"]}"
role = "artist"
weight = 1.0
max_queued_jobs = 1

[users.bob]
token = "{TOKENS["bob"]}"
role = "artist"
weight = 1.0
"""
    )


def run_known_jobs(address: str) -> None:
    """alice: 3 text jobs that succeed and 1 refused by her max_queued_jobs; bob: 1 job cancelled
    while it runs; one call with a wrong token."""
    with Client(address, token=TOKENS["alice"]) as alice, Client(address, token=TOKENS["bob"]) as bob:
        holding = busy(bob)  # holds the one device until bob cancels it
        events = iter(holding)
        until_started(events)
        next(e for e in events if e.HasField("text"))  # it has made its first token
        queued = alice.generate_text("Name a colour.", max_tokens=4, seed=1)
        assert next(iter(queued)).HasField("queued")
        with pytest.raises(ArtForgeError) as refused:
            alice.generate_text("Name a shape.", max_tokens=4, seed=2).wait()  # a second one queued: over her quota
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queued_jobs" in refused.value.message
        holding.cancel()
        with pytest.raises(ArtForgeError) as cancelled:
            holding.wait()
        assert cancelled.value.code is grpc.StatusCode.CANCELLED
        assert queued.wait().state == jobs_pb2.JOB_STATE_SUCCEEDED
        for seed in (3, 4):
            assert alice.generate_text(LONG_PROMPT, max_tokens=4, seed=seed).wait().state == jobs_pb2.JOB_STATE_SUCCEEDED
    with Client(address, token="not-a-token") as stranger, pytest.raises(ArtForgeError) as unknown:
        stranger.server_info()
    assert unknown.value.code is grpc.StatusCode.UNAUTHENTICATED


def start_prometheus(workdir: Path, metrics_port: int) -> tuple[subprocess.Popen, str]:
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: artforge\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    address = f"127.0.0.1:{free_port()}"
    command = [
        str(PROMETHEUS),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address={address}",
    ]
    with open(workdir / "prometheus.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://{address}"


def promql(url: str, query: str) -> dict[tuple, float]:
    """An instant query's vector: sorted labels of each series -> value."""
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in answer["data"]["result"]}


def has_scraped(url: str, process: subprocess.Popen) -> bool:
    assert process.poll() is None, "prometheus exited"
    try:
        return promql(url, 'up{job="artforge"} == 1') != {}
    except (urllib.error.URLError, ConnectionError):  # not listening yet
        return False


@pytest.mark.skipif(not PROMETHEUS.exists(), reason="needs Debian's prometheus: bash installers/setup-prometheus.sh")
def test_prometheus_scrapes_what_the_studio_server_did(models_dir, tmp_path):
    metrics_port = free_port()
    server = start_server(models_dir, tmp_path, config=studio_config(metrics_port))
    prometheus = None
    try:
        assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in server.log()
        run_known_jobs(server.address)
        # Everything has finished by now, so the first scrape sees the final counts.
        prometheus, url = start_prometheus(tmp_path, metrics_port)
        wait_for(lambda: has_scraped(url, prometheus), "prometheus to scrape the server")

        assert promql(url, "sum by (user, kind, state) (artforge_jobs_finished_total)") == {
            (("kind", "text"), ("state", "succeeded"), ("user", "alice")): 3,
            (("kind", "text"), ("state", "cancelled"), ("user", "bob")): 1,
        }
        assert promql(url, "sum by (user) (artforge_jobs_submitted_total)") == {(("user", "alice"),): 3, (("user", "bob"),): 1}
        assert promql(url, "sum by (user, quota) (artforge_quota_rejections_total)") == {
            (("quota", "max_queued_jobs"), ("user", "alice")): 1
        }
        # Each of the 4 jobs started, ran and made tokens (bob's was cancelled after its first).
        assert promql(url, "sum(artforge_queue_wait_seconds_count)") == {(): 4}
        assert promql(url, "sum(artforge_run_seconds_count)") == {(): 4}
        assert promql(url, "sum(artforge_time_to_first_token_seconds_count)") == {(): 4}
        assert promql(url, "sum(artforge_generated_tokens_total)")[()] >= 4  # at least one token a job
        assert promql(url, "sum(artforge_queue_depth)") == {(): 0}
        busy_seconds = promql(url, "artforge_device_busy_seconds_total")
        assert [dict(labels)["device"] for labels in busy_seconds] == ["cpu"]
        assert all(seconds > 0 for seconds in busy_seconds.values())
        assert promql(url, "artforge_device_memory_bytes") == {}  # a CPU server: no such series

        # The interceptor sees every call the way it ended, refusals by auth included.
        handled = promql(url, f'sum by (grpc_type, grpc_method, grpc_code) (grpc_server_handled_total{{grpc_service="{SERVICE}"}})')
        assert handled == {
            (("grpc_code", "OK"), ("grpc_method", "GenerateText"), ("grpc_type", "server_stream")): 3,
            (("grpc_code", "RESOURCE_EXHAUSTED"), ("grpc_method", "GenerateText"), ("grpc_type", "server_stream")): 1,
            (("grpc_code", "CANCELLED"), ("grpc_method", "GenerateText"), ("grpc_type", "server_stream")): 1,
            (("grpc_code", "OK"), ("grpc_method", "CancelJob"), ("grpc_type", "unary")): 1,
            (("grpc_code", "UNAUTHENTICATED"), ("grpc_method", "GetServerInfo"), ("grpc_type", "unary")): 1,
        }
        assert promql(url, f'sum(grpc_server_started_total{{grpc_service="{SERVICE}"}})') == {(): 7}
        assert promql(url, f'sum(grpc_server_handling_seconds_count{{grpc_service="{SERVICE}"}})') == {(): 7}

        # Every panel of the Grafana dashboard is PromQL this Prometheus accepts.
        for query in dashboard_queries():
            promql(url, query.replace("$__rate_interval", "1m"))
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(30)
        stop_server(server)
