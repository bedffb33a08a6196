"""Durable jobs: the job store keeps every accepted job through kill -9, SIGTERM and restarts.

Each test runs its own real servers on one data folder and kills or stops them the way an
admin, the OOM killer or a crash would. Text jobs that must still be running when the server
goes are `busy` jobs (held to a schema that forbids the end of the text), so nothing here
depends on how fast the machine is.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from artforge.jobs.scheduler import CRASH_LABEL_ENV
from artforge_client import ArtForgeError, Client
from artforge_client.v1 import image_pb2, jobs_pb2, pixels_pb2
from tests.conftest import REPO, TEST_CONFIG, start_server, stop_server, wait_finished
from tests.test_text_server import LONG_PROMPT, busy, until_started
from tests.tiny_pipelines import build_all, build_tiny_sd15_large_images

SUCCEEDED = jobs_pb2.JOB_STATE_SUCCEEDED
ENDLESS_TOKENS = 8000  # with the prompt, within SmolLM2's 8192-token context


def kill(server) -> None:
    server.process.kill()
    server.process.wait()


def read_to_the_end(events: Iterator[jobs_pb2.JobEvent]) -> list[jobs_pb2.JobEvent]:
    """The rest of a stream's events; a job that did not succeed ends its call with its error,
    after its finished event."""
    seen: list[jobs_pb2.JobEvent] = []
    try:
        seen.extend(events)
    except ArtForgeError:
        if not (seen and seen[-1].HasField("finished")):
            raise
    return seen


def wait_draining(server) -> None:
    """Until the server has taken a SIGTERM and is draining (it refuses new jobs by then)."""
    deadline = time.monotonic() + 60
    while "draining: waiting" not in server.log():
        assert time.monotonic() < deadline, "the server did not start draining"
        time.sleep(0.05)


def replay(client: Client, job_id: str) -> list[jobs_pb2.JobEvent]:
    """Every event of a job from sequence 0, following it live until it finishes."""
    events = read_to_the_end(iter(client.watch(job_id, 0, timeout=300)))
    assert [e.sequence for e in events] == list(range(len(events))), "sequence numbers have gaps or repeats"
    assert events[-1].HasField("finished")
    return events


def text_of_last_attempt(events: list[jobs_pb2.JobEvent]) -> str:
    last_start = max(i for i, e in enumerate(events) if e.HasField("started"))
    return "".join(e.text.text for e in events[last_start:] if e.HasField("text"))


def test_kill_9_with_one_running_and_three_queued_then_all_four_succeed(models_dir, tmp_path):
    server = start_server(models_dir, tmp_path)
    with server.client() as client:
        running = busy(client, seed=1)  # 512 tokens: still running after the three are queued
        events = iter(running)
        until_started(events)
        next(e for e in events if e.HasField("text"))  # it is generating
        queued = [client.generate_text(LONG_PROMPT, max_tokens=8, seed=n, keep=True) for n in range(3)]
        for stream in queued:
            first = next(iter(stream))
            assert first.HasField("queued")
        ids = [running.job_id] + [stream.job_id for stream in queued]
        kill(server)

    server = start_server(models_dir, tmp_path)
    try:
        with server.client() as client:
            replays = {job_id: replay(client, job_id) for job_id in ids}
        for job_id, events in replays.items():
            finished = events[-1].finished
            assert finished.state == SUCCEEDED, (job_id, finished)
            assert finished.text == text_of_last_attempt(events)
        attempts = [e.started.attempt for e in replays[ids[0]] if e.HasField("started")]
        assert attempts == [1, 2], "the job running at the kill runs again, as attempt 2"
        for job_id in ids[1:]:
            assert [e.started.attempt for e in replays[job_id] if e.HasField("started")] == [1]
        log = server.log()
        assert f"job {ids[0]} resumed: it was running" in log
        assert all(f"job {job_id} resumed: it was queued" in log for job_id in ids[1:])
    finally:
        stop_server(server)


def test_a_job_that_kills_its_server_twice_ends_failed_and_the_queue_goes_on(models_dir, tmp_path):
    crash = {CRASH_LABEL_ENV: "crash-me"}
    server = start_server(models_dir, tmp_path, env=crash)
    with server.client(reattach_timeout=0) as client:
        blocking = busy(client)
        until_started(iter(blocking))
        crasher = client.generate_text(LONG_PROMPT, max_tokens=8, label="crash-me")
        assert next(iter(crasher)).HasField("queued")  # behind the busy job: its id is known
        blocking.cancel()
        assert server.process.wait(60) == -signal.SIGKILL  # as it started the crasher

    server = start_server(models_dir, tmp_path, env=crash)  # it runs again (attempt 2) and crashes again
    assert server.process.wait(120) == -signal.SIGKILL

    server = start_server(models_dir, tmp_path, env=crash)
    try:
        with server.client() as client:
            events = replay(client, crasher.job_id)
            finished = events[-1].finished
            assert finished.state == jobs_pb2.JOB_STATE_FAILED
            assert finished.error.code == grpc.StatusCode.ABORTED.value[0]
            assert "stopped 2 times while this job ran" in finished.error.message
            assert [e.started.attempt for e in events if e.HasField("started")] == []  # killed before its engine said so
            after = client.generate_text(LONG_PROMPT, max_tokens=4, seed=3)
            assert after.wait().state == SUCCEEDED
    finally:
        stop_server(server)


def test_sigterm_during_a_text_job_finishes_it_and_keeps_the_queued_one(models_dir, tmp_path):
    # Time enough to submit while it drains; and a running job of 8000 tokens, which no CPU
    # makes within the drain (512 took under 5 s on a fast run here, and then it succeeded).
    config = TEST_CONFIG.replace("max_tokens = 512", f"max_tokens = {ENDLESS_TOKENS}") + "\n[server]\ndrain_seconds = 5\n"
    server = start_server(models_dir, tmp_path, config=config)
    with server.client(reattach_timeout=0) as client:  # see the stream end as it does, without re-attaching
        running = busy(client, max_tokens=ENDLESS_TOKENS)
        events = iter(running)
        until_started(events)
        waiting = client.generate_text(LONG_PROMPT, max_tokens=8, seed=5)
        assert next(iter(waiting)).HasField("queued")
        server.process.send_signal(signal.SIGTERM)
        wait_draining(server)  # within the drain time: new jobs are refused with a sentence
        with pytest.raises(ArtForgeError) as refused:
            client.generate_text(LONG_PROMPT, max_tokens=4).wait()
        assert refused.value.code is grpc.StatusCode.UNAVAILABLE
        assert "the server is stopping and takes no new jobs" in refused.value.message
        rest = read_to_the_end(events)
        finished = rest[-1].finished
        assert finished.state == jobs_pb2.JOB_STATE_CANCELLED
        assert "the server stopped before the job finished" in finished.error.message
        with pytest.raises(ArtForgeError) as told:
            waiting.wait()
        assert told.value.code is grpc.StatusCode.UNAVAILABLE
        assert server.process.wait(60) == 0

    server = start_server(models_dir, tmp_path, config=config)
    try:
        with server.client() as client:
            events = replay(client, waiting.job_id)
            assert events[-1].finished.state == SUCCEEDED
            assert replay(client, running.job_id)[-1].finished.state == jobs_pb2.JOB_STATE_CANCELLED
    finally:
        stop_server(server)


def test_a_second_sigterm_stops_at_once_with_a_finished_event(models_dir, tmp_path):
    server = start_server(models_dir, tmp_path, config=TEST_CONFIG)  # the default drain: 30 s
    with server.client(reattach_timeout=0) as client:
        running = busy(client, max_tokens=512)
        events = iter(running)
        until_started(events)
        server.process.send_signal(signal.SIGTERM)
        wait_draining(server)
        server.process.send_signal(signal.SIGTERM)
        finished = read_to_the_end(events)[-1].finished
        assert finished.state == jobs_pb2.JOB_STATE_CANCELLED
        assert finished.usage.completion_tokens < 512, "stopped, not drained to the end"
        assert server.process.wait(30) == 0
    assert "stopping now: running jobs are cancelled" in server.log()


# -- image results: on disk, streamed from there, bounded -----------------------------------------

BIG = 2048
BATCH = 8
RESULT_BYTES = BIG * BIG * 3 * 4  # one raw float32 RGB result
CAP = 2 * BATCH * RESULT_BYTES  # two jobs' results


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    paths = build_all(REPO / ".cache" / "tiny-models")
    large = build_tiny_sd15_large_images(tmp_path_factory.mktemp("large") / "tiny-sd15-large", paths["tiny-sd15"])
    return {**paths, "tiny-sd15-large": large}


def image_config(tiny_models, extra: str = "") -> str:
    return f"""
[models]
default_text = "none"
preload = ["tiny-sd15-large"]
backend = "torch"

[model.tiny-sd15-large]
path = "{tiny_models["tiny-sd15-large"]}"

[images]
default_model = "tiny-sd15-large"

[server]
max_result_bytes = {CAP}
{extra}

[limits]
max_image_pixels = {BIG * BIG * BATCH}
max_batch = {BATCH}
"""


def big_request(seed: int) -> image_pb2.GenerateImageRequest:
    return image_pb2.GenerateImageRequest(
        prompt="a brick wall",
        width=BIG,
        height=BIG,
        steps=1,
        guidance_scale=1.0,  # no classifier-free guidance: half the UNet work
        scheduler="euler",
        batch_size=BATCH,
        seed=seed,
        output_format=pixels_pb2.OUTPUT_FORMAT_RAW_FLOAT32,
        options=jobs_pb2.JobOptions(keep_on_disconnect=True),
    )


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_big_raw_results_keep_memory_flat_and_disk_under_the_cap(tiny_models, tmp_path):
    """Six 2048x2048 batch-8 raw jobs (384 MiB of results each): the server's RSS does not grow
    with what it keeps, the results folder stays under the cap, and the oldest go first."""
    server = start_server(tiny_models["tiny-sd15"].parent, tmp_path, "--no-fetch", config=image_config(tiny_models))
    try:
        ids, rss = [], []
        with server.client() as client:
            for seed in range(6):
                stream = client.generate_image(big_request(seed))
                first = next(iter(stream))
                ids.append(first.job_id)
                stream.disconnect()  # kept on disconnect: the job runs to the end with no one reading
                assert wait_finished(client, first.job_id, timeout=600).state == SUCCEEDED
                rss.append(rss_bytes(server.process.pid))
                assert folder_bytes(server.data_dir / "results") <= CAP
            # Streamed from disk, whole and checked (JobStream verifies every SHA-256).
            newest = client.watch(ids[-1], 0, timeout=300)
            newest.wait()
            assert len(newest.images) == BATCH and all(len(image.data) == RESULT_BYTES for image in newest.images)
            for job_id in ids[:-2]:
                with pytest.raises(ArtForgeError) as dropped:
                    client.get_job(job_id)
                assert dropped.value.code is grpc.StatusCode.NOT_FOUND
                assert "dropped to keep the server's stored results under" in dropped.value.message
            for job_id in ids[-2:]:
                assert client.get_job(job_id).state == SUCCEEDED
        # Held in memory, each job's results would add 384 MiB: 1.5 GiB by the last two. A job's
        # working memory can linger in the allocator after it ends (one sample was 180 MiB up, the
        # next back down), so the lower of the last two samples is compared, with one job's results.
        growth = min(rss[-2:]) - rss[1]
        print(f"server RSS after each job (MiB): {[r >> 20 for r in rss]}; growth after the second: {growth >> 20} MiB")
        assert growth < RESULT_BYTES * BATCH
    finally:
        stop_server(server)


def test_finished_results_replay_after_kill_9_and_sigterm_during_decode_keeps_the_image(tiny_models, tmp_path):
    models = tiny_models["tiny-sd15"].parent
    server = start_server(models, tmp_path, "--no-fetch", config=image_config(tiny_models))
    small = image_pb2.GenerateImageRequest(prompt="moss", width=64, height=64, steps=2, seed=7)
    with server.client() as client:
        done = client.generate_image(small)
        done.wait()
        before = [image.data for image in done.images]
    kill(server)

    server = start_server(models, tmp_path, "--no-fetch", config=image_config(tiny_models))
    with server.client(reattach_timeout=0) as client:
        again = client.watch(done.job_id, 0)
        again.wait()
        assert [image.data for image in again.images] == before, "the same bytes, from the results folder"
        # SIGTERM once the last step is done: the decode runs, the drain lets it finish.
        stream = client.generate_image(image_pb2.GenerateImageRequest(prompt="moss", width=64, height=64, steps=3, seed=8))
        # The signal can reach the server after the decode: a queued job may start and finish first.
        # Three of them, 20 steps each, so that some are still queued when it arrives.
        waiting = [
            client.generate_image(image_pb2.GenerateImageRequest(prompt="moss", width=64, height=64, steps=20, seed=9)) for _ in range(3)
        ]
        assert all(next(iter(job)).HasField("queued") for job in waiting)
        sent = False
        for event in stream:
            last_step = event.HasField("progress") and 0 < event.progress.total_steps == event.progress.step
            if last_step and not sent:
                server.process.send_signal(signal.SIGTERM)  # once: a second one would stop at once
                sent = True
        assert sent
        assert stream.finished.state == SUCCEEDED and len(stream.images) == 1
        stayed_queued = []
        for job in waiting:
            try:
                job.wait()  # started before the signal: the drain lets it finish
                assert job.finished.state == SUCCEEDED
            except ArtForgeError as exc:
                assert exc.code == grpc.StatusCode.UNAVAILABLE and "stays queued" in exc.message
                stayed_queued.append(job.job_id)
        assert stayed_queued, "the signal came after all three finished"
    assert server.process.wait(60) == 0

    server = start_server(models, tmp_path, "--no-fetch", config=image_config(tiny_models))
    try:
        with server.client() as client:
            for job_id in stayed_queued:
                assert replay(client, job_id)[-1].finished.state == SUCCEEDED
    finally:
        stop_server(server)


def test_two_servers_cannot_share_a_data_folder(models_dir, tmp_path):
    server = start_server(models_dir, tmp_path)
    try:
        (tmp_path / "second").mkdir()
        with pytest.raises(RuntimeError, match="another ArtForge server uses the data folder"):
            start_server(models_dir, tmp_path / "second", "--data-dir", str(server.data_dir))
    finally:
        stop_server(server)
    assert os.path.exists(server.data_dir / "jobs.sqlite3")
