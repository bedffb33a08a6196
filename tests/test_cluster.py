"""Scale-out on a real local Ray cluster: `ray.cluster_utils.Cluster`, a head node with no CPUs
for jobs and two one-CPU worker nodes, each running one ArtForge worker (a Ray Serve replica).
The gateway is a real `artforge serve` with `[cluster] engine = "ray"`: it keeps the queue and
the job store, the workers run the engines.

One cluster and one gateway for the module (starting them takes about half a minute here). A
test that takes a node away adds one back and waits for its worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from ray.cluster_utils import Cluster

from artforge.engines.control_images import canny
from artforge_client import ArtForgeError, Client, JobStream
from artforge_client.v1 import image_pb2, jobs_pb2, server_pb2
from tests.conftest import REPO, start_server, stop_server, wait_finished
from tests.restarting_server import RestartingServer
from tests.test_image_server import a_picture, pixels_of, png_image
from tests.test_text_server import busy, running
from tests.tiny_pipelines import build_all

LONG = 4096  # tokens: a job no test here waits for to the end
WORKERS = 2
WORKERS_TIMEOUT = 300  # a new worker starts a process and loads its models
SUCCEEDED = jobs_pb2.JOB_STATE_SUCCEEDED
RUNNING = jobs_pb2.JOB_STATE_RUNNING


class LocalCluster:
    """A head node and one-CPU worker nodes, as separate raylets on this machine."""

    def __init__(self) -> None:
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        self.nodes = [self.cluster.add_node(num_cpus=1) for _ in range(WORKERS)]
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return self.cluster.address

    def remove(self, node_id: str) -> None:
        node = next(node for node in self.nodes if node.node_id == node_id)
        self.nodes.remove(node)
        self.cluster.remove_node(node)

    def add(self) -> None:
        self.nodes.append(self.cluster.add_node(num_cpus=1))
        self.cluster.wait_for_nodes()

    def shutdown(self) -> None:
        self.cluster.shutdown()


def gateway_config(address: str, tiny_sd15: Path, workers: str = f"workers = {WORKERS}") -> str:
    return f"""
[limits]
max_tokens = {LONG}
max_queue = 64

[models]
backend = "torch"

[model.tiny-sd15]
path = "{tiny_sd15}"
backend = "torch"

[images]
default_model = "tiny-sd15"

[cluster]
engine = "ray"
address = "{address}"
cpus_per_worker = 1
{workers}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    local = LocalCluster()
    yield local
    local.shutdown()


@pytest.fixture(scope="module")
def gateway(cluster: LocalCluster, models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartingServer]:
    tiny = build_all(REPO / ".cache" / "tiny-models")
    server = RestartingServer(models_dir, tmp_path_factory.mktemp("gateway"), config=gateway_config(cluster.address, tiny["tiny-sd15"]))
    with server.client() as client:
        idle_workers(client)
    yield server
    server.stop()


@pytest.fixture
def client(gateway: RestartingServer) -> Iterator[Client]:
    with gateway.client() as opened:
        idle_workers(opened)
        yield opened


def idle_workers(client: Client, count: int = WORKERS) -> list[server_pb2.Device]:
    """The gateway's workers, once `count` of them run and none is busy."""
    deadline = time.monotonic() + WORKERS_TIMEOUT
    while time.monotonic() < deadline:
        workers = list(client.server_info().devices)
        if len(workers) == count and not any(worker.busy for worker in workers):
            return workers
        time.sleep(0.5)
    raise AssertionError(f"not {count} idle workers after {WORKERS_TIMEOUT} s: {client.server_info().devices}")


def started_events(client: Client, job_id: str) -> list[jobs_pb2.JobStarted]:
    return [event.started for event in client.watch(job_id, 0) if event.HasField("started")]


def worker_of(stream: JobStream) -> str:
    """Read `stream` up to its job's start; the worker that runs it."""
    for event in stream:
        if event.HasField("started"):
            return event.started.worker
    raise AssertionError("the job ended before it started")


def test_jobs_run_on_both_workers_and_their_events_name_the_worker(client):
    workers = idle_workers(client)
    assert all(worker.node and "ArtForge worker on" in worker.description for worker in workers)
    jobs = [busy(client, max_tokens=48) for _ in range(8)]
    assert all(job.wait().state == SUCCEEDED and job.finished.usage.completion_tokens == 48 for job in jobs)
    ran_on = [started_events(client, job.job_id) for job in jobs]
    assert all(len(starts) == 1 and starts[0].attempt == 1 for starts in ran_on)
    assert {starts[0].worker for starts in ran_on} == {worker.name for worker in workers}, "both workers ran jobs"
    for worker in idle_workers(client):
        assert "smollm2-135m-instruct" in worker.loaded_models
    stats = client.server_stats()
    assert [worker.name for worker in stats.workers] == [worker.name for worker in workers]


def test_cancel_and_deadline_stop_the_job_on_its_worker(client):
    # Both workers busy; the job on the other one ends long after any of these.
    cancelled = running(busy(client, max_tokens=LONG))
    other = running(busy(client, max_tokens=LONG // 2))
    cancelled.cancel()
    with pytest.raises(ArtForgeError) as stopped:
        cancelled.wait()
    assert stopped.value.code is grpc.StatusCode.CANCELLED
    # The cancelled job's worker takes the next job at once: had its engine gone on, that job
    # would wait for all LONG tokens, after the other job's LONG / 2.
    assert busy(client, max_tokens=8).wait().state == SUCCEEDED
    assert client.get_job(other.job_id).state == RUNNING

    late = busy(client, max_tokens=LONG, timeout=3.0)
    with pytest.raises(ArtForgeError) as expired:
        late.wait()
    assert expired.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert busy(client, max_tokens=8).wait().state == SUCCEEDED
    assert client.get_job(other.job_id).state == RUNNING

    # Kept on disconnect: the job runs to its end on its worker with no one reading.
    kept = busy(client, max_tokens=24, keep=True)
    job_id = next(iter(kept)).job_id
    kept.disconnect()
    assert wait_finished(client, job_id, timeout=120).state == SUCCEEDED
    other.cancel()


def test_a_job_goes_to_the_worker_that_holds_its_model(client):
    small = image_pb2.GenerateImageRequest(prompt="moss", width=64, height=64, steps=1)
    stream = client.generate_image(small)
    first = worker_of(iter(stream))
    assert stream.wait().state == SUCCEEDED
    for _ in range(4):  # each time both workers are idle: Serve's router picks the one with the model
        stream = client.generate_image(small)
        assert worker_of(iter(stream)) == first
        assert stream.wait().state == SUCCEEDED
    holding = {worker.name: list(worker.loaded_models) for worker in idle_workers(client)}
    assert "tiny-sd15" in holding[first]
    assert all("tiny-sd15" not in models for name, models in holding.items() if name != first)


def test_a_preprocess_job_runs_on_a_worker(client):
    picture = a_picture()
    picture[16:48, 16:48] = 255
    stream = client.preprocess(image_pb2.PreprocessRequest(image=png_image(picture), preprocessor="canny"))
    assert worker_of(iter(stream)) and stream.wait().state == SUCCEEDED
    (edges,) = stream.images
    assert np.array_equal(pixels_of(edges)[..., 0] > 0, canny(picture.astype(np.float32) / 255)[..., 0] > 0)


def test_a_job_whose_node_is_removed_finishes_on_the_other_worker_in_one_stream(client, cluster):
    nodes = {worker.name: worker.node for worker in idle_workers(client)}
    stream = busy(client, max_tokens=200)
    events = iter(stream)
    lost = worker_of(events)
    cluster.remove(nodes[lost])
    restarts = []
    for event in events:
        if event.HasField("progress") and event.progress.phase == jobs_pb2.JobProgress.PHASE_RESTARTING:
            restarts.append(event.progress.message)
        if event.HasField("started"):
            assert event.started.attempt == 2
            assert event.started.worker not in ("", lost), "started again on the other worker"
    assert len(restarts) == 1 and lost in restarts[0]
    assert stream.finished.state == SUCCEEDED and stream.finished.usage.completion_tokens == 200
    cluster.add()  # Serve starts a worker on it in place of the lost one
    idle_workers(client)


def test_kill_9_the_gateway_with_jobs_queued_then_they_run_on_the_cluster(gateway, client):
    ahead = [running(busy(client, max_tokens=128, keep=True)) for _ in range(WORKERS)]
    queued = [busy(client, max_tokens=16, keep=True) for _ in range(3)]
    assert all(next(iter(job)).HasField("queued") for job in queued)
    ids = [job.job_id for job in ahead + queued]
    gateway.restarted.clear()
    gateway.kill()
    assert gateway.restarted.wait(WORKERS_TIMEOUT), gateway.restart_error
    with gateway.client() as again:
        assert all(wait_finished(again, job_id, timeout=WORKERS_TIMEOUT).state == SUCCEEDED for job_id in ids)
        assert "found the workers of application" in gateway.log()
        for job_id in ids[WORKERS:]:
            assert [start.attempt for start in started_events(again, job_id)] == [1]


def test_autoscaling_scales_to_zero_when_idle_and_starts_a_worker_for_a_job(cluster, models_dir, tmp_path):
    """A second gateway, with its own Serve application on a node added for it, between no
    worker and one: it scales on the jobs in its queue (Serve's external scaler API)."""
    cluster.add()
    tiny = build_all(REPO / ".cache" / "tiny-models")
    scaling = 'app_name = "artforge-autoscaled"\nworkers = 0\nmin_workers = 0\nmax_workers = 1\nscale_down_seconds = 2'
    server = start_server(models_dir, tmp_path, config=gateway_config(cluster.address, tiny["tiny-sd15"], scaling))

    def no_workers_after_idle(client: Client, times: int) -> None:
        deadline = time.monotonic() + WORKERS_TIMEOUT
        while server.log().count("scaling the workers from 1 to 0") < times and time.monotonic() < deadline:
            time.sleep(0.5)
        while client.server_info().devices and time.monotonic() < deadline:
            time.sleep(0.5)
        assert list(client.server_info().devices) == [], "the idle worker was stopped"

    try:
        with server.client() as client:
            no_workers_after_idle(client, 1)  # Serve deploys one worker at least: it goes once idle
            job = busy(client, max_tokens=16)
            assert job.wait().state == SUCCEEDED, "a worker was started for it"
            assert "scaling the workers from 0 to 1 (jobs in flight: 1)" in server.log()
            no_workers_after_idle(client, 2)
    finally:
        stop_server(server)
