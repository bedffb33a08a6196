"""Jobs that outlive their server: JobStream re-attaches, JobState says so, and the result comes.

The first part needs no server: JobState and run_stream fed by scripted streams (the surface
run_stream uses), and JobStream's re-attach loop against an address where nothing listens,
behind a first call that breaks the way a gRPC call does when its server dies. The second part
kills a real server with SIGKILL mid-job and starts it again on the same port and folder
(tests/restarting_server.py), and the very JobStream goes on to the job's result.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time

import grpc
import pytest

from artforge_client import ArtForgeError, Client, JobStream
from artforge_client.job_state import JobState, Phase, run_stream
from artforge_client.v1 import jobs_pb2, pixels_pb2
from tests.restarting_server import RestartingServer, free_port

ADDRESS = "gpu-box:50051"
# A reply that cannot end early: the grammar allows the end only after twelve names, so the kill
# after a few tokens always comes while the job runs, whatever the backend's sampling writes.
TWELVE_NAMES = json.dumps({"type": "array", "items": {"type": "string", "minLength": 4, "maxLength": 12}, "minItems": 12, "maxItems": 12})
RECONNECTING = f"Reconnecting to the ArtForge server at {ADDRESS}..."


def event(sequence: int, job_id: str = "job-1", **fields) -> jobs_pb2.JobEvent:
    return jobs_pb2.JobEvent(job_id=job_id, sequence=sequence, **fields)


def started(sequence: int, attempt: int) -> jobs_pb2.JobEvent:
    return event(sequence, started=jobs_pb2.JobStarted(attempt=attempt))


def text(sequence: int, piece: str) -> jobs_pb2.JobEvent:
    return event(sequence, text=jobs_pb2.TextDelta(text=piece))


def succeeded(sequence: int, whole: str = "") -> jobs_pb2.JobEvent:
    return event(sequence, finished=jobs_pb2.JobFinished(state=jobs_pb2.JOB_STATE_SUCCEEDED, text=whole))


# -- JobState ----------------------------------------------------------------------------------------


def test_a_job_run_again_drops_its_text_and_says_why():
    state = JobState()
    state.begin("describe", max_tokens=10)
    for item in (started(1, 1), text(2, "The barn "), text(3, "is red")):
        assert state.apply_event(item)
    assert state.take_new_text() == ("The barn is red", False)
    state.apply_event(text(4, " and"))  # written by the first attempt, never taken: void too
    assert state.apply_event(started(5, 2))
    snapshot = state.snapshot()
    assert (snapshot.phase, snapshot.progress, snapshot.message) == (Phase.RUNNING, 0.0, "Running again (the server restarted)")
    state.apply_event(text(6, "The barn"))
    assert state.snapshot().message == "Writing (again: the server restarted)"
    assert state.take_new_text() == ("The barn", True)  # one call: clear what is shown, then this
    state.apply_event(text(7, " stands"))
    assert state.take_new_text() == (" stands", False)
    assert state.take_text() == ""


def test_reconnecting_shows_and_a_requeued_job_is_not_stale():
    state = JobState()
    state.begin()
    state.apply_event(started(1, 1))
    assert not state.queued(2)  # a queued event after the start is stale...
    assert state.reconnecting(RECONNECTING)
    snapshot = state.snapshot()
    assert (snapshot.phase, snapshot.message) == (Phase.RUNNING, RECONNECTING)
    assert state.apply_event(event(3, queued=jobs_pb2.JobQueued(position=1)))  # ...unless the server restarted
    assert state.snapshot().phase is Phase.QUEUED and state.snapshot().message.startswith("Waiting in the queue")
    assert state.apply_event(started(4, 2)) and state.snapshot().phase is Phase.RUNNING
    assert not state.queued(0)  # running again: stale once more
    state.succeed()
    assert not state.reconnecting(RECONNECTING) and state.snapshot().message == "Done"


# -- run_stream with scripted streams --------------------------------------------------------------


class ScriptedStream:
    """Events, and calls (`step(stream)`) in between: the surface run_stream uses."""

    def __init__(self, script: list, error: ArtForgeError | None = None) -> None:
        self.script, self.error = script, error
        self.on_reconnecting = None
        self.dropped = threading.Event()

    def __iter__(self):
        for step in self.script:
            if callable(step):
                step(self)
            else:
                yield step
        if self.error is not None:
            raise self.error

    def disconnect(self) -> None:
        self.dropped.set()


def test_run_stream_says_reconnecting_then_the_result_comes():
    state, seen = JobState(), []
    state.begin()

    def lose_the_server(stream: ScriptedStream) -> None:
        stream.on_reconnecting(RECONNECTING)
        seen.append(state.snapshot().message)

    script = [started(0, 1), text(1, "Half a"), lose_the_server, started(2, 2), text(3, "A whole"), text(4, " text")]
    stream = ScriptedStream([*script, succeeded(5, "A whole text")])
    run_stream(state, lambda: stream, ADDRESS, result=lambda _: "result")
    assert seen == [RECONNECTING]
    snapshot = state.snapshot()
    assert (snapshot.phase, snapshot.result) == (Phase.SUCCEEDED, "result")
    assert state.take_new_text() == ("A whole text", True)


def test_run_stream_reports_a_server_that_did_not_come_back():
    state = JobState()
    state.begin()
    lost = ArtForgeError(grpc.StatusCode.UNAVAILABLE, "cannot reach the ArtForge server (Socket closed)", "job-1")
    stream = ScriptedStream([started(0, 1), lambda s: s.on_reconnecting(RECONNECTING)], error=lost)
    run_stream(state, lambda: stream, ADDRESS)
    snapshot = state.snapshot()
    assert snapshot.phase is Phase.FAILED
    assert snapshot.message.startswith(f"Lost the ArtForge server at {ADDRESS} while the job ran"), snapshot.message


# -- JobStream's re-attach loop, against an address where nothing listens ------------------------


class CallError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class BrokenCall:
    """A gRPC call whose server died: the events it had, then the status a dead connection gives."""

    def __init__(self, events: list[jobs_pb2.JobEvent], code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.events, self.code = events, code

    def __iter__(self):
        yield from self.events
        raise CallError(self.code, "Socket closed")

    def cancel(self) -> None:
        pass


@pytest.fixture
def nowhere():
    """A client of a port where nothing listens, re-attaching for 1.2 s."""
    with Client(f"127.0.0.1:{free_port()}", reattach_timeout=1.2) as client:
        yield client


def test_jobstream_reattaches_for_a_bounded_time_then_gives_up(nowhere):
    messages: list[str] = []
    stream = JobStream(nowhere, BrokenCall([event(0, queued=jobs_pb2.JobQueued()), started(1, 1)]), on_reconnecting=messages.append)
    seen, began = [], time.monotonic()
    with pytest.raises(ArtForgeError) as raised:
        for item in stream:
            seen.append(item.sequence)
    waited = time.monotonic() - began
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE and raised.value.job_id == "job-1"
    assert "Socket closed" in raised.value.message  # the error that broke the stream, not a later try's
    assert seen == [0, 1] and stream.last_sequence == 1
    assert 1.2 <= waited < 4, waited
    assert len(messages) >= 2 and all(m.startswith(f"Reconnecting to the ArtForge server at {nowhere.address}") for m in messages)


def test_disconnect_stops_reattaching_at_once(nowhere):
    nowhere.reattach_timeout = 60
    trying = threading.Event()
    stream = JobStream(nowhere, BrokenCall([started(0, 1)]), cancels_job=True, on_reconnecting=lambda _: trying.set())
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            list(stream)
        except ArtForgeError as error:
            outcome.append(error)

    worker = threading.Thread(target=read)
    worker.start()
    assert trying.wait(10)
    dropped = time.monotonic()
    stream.disconnect()
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - dropped < 6  # the CancelJob to the dead server fails fast
    assert outcome[0].code is grpc.StatusCode.CANCELLED


@pytest.mark.parametrize(
    ("events", "code", "reattach_timeout"),
    [
        ([started(0, 1)], grpc.StatusCode.INTERNAL, 1.2),  # the job's own failure
        ([], grpc.StatusCode.UNAVAILABLE, 1.2),  # never reached: no job to re-attach to
        ([started(0, 1)], grpc.StatusCode.UNAVAILABLE, 0),  # re-attaching turned off
        ([started(0, 1), succeeded(1)], grpc.StatusCode.UNAVAILABLE, 1.2),  # already finished
    ],
)
def test_only_a_lost_server_mid_job_is_reattached(nowhere, events, code, reattach_timeout):
    nowhere.reattach_timeout = reattach_timeout
    messages: list[str] = []
    stream = JobStream(nowhere, BrokenCall(events, code), on_reconnecting=messages.append)
    with pytest.raises(ArtForgeError) as raised:
        list(stream)
    assert raised.value.code is code and messages == []


def test_a_later_attempt_voids_what_the_earlier_one_sent(nowhere):
    def result(index: int, data: bytes, chunks: int = 2) -> list[jobs_pb2.JobEvent]:
        """A colour result's header and its first `chunks` chunks of 4 bytes."""
        sha = hashlib.sha256(data).hexdigest()
        header = pixels_pb2.ImageResultHeader(result_index=index, role=pixels_pb2.IMAGE_ROLE_COLOR, total_bytes=len(data), sha256=sha)
        parts = [pixels_pb2.ImageDataChunk(result_index=index, offset=offset, data=data[offset : offset + 4]) for offset in (0, 4)]
        return [event(0, image_header=header), *(event(0, image_chunk=part) for part in parts[:chunks])]

    preview = event(0, progress=jobs_pb2.JobProgress(preview=pixels_pb2.Image(data=b"png")))
    first = [started(0, 1), preview, *result(0, b"firstone"), *result(1, b"half-way", chunks=1)]
    # The second attempt's results go on counting from the first's (ImageResultHeader.result_index).
    second = [started(0, 2), *result(2, b"newimage"), succeeded(0)]
    stream = JobStream(nowhere, iter(first))
    images = stream.images
    list(stream)
    assert [image.data for image in images] == [b"firstone"] and stream.preview is not None
    stream = JobStream(nowhere, iter([*first, started(0, 2)]))
    images = stream.images
    list(stream)
    assert images == [] and stream.preview is None and stream.progress is None and stream.started.attempt == 2
    stream = JobStream(nowhere, iter([*first, *second]))
    images = stream.images
    list(stream)
    assert [image.data for image in images] == [b"newimage"] and images is stream.images  # emptied in place: wrappers hold it


# -- a real server, killed mid-job and started again -------------------------------------------------


@pytest.fixture(scope="module")
def restarting(models_dir, tmp_path_factory):
    server = RestartingServer(models_dir, tmp_path_factory.mktemp("restarting"))
    yield server
    server.stop()


def test_a_text_job_goes_on_after_a_server_kill(restarting):
    """The running job runs again as attempt 2, and a job queued behind it waits its turn; the
    streams of both go on. A JobState fed as run_stream feeds it shows the artist the new text only."""
    state, shown, messages = JobState(), [], []
    state.begin(max_tokens=400)

    def reconnecting(message: str) -> None:
        messages.append(message)
        state.reconnecting(message)

    with restarting.client() as client:
        stream = client.generate_text("Name twelve creatures of a fantasy world.", max_tokens=400, seed=7, json_schema=TWELVE_NAMES)
        stream.on_reconnecting = reconnecting
        events: list[jobs_pb2.JobEvent] = []
        for item in stream:
            events.append(item)
            state.apply_event(item, restarting.address)
            if item.HasField("started") and item.started.attempt == 1:
                queued = client.generate_text("Name a colour.", max_tokens=8, seed=1)
                waiter = threading.Thread(target=queued.wait)  # sets queued.finished
                waiter.start()
            if sum(e.HasField("text") for e in events) == 3 and not messages:
                restarting.kill()
            text, restarted = state.take_new_text()  # as a host's timer takes it
            if restarted:
                shown.clear()
            shown.append(text)
        waiter.join(60)
    assert restarting.restarts == 1, restarting.restart_error
    assert messages and all(m.startswith(f"Reconnecting to the ArtForge server at {restarting.address}") for m in messages)
    assert [e.sequence for e in events] == list(range(len(events))), "an event was lost or renumbered"
    attempts = [e.started.attempt for e in events if e.HasField("started")]
    assert attempts == [1, 2], attempts
    last_start = max(i for i, e in enumerate(events) if e.HasField("started"))
    first_try = "".join(e.text.text for e in events[:last_start] if e.HasField("text"))
    second_try = "".join(e.text.text for e in events[last_start:] if e.HasField("text"))
    assert stream.finished.state == jobs_pb2.JOB_STATE_SUCCEEDED and stream.finished.text == second_try
    assert second_try.startswith(first_try) and len(second_try) > len(first_try)  # the same seed: the same text, and more
    assert "".join(shown) == second_try and state.snapshot().phase is Phase.SUCCEEDED
    assert queued.finished is not None and queued.finished.state == jobs_pb2.JOB_STATE_SUCCEEDED and queued.started.attempt == 1


def test_a_job_the_restarted_server_does_not_have_gives_up_at_once(restarting):
    with restarting.client(reattach_timeout=60) as client:
        stream = JobStream(client, BrokenCall([started(0, 1)]))  # "job-1" was never submitted there
        began = time.monotonic()
        with pytest.raises(ArtForgeError) as raised:
            list(stream)
    assert time.monotonic() - began < 5, "a refused re-attach was tried again"
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE and "re-attaching was refused: NOT_FOUND" in raised.value.message
