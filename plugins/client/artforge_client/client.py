"""A small synchronous client for the ArtForge v1 API: grpcio and protobuf only.

    with Client("127.0.0.1:50051") as client:
        stream = client.generate_text("a misty forest at dawn", task="scene_description")
        for piece in stream.iter_text():
            print(piece, end="", flush=True)
        print(stream.finished.usage.tokens_per_second)

Every failure comes out as ArtForgeError, carrying the gRPC status code and the server's
sentence. Calls block; plugins run them on a worker thread.

A job's stream survives its server going away: when the stream breaks with UNAVAILABLE (a crash,
a kill, a restart) after the job got its id, JobStream re-attaches with WatchJob from the next
event it has not seen, for up to Client.reattach_timeout seconds, and the caller's loop goes on
with the events it missed. A job the restarted server runs again from the start arrives as a
new `started` event with attempt > 1: the earlier attempt's text, images and preview are void.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from artforge_client.v1 import image_pb2, jobs_pb2, pixels_pb2, server_pb2, service_pb2_grpc, text_pb2

DEFAULT_ADDRESS = "127.0.0.1:50051"
UNARY_TIMEOUT = 30.0
# How long a JobStream keeps re-attaching to its job after the server went away: a restarted
# server loads its models before it listens again, which takes a minute for big ones.
REATTACH_TIMEOUT = 120.0
REATTACH_FIRST_DELAY, REATTACH_MAX_DELAY = 0.5, 5.0  # seconds between tries, doubling
# A re-attach refused with these is worth another try (not listening yet; max_concurrent_rpcs
# while every client re-attaches at once); anything else (NOT_FOUND: the restarted server does
# not have the job) ends the stream with the error that broke it.
REATTACH_RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
CANCEL_TIMEOUT = 5.0  # for the CancelJob of a re-attached job the caller dropped


class ArtForgeError(Exception):
    """A failed call: `code` is a grpc.StatusCode, `message` the server's sentence."""

    def __init__(self, code: grpc.StatusCode, message: str, job_id: str = "") -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.job_id = job_id

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, address: str, job_id: str = "") -> ArtForgeError:
        code, details = error.code(), error.details() or ""
        if code is grpc.StatusCode.UNAVAILABLE:
            details = f"cannot reach the ArtForge server at {address} ({details})"
        return cls(code, details, job_id)


@dataclass
class ImageResult:
    """One image of a job, reassembled from its chunks: `data` is the PNG or the raw pixels."""

    header: pixels_pb2.ImageResultHeader
    data: bytes

    @property
    def role(self) -> int:
        return self.header.role

    @property
    def image(self) -> pixels_pb2.Image:
        """The complete artforge.v1.Image (metadata and data)."""
        image = pixels_pb2.Image()
        image.CopyFrom(self.header.image)
        image.data = self.data
        return image


class JobStream:
    """The events of one job as they arrive. Iterating yields artforge.v1.JobEvent messages.

    Image results are reassembled on the way: `images` holds each completed one, checked
    against its SHA-256; `preview` is the latest step preview.

    When the server goes away mid-job, iteration does not end: the stream re-attaches (see the
    module's notes) and calls `on_reconnecting(sentence)` before each try, so a UI can say so.
    Partly received images continue where they stopped; a later attempt's `started` event
    empties `images` (in place), the partial ones and `preview`.
    """

    def __init__(
        self,
        client: Client,
        call: grpc.CallIterator,
        *,
        cancels_job: bool = False,
        timeout: float | None = None,
        on_reconnecting: Callable[[str], None] | None = None,
    ) -> None:
        """`cancels_job`: dropping this call cancels the job (a submission without keep); after a
        re-attach the WatchJob call does not, so disconnect() asks for the cancel itself.
        `timeout`: the call's deadline in seconds, which re-attached calls keep."""
        self._client = client
        self._call = call
        self._cancels_job = cancels_job
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._dropped = threading.Event()  # disconnect() was called: never re-attach
        self._reattached = False  # the submitting call broke: WatchJob calls follow the job now
        self._cancelling: grpc.Future | None = None  # the CancelJob that disconnect() sent then
        self.on_reconnecting = on_reconnecting
        self.job_id = ""
        self.last_sequence = -1
        self.queue_position: int | None = None
        self.started: jobs_pb2.JobStarted | None = None
        self.finished: jobs_pb2.JobFinished | None = None
        self.progress: jobs_pb2.JobProgress | None = None
        self.preview: pixels_pb2.Image | None = None
        self.images: list[ImageResult] = []
        self._incoming: dict[int, tuple[pixels_pb2.ImageResultHeader, bytearray]] = {}

    def __iter__(self) -> Iterator[jobs_pb2.JobEvent]:
        lost: grpc.RpcError | None = None  # what broke the stream, while re-attaching
        lost_at = give_up_at = 0.0
        delay = REATTACH_FIRST_DELAY
        while True:
            try:
                for event in self._call:
                    lost, delay = None, REATTACH_FIRST_DELAY
                    self._apply(event)
                    yield event
                return
            except grpc.RpcError as error:
                if lost is None and not self._dropped.is_set() and self._may_reattach(error):
                    self._reattached = True  # from now on, a disconnect() must cancel the job itself
                    lost, lost_at = error, time.monotonic()
                    give_up_at = lost_at + self._client.reattach_timeout
                    if self._deadline is not None:
                        give_up_at = min(give_up_at, self._deadline)
                elif self._dropped.is_set() or lost is None:
                    self._cancel_dropped_job()
                    raise ArtForgeError.from_rpc(error, self._client.address, self.job_id) from None
                elif error.code() not in REATTACH_RETRY_CODES:
                    raise self._gave_up(lost, error) from None
                self._wait_to_reattach(lost, lost_at, give_up_at, delay)
                delay = min(delay * 2, REATTACH_MAX_DELAY)
                self._reattach()

    def _may_reattach(self, error: grpc.RpcError) -> bool:
        # Only a server that went away, and only once the job has an id and before it finished:
        # any other status is the job's outcome or a refusal, and a stream that ends cleanly
        # without a finished event is a server's bug that a re-attach would only hide.
        return (
            error.code() is grpc.StatusCode.UNAVAILABLE
            and bool(self.job_id)
            and self.finished is None
            and self._client.reattach_timeout > 0
        )

    def _wait_to_reattach(self, lost: grpc.RpcError, lost_at: float, give_up_at: float, delay: float) -> None:
        now = time.monotonic()
        if now >= give_up_at:
            raise self._gave_up(lost)
        if self.on_reconnecting is not None:
            since = f" ({now - lost_at:.0f} s)" if now - lost_at >= 1 else ""
            self.on_reconnecting(f"Reconnecting to the ArtForge server at {self._client.address}{since}...")
        if self._dropped.wait(min(delay, give_up_at - now)):
            self._cancel_dropped_job()
            raise ArtForgeError(grpc.StatusCode.CANCELLED, "cancelled while reconnecting", self.job_id)

    def _reattach(self) -> None:
        timeout = None if self._deadline is None else max(self._deadline - time.monotonic(), 0.001)
        self._call = self._client._watch_call(self.job_id, self.last_sequence + 1, timeout)
        if self._dropped.is_set():  # disconnect() ran while the new call was being made
            self._call.cancel()

    def _cancel_dropped_job(self) -> None:
        """On the iterating thread, after disconnect(): a job whose submitting call broke is not
        cancelled by leaving, so ask the server, and wait for the answer (the caller may close
        the client next, which would drop the request unsent)."""
        if not (self._dropped.is_set() and self._reattached and self._cancels_job and self.finished is None):
            return
        cancelling = self._cancelling or self._client._cancel_soon(self.job_id)
        try:
            cancelling.result()
        except (grpc.RpcError, grpc.FutureCancelledError):
            pass  # the server is still down: it runs the job once it is back, and keeps the result a while

    def _gave_up(self, lost: grpc.RpcError, refused: grpc.RpcError | None = None) -> ArtForgeError:
        """The error that broke the stream, for a caller to report as a lost server."""
        error = ArtForgeError.from_rpc(lost, self._client.address, self.job_id)
        if refused is None:
            return error
        message = f"{error.message}; re-attaching was refused: {refused.code().name}: {refused.details()}"
        return ArtForgeError(error.code, message, self.job_id)

    def _apply(self, event: jobs_pb2.JobEvent) -> None:
        self.job_id = event.job_id
        self.last_sequence = event.sequence
        match event.WhichOneof("event"):
            case "queued":
                self.queue_position = event.queued.position
            case "started":
                if event.started.attempt > 1:  # the job runs again from the start: the earlier attempt's results are void
                    self.images.clear()  # in place: wrappers may hold the list
                    self._incoming.clear()
                    self.progress = self.preview = None
                self.started = event.started
            case "progress":
                self.progress = event.progress
                if event.progress.HasField("preview"):
                    self.preview = event.progress.preview
            case "image_header":
                self._incoming[event.image_header.result_index] = (event.image_header, bytearray())
                self._complete(event.image_header.result_index)
            case "image_chunk":
                self._add_chunk(event.image_chunk)
            case "finished":
                self.finished = event.finished

    def _add_chunk(self, chunk: pixels_pb2.ImageDataChunk) -> None:
        _, data = self._incoming[chunk.result_index]
        if chunk.offset != len(data):
            raise ArtForgeError(grpc.StatusCode.DATA_LOSS, f"result {chunk.result_index}: chunk at {chunk.offset}, expected {len(data)}")
        data.extend(chunk.data)
        self._complete(chunk.result_index)

    def _complete(self, index: int) -> None:
        header, data = self._incoming[index]
        if len(data) < header.total_bytes:
            return
        del self._incoming[index]
        if hashlib.sha256(data).hexdigest() != header.sha256:
            raise ArtForgeError(grpc.StatusCode.DATA_LOSS, f"result {index}: SHA-256 of the {len(data)} bytes received does not match")
        self.images.append(ImageResult(header, bytes(data)))

    def iter_text(self) -> Iterator[str]:
        """Only the text as it is generated (text jobs). A job that ran again after a server
        restart (started.attempt > 1) streams its text again from the beginning."""
        for event in self:
            if event.HasField("text"):
                yield event.text.text

    def wait(self) -> jobs_pb2.JobFinished:
        """Read to the end; the final event (ArtForgeError if the job did not succeed)."""
        for _ in self:
            pass
        if self.finished is None:  # a server's bug, or one from before WatchJob checked from_sequence
            job = f" of job {self.job_id}" if self.job_id else ""
            message = f"the events{job} ended without a finished event"
            raise ArtForgeError(grpc.StatusCode.DATA_LOSS, message, self.job_id)
        return self.finished

    def cancel(self) -> jobs_pb2.JobInfo:
        """Ask the server to cancel the job; the stream then ends with CANCELLED."""
        return self._client.cancel(self.job_id)

    def disconnect(self) -> None:
        """Drop the call, and stop re-attaching: the server cancels the job unless it was submitted
        with keep=True. Returns at once (a UI's Cancel calls it)."""
        if self._reattached and self._cancels_job and self.finished is None:
            # Leaving a WatchJob call cancels nothing: ask, without waiting here (the iterating
            # thread waits for the answer, see _cancel_dropped_job).
            self._cancelling = self._client._cancel_soon(self.job_id)
        self._dropped.set()
        self._call.cancel()


class Client:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | str | Path | None = None,
        timeout: float = UNARY_TIMEOUT,
        reattach_timeout: float = REATTACH_TIMEOUT,
    ) -> None:
        """Connect to `address` (host:port). With `tls`, `root_certificates` (PEM bytes or a
        file) is the CA to trust, for servers with a self-signed certificate. `reattach_timeout`:
        how long a job's stream keeps trying to re-attach after losing the server (0: never)."""
        self.address = address
        self.timeout = timeout
        self.reattach_timeout = reattach_timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 256 << 20)]
        if tls:
            if isinstance(root_certificates, (str, Path)):
                root_certificates = Path(root_certificates).read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = service_pb2_grpc.ArtForgeStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _unary(self, method: grpc.UnaryUnaryMultiCallable, request: object, timeout: float | None = None) -> object:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise ArtForgeError.from_rpc(error, self.address) from None

    def _call(self, method: grpc.UnaryStreamMultiCallable, request: object, timeout: float | None) -> grpc.CallIterator:
        return method(request, timeout=timeout, metadata=self._metadata)

    def _stream(self, method: grpc.UnaryStreamMultiCallable, request: object, timeout: float | None, keep: bool) -> JobStream:
        """A submission's stream; `keep`: the job was submitted with keep_on_disconnect."""
        return JobStream(self, self._call(method, request, timeout), cancels_job=not keep, timeout=timeout)

    def _watch_call(self, job_id: str, from_sequence: int, timeout: float | None) -> grpc.CallIterator:
        return self._call(self._stub.WatchJob, jobs_pb2.WatchJobRequest(job_id=job_id, from_sequence=from_sequence), timeout)

    def _cancel_soon(self, job_id: str) -> grpc.Future:
        """CancelJob without waiting for the answer; a short timeout, since it is sent as a job is dropped."""
        request = jobs_pb2.CancelJobRequest(job_id=job_id)
        return self._stub.CancelJob.future(request, timeout=min(self.timeout, CANCEL_TIMEOUT), metadata=self._metadata)

    # -- server ---------------------------------------------------------------------------

    def server_info(self, style_previews: bool = False) -> server_pb2.ServerInfo:
        """Also the cheapest way to test a connection and a token. `style_previews` fills each
        style's preview_png (about 1 MB in all)."""
        return self._unary(self._stub.GetServerInfo, server_pb2.GetServerInfoRequest(include_style_previews=style_previews))

    def list_models(self, kind: int = server_pb2.MODEL_KIND_UNSPECIFIED) -> list[server_pb2.ModelInfo]:
        return list(self._unary(self._stub.ListModels, server_pb2.ListModelsRequest(kind=kind)).models)

    # -- jobs -----------------------------------------------------------------------------

    def generate_text(
        self,
        prompt: str,
        *,
        task: str = "",
        model: str = "",
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Iterable[str] = (),
        seed: int | None = None,
        repetition_penalty: float | None = None,
        history: Iterable[tuple[str, str]] = (),
        system_prompt: str = "",
        json_schema: str = "",
        priority: int = 0,
        keep: bool = False,
        label: str = "",
        timeout: float | None = None,
    ) -> JobStream:
        """Submit a text job. `timeout` (seconds) is the job's deadline; None waits for as long as it takes.
        `json_schema` (JSON Schema text) constrains the reply to one JSON value matching it."""
        request = text_pb2.GenerateTextRequest(
            prompt=prompt,
            task=task,
            model=model,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=list(stop),
            seed=seed,
            repetition_penalty=repetition_penalty,
            history=[text_pb2.ChatMessage(role=role, content=content) for role, content in history],
            system_prompt=system_prompt,
            json_schema=json_schema,
            options=jobs_pb2.JobOptions(priority=priority, keep_on_disconnect=keep, label=label),
        )
        return self._stream(self._stub.GenerateText, request, timeout, keep)

    def generate_image(self, request: image_pb2.GenerateImageRequest, timeout: float | None = None) -> JobStream:
        return self._stream(self._stub.GenerateImage, request, timeout, request.options.keep_on_disconnect)

    def stylize(self, request: image_pb2.StylizeRequest, timeout: float | None = None) -> JobStream:
        return self._stream(self._stub.Stylize, request, timeout, request.options.keep_on_disconnect)

    def preprocess(self, request: image_pb2.PreprocessRequest, timeout: float | None = None) -> JobStream:
        """A control image made from a picture on the server: one gray image at the picture's size."""
        return self._stream(self._stub.Preprocess, request, timeout, request.options.keep_on_disconnect)

    def watch(self, job_id: str, from_sequence: int = 0, timeout: float | None = None) -> JobStream:
        """Re-attach to a running or recently finished job, replaying from `from_sequence`."""
        return JobStream(self, self._watch_call(job_id, from_sequence, timeout), timeout=timeout)

    def cancel(self, job_id: str) -> jobs_pb2.JobInfo:
        return self._unary(self._stub.CancelJob, jobs_pb2.CancelJobRequest(job_id=job_id))

    def get_job(self, job_id: str) -> jobs_pb2.JobInfo:
        return self._unary(self._stub.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))

    def list_jobs(self, all_users: bool = False, include_finished: bool = False, limit: int = 0) -> jobs_pb2.ListJobsResponse:
        """The caller's jobs (an admin's: everyone's, with `all_users`): queued in the order they
        will run, then running, then finished ones if asked."""
        request = jobs_pb2.ListJobsRequest(all_users=all_users, include_finished=include_finished, limit=limit)
        return self._unary(self._stub.ListJobs, request)

    def server_stats(self) -> server_pb2.ServerStats:
        """Per user: jobs in flight, device time, quota headroom (an artist sees their own)."""
        return self._unary(self._stub.GetServerStats, server_pb2.GetServerStatsRequest())
