"""Continuous batching and the prefix cache of the ONNX Runtime text path, on the real SmolLM2
int4 export: first the batch itself (threads as jobs), then through a real server over gRPC.
The PyTorch path's prefix cache, on the same GGUF, too.

Jobs in a batch advance together, one token each a step, so a job of n tokens started beside
one of m > n tokens ends first, whatever the machine's speed: that is how these tests know
jobs shared a batch without timing anything.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import grpc
import pytest

from artforge.config import EMBEDDED_TEXT_MODEL, Limits, TextServing
from artforge.engines.text import TextEngine, TextRequest
from artforge.models.registry import ModelRegistry
from artforge.runtimes.onnx_batch import ContinuousBatch
from artforge.runtimes.onnx_text import OnnxTextModel
from artforge.runtimes.torch_text import TorchTextModel
from artforge_client import ArtForgeError, Client, JobStream
from artforge_client.v1 import jobs_pb2
from tests.conftest import start_server, stop_server
from tests.restarting_server import free_port
from tests.test_metrics import scrape
from tests.test_text_server import ENDLESS, LONG_PROMPT, SWATCH_SCHEMA, running

BATCH = 6
SUCCEEDED = jobs_pb2.JOB_STATE_SUCCEEDED
PROMPTS = ["Describe a red fox in the snow.", "Name three warm colours.", "What is a normal map?", "Suggest a palette for a desert."]


# -- the batch itself -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> TextEngine:
    return TextEngine(ModelRegistry(models_dir, [], {"text": EMBEDDED_TEXT_MODEL}), Limits(), {}, 2, TextServing())


def batch_of(engine: TextEngine, **serving: int) -> ContinuousBatch:
    model = OnnxTextModel(engine.export(EMBEDDED_TEXT_MODEL, "cpu"), "cpu", TextServing(**serving))
    assert model.batch is not None and model.batches
    return model.batch


def prepared(engine: TextEngine, prompt: str, **fields) -> tuple:
    request = engine.prepare(TextRequest(prompt, **fields))
    return request.prompt_ids, request.sampling, request.max_tokens


def together(batch: ContinuousBatch, jobs: list[tuple]) -> list[list[int]]:
    """Every job's tokens, each job read by a thread of its own (as the server's lanes do)."""
    results: list[list[int]] = [[] for _ in jobs]
    start = threading.Barrier(len(jobs))

    def read(index: int) -> None:
        start.wait()
        results[index] = list(batch.generate(*jobs[index]))

    threads = [threading.Thread(target=read, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_each_job_gets_its_alone_tokens_in_a_batch(engine):
    jobs = [
        prepared(engine, PROMPTS[0], max_tokens=40, temperature=0),
        prepared(engine, PROMPTS[1], max_tokens=24, temperature=0.9, top_p=0.9, seed=7),
        prepared(engine, PROMPTS[2], max_tokens=48, temperature=0, json_schema=json.dumps(SWATCH_SCHEMA)),
        prepared(engine, PROMPTS[3], max_tokens=32, temperature=0, repetition_penalty=1.0),
    ]
    batch = batch_of(engine, prefix_cache_mb=0)
    alone = [list(batch.generate(*job)) for job in jobs]
    assert together(batch, jobs) == alone
    assert batch.memory_bytes == 0, "an idle batch holds no keys and values"


def test_a_job_that_would_pass_the_memory_bound_waits_for_room(engine):
    jobs = [prepared(engine, prompt, max_tokens=24, temperature=0) for prompt in PROMPTS[:2]]
    roomy = batch_of(engine, prefix_cache_mb=0)
    alone = [list(roomy.generate(*job)) for job in jobs]
    assert together(roomy, jobs) == alone and roomy.most_rows == 2
    # 1 MB holds less than two rows of keys and values: the second job waits for the first.
    tight = batch_of(engine, prefix_cache_mb=0, batch_memory_mb=1)
    assert together(tight, jobs) == alone and tight.most_rows == 1


def test_a_job_leaving_early_leaves_the_others_untouched(engine):
    batch = batch_of(engine, prefix_cache_mb=0)
    long_job = prepared(engine, PROMPTS[0], max_tokens=40, temperature=0)
    alone = list(batch.generate(*long_job))
    results: list[list[int]] = []
    reader = threading.Thread(target=lambda: results.append(list(batch.generate(*long_job))))
    reader.start()
    short = batch.generate(*prepared(engine, PROMPTS[1], max_tokens=40, temperature=0))
    assert len(list(islice(short, 5))) == 5
    short.close()  # what a cancel, a deadline or a stop string does: the job stops reading
    reader.join()
    assert results == [alone]


def test_prefix_cache_hits_give_the_tokens_of_a_miss_within_its_bound(engine):
    jobs = [prepared(engine, prompt, max_tokens=24, temperature=0) for prompt in PROMPTS]
    uncached = batch_of(engine, prefix_cache_mb=0)
    misses = [list(uncached.generate(*job)) for job in jobs]
    cached = batch_of(engine, prefix_cache_mb=64)
    assert [list(cached.generate(*job)) for job in jobs] == misses
    prefix = cached.prefix
    assert prefix is not None and prefix.hits == len(PROMPTS) - 1 and prefix.misses == 1
    assert prefix.reused_tokens >= (len(PROMPTS) - 1) * 30, "the system prompt and template, at least, were reused"

    # A bound smaller than two prompts' keys and values: it keeps the latest one only.
    tight = batch_of(engine, prefix_cache_mb=3)
    assert [list(tight.generate(*job)) for job in jobs] == misses
    assert 0 < tight.prefix.bytes <= 3 << 20
    assert tight.memory_bytes == tight.prefix.bytes


def test_the_pytorch_prefix_cache_gives_the_tokens_of_a_miss_within_its_bound(engine):
    jobs = [prepared(engine, prompt, max_tokens=16, temperature=0) for prompt in PROMPTS[:3]]
    folder = engine.folder(engine.registry.get(EMBEDDED_TEXT_MODEL, "text"))
    uncached = TorchTextModel(folder, "cpu")
    misses = [list(islice(uncached.generate(ids, sampling), tokens)) for ids, sampling, tokens in jobs]
    cached = TorchTextModel(folder, "cpu", 64 << 20)
    assert [list(islice(cached.generate(ids, sampling), tokens)) for ids, sampling, tokens in jobs] == misses
    prefix = cached.prefix
    assert prefix is not None and prefix.hits == len(jobs) - 1 and prefix.misses == 1
    assert prefix.reused_tokens >= (len(jobs) - 1) * 30, "the system prompt and template, at least, were reused"
    assert 0 < prefix.bytes <= 64 << 20

    tight = TorchTextModel(folder, "cpu", 3 << 20)  # room for one prompt's keys and values
    assert [list(islice(tight.generate(ids, sampling), tokens)) for ids, sampling, tokens in jobs] == misses
    assert 0 < tight.prefix.bytes <= 3 << 20 and tight.prefix.hits == len(jobs) - 1


# -- through a server ---------------------------------------------------------------------------

CONFIG = f"""
[limits]
max_tokens = 512

[text]
batch_size = {BATCH}
prefix_cache_mb = 64
"""


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory, metrics_port):
    config = CONFIG + f"\n[metrics]\nport = {metrics_port}\n"
    running_server = start_server(models_dir, tmp_path_factory.mktemp("batching"), config=config, env={"ARTFORGE_BACKEND": "onnx"})
    yield running_server
    stop_server(running_server)


def device_busy_seconds(metrics_port: int) -> float:
    return scrape(metrics_port)[("artforge_device_busy_seconds_total", (("device", "cpu"),))]


def idle_busy_seconds(client: Client, metrics_port: int) -> float:
    """The busy counter once the device is idle: a busy period is counted when it ends, so one
    begun by an earlier test's jobs would otherwise land in this test's figures."""
    deadline = time.monotonic() + 60
    last = None
    while client.list_jobs().jobs or last != (last := device_busy_seconds(metrics_port)):
        assert time.monotonic() < deadline, "the device never went idle"
        time.sleep(0.2)
    return last


@pytest.fixture
def client(server) -> Iterator[Client]:
    with server.client() as opened:
        yield opened


def holder(client: Client, max_tokens: int, **kwargs) -> JobStream:
    """A job that runs to `max_tokens` (its schema forbids the end of the text)."""
    return client.generate_text(LONG_PROMPT, json_schema=ENDLESS, max_tokens=max_tokens, temperature=0, **kwargs)


def finished_text(stream: JobStream) -> tuple[str, str]:
    finished = stream.wait()
    assert finished.state == SUCCEEDED, finished
    return finished.text, finished.finish_reason


def test_jobs_joining_and_leaving_a_batch_get_their_alone_text(client):
    jobs = [
        dict(prompt=PROMPTS[0], max_tokens=32, temperature=0),
        dict(prompt=PROMPTS[1], max_tokens=64, temperature=0, stop=["3"]),
        dict(prompt=PROMPTS[2], max_tokens=96, temperature=0, json_schema=json.dumps(SWATCH_SCHEMA)),
    ]
    first = holder(client, 160)
    alone_holder = finished_text(first)
    alone = [finished_text(client.generate_text(**job)) for job in jobs]
    assert alone[1][1] == "stop_string" and json.loads(alone[2][0])["hex"].startswith("#")

    batch_holder = running(holder(client, 160))
    cancelled = running(holder(client, 400))
    streams = [client.generate_text(**job) for job in jobs]
    assert [finished_text(stream) for stream in streams] == alone
    cancelled.cancel()
    with pytest.raises(ArtForgeError) as stopped:
        cancelled.wait()
    assert stopped.value.code is grpc.StatusCode.CANCELLED
    # All of them ran beside the holder: none of the others was long enough to outlast it.
    assert finished_text(batch_holder) == alone_holder


def test_a_deadline_inside_a_batch_ends_that_job_only(client):
    alone = finished_text(holder(client, 96))
    other = running(holder(client, 96))
    late = holder(client, 512, timeout=2.0)
    with pytest.raises(ArtForgeError) as expired:
        late.wait()
    assert expired.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert finished_text(other) == alone


def test_a_full_batch_queues_the_next_job_until_one_leaves(client, metrics_port):
    busy_before, began = idle_busy_seconds(client, metrics_port), time.monotonic()
    full = [running(holder(client, 512)) for _ in range(BATCH)]
    queued = client.generate_text(PROMPTS[0], max_tokens=8, temperature=0)
    events = iter(queued)
    assert next(events).queued.position == 0, "every lane of the device is taken"
    full[0].cancel()
    assert queued.wait().state == SUCCEEDED
    for stream in full[1:]:
        stream.cancel()
    for stream in full:
        with pytest.raises(ArtForgeError):
            stream.wait()
    deadline = time.monotonic() + 30
    while (busy := device_busy_seconds(metrics_port) - busy_before) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # counted once the device is idle, just after the last job's end is sent
    assert 0 < busy <= time.monotonic() - began, "jobs that shared the device count its time once"
    # Each is charged its share of the steps it shared, not the whole time it ran.
    usages = [stream.finished.usage for stream in [*full, queued]]
    assert all(0 < usage.device_seconds < usage.run_seconds for usage in usages)
    assert sum(usage.device_seconds for usage in usages) <= busy
    devices = client.server_info().devices
    assert [device.name for device in devices] == ["cpu"], "lanes are slots of one device, not devices"


def test_the_prefix_cache_shows_in_the_metrics(client, metrics_port):
    def series() -> dict[str, float]:
        page = scrape(metrics_port)
        labels = (("device", "cpu"), ("model", EMBEDDED_TEXT_MODEL))
        names = ("hits_total", "misses_total", "reused_tokens_total", "bytes")
        return {name: page.get((f"artforge_prefix_cache_{name}", labels), 0.0) for name in names}

    before = series()
    for prompt in PROMPTS[:2]:  # the second starts as the first: the chat template and system prompt
        assert client.generate_text(prompt, max_tokens=4, temperature=0).wait().state == SUCCEEDED
    after = series()
    assert after["hits_total"] - before["hits_total"] >= 1
    assert after["reused_tokens_total"] - before["reused_tokens_total"] >= 30
    assert 0 < after["bytes"] <= 64 << 20, "within [text] prefix_cache_mb"


def test_kill_9_with_a_batch_running_then_every_job_runs_again(models_dir, tmp_path):
    server = start_server(models_dir, tmp_path, config=CONFIG, env={"ARTFORGE_BACKEND": "onnx"})
    with server.client() as client:
        batch = [running(holder(client, 96, keep=True, seed=n)) for n in range(3)]
        ids = [stream.job_id for stream in batch]
        assert sum(1 for job in client.list_jobs().jobs if job.state == jobs_pb2.JOB_STATE_RUNNING) == 3
        server.process.kill()
        server.process.wait()

    server = start_server(models_dir, tmp_path, config=CONFIG, env={"ARTFORGE_BACKEND": "onnx"})
    try:
        with server.client() as client:
            for job_id in ids:
                events = list(client.watch(job_id, 0, timeout=300))
                assert events[-1].finished.state == SUCCEEDED
                assert events[-1].finished.usage.completion_tokens == 96
                assert [e.started.attempt for e in events if e.HasField("started")] == [1, 2]
    finally:
        stop_server(server)
