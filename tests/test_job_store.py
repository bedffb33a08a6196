"""The job store on a real SQLite file: events round-trip, retention drops the oldest first."""

from __future__ import annotations

import asyncio
import time

import pytest

from artforge.engines.base import Provenance, Usage
from artforge.errors import ErrorCode
from artforge.images import EncodedImage
from artforge.jobs.events import Finished, ImageChunk, ImageHeader, JobState, Progress, Queued, Started, TextDelta
from artforge.jobs.store import DataFolderInUse, JobStore, StoredJob

PROVENANCE = Provenance("m", 5, "p", "n", 20, "euler", 4, 2, 7.5, 0.5, True, False, [("lora", 0.8)], "style")
EVENTS = [
    Queued(2, 5),
    Started("tiny-sd15", "onnx", "cpu", 2**64 - 1, attempt=2),
    Progress("generating", 3, 20, "step", EncodedImage(b"\x89PNG preview", "png", "uint8", 8, 8, 3)),
    Progress("loading_model", message="loading"),
    TextDelta("héllo ✓", 7),
    ImageHeader(0, 1, "normal", EncodedImage(b"", "raw", "float32", 4, 2, 3), 96, "ab" * 32, PROVENANCE, True),
    ImageChunk(0, 64, 32),
    Finished(JobState.FAILED, Usage(1, 2, 0.5, 10.0, 1.5, 2.5), "text", "max_tokens", ErrorCode.ABORTED, "why"),
]


def stored(job_id: str, finished_at: float | None = None, result_bytes: int = 0) -> StoredJob:
    return StoredJob(
        job_id, "image", "m", "", "", 0, "png8", b"request", time.time(), None, JobState.QUEUED, 0, 0, 0, result_bytes, finished_at, None
    )


def test_every_kind_of_event_reads_back_as_it_was_written(tmp_path):
    async def write() -> None:
        store = JobStore(tmp_path)
        store.add(stored("a"))
        for sequence, event in enumerate(EVENTS):
            store.append("a", sequence, sequence / 10, event, lambda: None)
        store.close()

    asyncio.run(write())
    store = JobStore(tmp_path)
    assert [event for _, _, event in store.events("a")] == EVENTS
    job = store.job("a")
    assert job.state is JobState.FAILED and job.events == len(EVENTS) and job.results == 1 and job.result_bytes == 96
    assert job.request is None, "the payload is dropped at the finish"
    assert store.unfinished() == []
    store.close()


def test_the_oldest_finished_results_are_dropped_first_and_say_why(tmp_path):
    store = JobStore(tmp_path)
    for index, job_id in enumerate(["old", "middle", "new"]):
        store.add(stored(job_id, finished_at=1000.0 + index, result_bytes=100))
    store.add(stored("running", result_bytes=100))
    store.commit()
    assert store.drop_over(300, keep=["old"], reason="over the cap") == ["middle"], "one being read is passed over"
    assert store.drop_over(300, keep=[], reason="over the cap") == []
    assert store.drop_over(100, keep=[], reason="over the cap") == ["old", "new"], "a running job's results are never dropped"
    assert store.job("old").dropped == "over the cap"
    assert store.expire(1001.5, keep=[]) == ["old", "middle"]
    assert store.job("old") is None and store.job("new") is not None
    store.close()


def test_one_server_per_data_folder(tmp_path):
    store = JobStore(tmp_path)
    with pytest.raises(DataFolderInUse, match="another ArtForge server uses the data folder"):
        JobStore(tmp_path)
    store.close()
    JobStore(tmp_path).close()
