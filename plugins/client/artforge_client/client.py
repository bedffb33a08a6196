"""A small synchronous client for the ArtForge v1 API: grpcio and protobuf only.

    with Client("127.0.0.1:50051") as client:
        stream = client.generate_text("a misty forest at dawn", task="scene_description")
        for piece in stream.iter_text():
            print(piece, end="", flush=True)
        print(stream.finished.usage.tokens_per_second)

Every failure comes out as ArtForgeError, carrying the gRPC status code and the server's
sentence. Calls block; plugins run them on a worker thread.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from artforge_client.v1 import image_pb2, jobs_pb2, pixels_pb2, server_pb2, service_pb2_grpc, text_pb2

DEFAULT_ADDRESS = "127.0.0.1:50051"
UNARY_TIMEOUT = 30.0


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
    """

    def __init__(self, client: Client, call: grpc.CallIterator) -> None:
        self._client = client
        self._call = call
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
        try:
            for event in self._call:
                self.job_id = event.job_id
                self.last_sequence = event.sequence
                match event.WhichOneof("event"):
                    case "queued":
                        self.queue_position = event.queued.position
                    case "started":
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
                yield event
        except grpc.RpcError as error:
            raise ArtForgeError.from_rpc(error, self._client.address, self.job_id) from None

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
        """Only the text as it is generated (text jobs)."""
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
        """Drop the call: the server cancels the job unless it was submitted with keep=True."""
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
    ) -> None:
        """Connect to `address` (host:port). With `tls`, `root_certificates` (PEM bytes or a
        file) is the CA to trust, for servers with a self-signed certificate."""
        self.address = address
        self.timeout = timeout
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

    def _stream(self, method: grpc.UnaryStreamMultiCallable, request: object, timeout: float | None) -> JobStream:
        return JobStream(self, method(request, timeout=timeout, metadata=self._metadata))

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
        return self._stream(self._stub.GenerateText, request, timeout)

    def generate_image(self, request: image_pb2.GenerateImageRequest, timeout: float | None = None) -> JobStream:
        return self._stream(self._stub.GenerateImage, request, timeout)

    def stylize(self, request: image_pb2.StylizeRequest, timeout: float | None = None) -> JobStream:
        return self._stream(self._stub.Stylize, request, timeout)

    def watch(self, job_id: str, from_sequence: int = 0, timeout: float | None = None) -> JobStream:
        """Re-attach to a running or recently finished job, replaying from `from_sequence`."""
        return self._stream(self._stub.WatchJob, jobs_pb2.WatchJobRequest(job_id=job_id, from_sequence=from_sequence), timeout)

    def cancel(self, job_id: str) -> jobs_pb2.JobInfo:
        return self._unary(self._stub.CancelJob, jobs_pb2.CancelJobRequest(job_id=job_id))

    def get_job(self, job_id: str) -> jobs_pb2.JobInfo:
        return self._unary(self._stub.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))
