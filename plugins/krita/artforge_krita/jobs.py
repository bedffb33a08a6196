"""Requests, worker threads and results for the Krita plugin, in plain Python (no `krita` import).

The Krita side gathers pixels on the main thread and hands them here; a worker thread talks to
the server through artforge_client and JobState, converts the result to the document's bytes,
and the main thread's timer only has to paste them into a layer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from artforge_client import Client, ImageResult, JobStream, prompt_help
from artforge_client.job_state import JobState, run_stream
from artforge_client.server import ServerSettings, check_connection
from artforge_client.v1 import image_pb2, jobs_pb2, pixels_pb2
from artforge_krita import controls, pixels
from artforge_krita.controls import ControlLayer
from artforge_krita.pixels import PixelFormat, Refused

PREVIEW_EVERY = 2  # steps between previews: each costs the worker a decode and a conversion
MAX_SEED = 2**64 - 1  # GenerateImageRequest.seed is a uint64; the server's own picks reach 2^63


def parse_seed(text: str) -> int:
    """The Seed box's text as a seed: empty means random (-1); any whole number up to MAX_SEED."""
    text = text.strip()
    if not text:
        return -1
    if not (text.isascii() and text.isdigit()):
        raise Refused(f"Seed: '{text}' is not a whole number; leave it empty for a random seed.")
    seed = int(text)
    if seed > MAX_SEED:
        raise Refused(f"Seed: {text} is above the largest seed, {MAX_SEED}.")
    return seed


@dataclass(frozen=True)
class Params:
    """What the docker's fields say."""

    prompt: str = ""
    model: str = ""
    steps: int = 20  # 0: the model's default
    strength: float = 0.5
    seed: int = -1  # -1: the server picks one
    style_index: int = 0


@dataclass(frozen=True)
class Region:
    """A rectangle of the document in image coordinates; requests round it up to multiples of 8
    (padding right and bottom), and results are cropped back to it."""

    x: int
    y: int
    width: int
    height: int

    @property
    def padded_width(self) -> int:
        return pixels.round_up8(self.width)

    @property
    def padded_height(self) -> int:
        return pixels.round_up8(self.height)


@dataclass(frozen=True)
class Target:
    """Where a result goes and what it needs on the way: the source bytes and the selection
    coverage for Fill, whose result is composited so that unselected pixels keep their bytes."""

    action: str  # "generate", "refine", "fill", "stylize", "preprocess" (From canvas)
    region: Region
    fmt: PixelFormat
    original: bytes = b""
    coverage: bytes = b""


@dataclass(frozen=True)
class LayerResult:
    """Pixels ready for Node.setPixelData at `region`, in `fmt`."""

    action: str
    region: Region
    fmt: PixelFormat
    data: bytes
    seed: int
    prompt: str
    layer_name: str = ""  # the new layer's name when the action does not set it ("Control: canny")

    @property
    def label(self) -> str:
        if self.layer_name:
            return f"{self.layer_name} {self.region.width}x{self.region.height}"
        words = self.prompt if len(self.prompt) <= 32 else self.prompt[:31] + "…"
        return f"{self.action} {self.region.width}x{self.region.height} seed {self.seed}: {words}".rstrip(": ")


# -- requests ------------------------------------------------------------------------------------


def _padded_source(source: bytes, target: Target) -> pixels_pb2.Image:
    region, fmt = target.region, target.fmt
    data = pixels.pad(source, region.width, region.height, region.padded_width, region.padded_height, fmt.pixel_size)
    return pixels.to_server(data, region.padded_width, region.padded_height, fmt)


def image_request(
    params: Params, target: Target, source: bytes = b"", control_layers: Sequence[ControlLayer] = ()
) -> image_pb2.GenerateImageRequest:
    """Generate (txt2img), Refine (img2img from `source`) or Fill (inpaint `source` through
    target.coverage), steered by `control_layers`: each layer's pixels over the region, padded
    as the source is, so the ControlNet sees them where the job paints."""
    region = target.region
    request = image_pb2.GenerateImageRequest(
        model=params.model,
        prompt=params.prompt,
        width=region.padded_width,
        height=region.padded_height,
        output_format=target.fmt.output_format,
        preview_every=PREVIEW_EVERY,
        options=jobs_pb2.JobOptions(label=f"krita: {target.action}"),
    )
    if params.steps > 0:
        request.steps = params.steps
    if params.seed >= 0:
        request.seed = params.seed
    for layer in control_layers:
        request.controls.append(controls.control_message(layer.choice, _padded_source(layer.data, target)))
    if target.action == "generate":
        request.mode = image_pb2.IMAGE_MODE_TXT2IMG
        return request
    request.init_image.CopyFrom(_padded_source(source, target))
    request.strength = params.strength
    if target.action == "refine":
        request.mode = image_pb2.IMAGE_MODE_IMG2IMG
    else:
        request.mode = image_pb2.IMAGE_MODE_INPAINT
        coverage = pixels.pad(target.coverage, region.width, region.height, region.padded_width, region.padded_height, 1)
        request.mask.CopyFrom(pixels.mask_image(coverage, region.padded_width, region.padded_height))
    return request


def stylize_request(params: Params, target: Target, source: bytes) -> image_pb2.StylizeRequest:
    """Stylize takes any size, so the region goes as it is."""
    region = target.region
    return image_pb2.StylizeRequest(
        image=pixels.to_server(source, region.width, region.height, target.fmt),
        style_index=params.style_index,
        strength=params.strength if params.strength > 0 else 1.0,
        output_format=target.fmt.output_format,
        options=jobs_pb2.JobOptions(label="krita: stylize"),
    )


def preprocess_request(preprocessor: str, target: Target, source: bytes) -> image_pb2.PreprocessRequest:
    """From canvas: the server makes a control image of `source` (the region of the visible canvas), at its size."""
    if preprocessor not in controls.PREPROCESSORS:
        raise Refused(f"The server makes control images with {', '.join(controls.PREPROCESSORS)}, not '{preprocessor}'.")
    region = target.region
    return image_pb2.PreprocessRequest(
        image=pixels.to_server(source, region.width, region.height, target.fmt),
        preprocessor=preprocessor,
        output_format=target.fmt.output_format,
        options=jobs_pb2.JobOptions(label=f"krita: {preprocessor} from canvas"),
    )


# -- results -------------------------------------------------------------------------------------


def layer_result(images: list, target: Target, prompt: str, layer_name: str = "") -> LayerResult:
    """The first colour image of a finished job (artforge_client.ImageResult list) as document bytes
    for the target; a gray one (a control image) becomes opaque gray."""
    colour = next((image for image in images if image.role == pixels_pb2.IMAGE_ROLE_COLOR), None)
    if colour is None:
        raise Refused("The server finished without an image.")
    region, fmt = target.region, target.fmt
    header = colour.header.image
    if header.width < region.width or header.height < region.height:
        raise Refused(f"The server returned {header.width}x{header.height} pixels for a {region.width}x{region.height} area.")
    data = pixels.crop(pixels.from_server(colour.image, fmt), header.width, region.width, region.height, fmt.pixel_size)
    if target.coverage:
        data = pixels.composite(target.original, data, target.coverage, region.width, fmt)
    return LayerResult(target.action, region, fmt, data, colour.header.provenance.seed, prompt, layer_name)


def preview_pixels(preview: pixels_pb2.Image, target: Target) -> bytes:
    """A step preview (a small 8-bit PNG) stretched over the request and cropped to the region, in the document's format."""
    region = target.region
    decoded = pixels.decode_png(preview.data)
    rgba = pixels.from_server(preview, PixelFormat("U8", linear=False))  # BGRA, which scaling does not care about
    scaled = pixels.scale_nearest(rgba, decoded.width, decoded.height, region.padded_width, region.padded_height, 4)
    bgra = pixels.crop(scaled, region.padded_width, region.width, region.height, 4)
    if target.fmt == PixelFormat("U8", linear=False):
        return bgra
    rgba8 = pixels.raw_image(region.width, region.height, 4, pixels_pb2.PIXEL_TYPE_UINT8, bytes(pixels.swap_red_blue(bytearray(bgra))))
    return pixels.from_server(rgba8, target.fmt)


# -- worker threads ------------------------------------------------------------------------------


class _Watched:
    """A JobStream that hands each preview to a callback on the way past (run_stream needs
    iteration, disconnect and the on_reconnecting hook, which goes to the stream)."""

    def __init__(self, stream: JobStream, on_preview: Callable[[pixels_pb2.Image], None]) -> None:
        self._stream = stream
        self._on_preview = on_preview

    @property
    def images(self) -> list[ImageResult]:
        return self._stream.images

    @property
    def on_reconnecting(self) -> Callable[[str], None] | None:
        return self._stream.on_reconnecting

    @on_reconnecting.setter
    def on_reconnecting(self, hook: Callable[[str], None] | None) -> None:
        self._stream.on_reconnecting = hook

    def __iter__(self) -> Iterator[jobs_pb2.JobEvent]:
        for event in self._stream:
            if event.HasField("progress") and event.progress.HasField("preview"):
                self._on_preview(event.progress.preview)
            yield event

    def disconnect(self) -> None:
        self._stream.disconnect()


@dataclass
class Job:
    """One call to the server on its own daemon thread. The main thread polls `state` and takes previews."""

    settings: ServerSettings
    label: str
    state: JobState = field(default_factory=JobState)
    request: Any = None  # the request sent, kept for the history and for tests to replay
    target: Target | None = None
    _preview: bytes | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take_preview(self) -> bytes | None:
        with self._lock:
            preview, self._preview = self._preview, None
            return preview

    def _set_preview(self, image: pixels_pb2.Image) -> None:
        try:
            data = preview_pixels(image, self.target)
        except Refused:
            return  # a preview is a courtesy; the result still comes
        with self._lock:
            self._preview = data

    def _run(self, work: Callable[[Client], None]) -> None:
        try:
            client = self.settings.client()
        except OSError as error:
            self.state.fail(f"Cannot read the TLS certificate '{self.settings.certificate}': {error.strerror or error}.")
            return
        try:
            work(client)
        finally:
            client.close()

    def _start(self, work: Callable[[Client], None]) -> Job:
        self.state.begin(self.label)  # a fresh state: always idle -> submitting
        threading.Thread(target=self._run, args=(work,), name=f"artforge-{self.label}", daemon=True).start()
        return self


ImageJobRequest = image_pb2.GenerateImageRequest | image_pb2.StylizeRequest | image_pb2.PreprocessRequest


def start_image_job(settings: ServerSettings, request: ImageJobRequest, target: Target) -> Job:
    """Submit on a worker; on success the state's result is a LayerResult (a Preprocess one named "Control: canny")."""
    job = Job(settings, target.action, request=request, target=target)
    prompt = getattr(request, "prompt", "")
    name = controls.layer_name(request.preprocessor) if isinstance(request, image_pb2.PreprocessRequest) else ""
    if name:
        prompt = request.preprocessor

    def work(client: Client) -> None:
        if isinstance(request, image_pb2.StylizeRequest):
            submit = client.stylize
        elif isinstance(request, image_pb2.PreprocessRequest):
            submit = client.preprocess
        else:
            submit = client.generate_image
        run_stream(
            job.state,
            lambda: _Watched(submit(request), job._set_preview),
            settings.address,
            result=lambda stream: layer_result(stream.images, target, prompt, name),
        )

    return job._start(work)


def start_prompt_expand(settings: ServerSettings, idea: str) -> Job:
    """ "Help me write this" (artforge_client.prompt_help): on success the state's result is the prompt."""
    job = Job(settings, "prompt")

    def work(client: Client) -> None:
        def prompt(stream: JobStream) -> str:
            return prompt_help.prompt_from_reply(idea, stream.finished.text)

        run_stream(job.state, lambda: prompt_help.start(client, idea), settings.address, result=prompt)

    return job._start(work)


def start_connection_test(settings: ServerSettings) -> Job:
    """Test Connection (and the style and model lists, with the styles' previews, and the ControlNets'
    types): on success the state's result is a ServerSummary."""
    job = Job(settings, "connection")
    return job._start(lambda client: check_connection(client, job.state, style_previews=True))


# -- history -------------------------------------------------------------------------------------


class History:
    """The last results, newest first, to paste again; bounded by count and by bytes (results can be big)."""

    def __init__(self, limit: int = 8, max_bytes: int = 512 << 20) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self._entries: list[LayerResult] = []

    def add(self, result: LayerResult) -> None:
        self._entries.insert(0, result)
        del self._entries[self.limit :]
        while len(self._entries) > 1 and sum(len(entry.data) for entry in self._entries) > self.max_bytes:
            self._entries.pop()

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> LayerResult:
        return self._entries[index]

    def labels(self) -> list[str]:
        return [entry.label for entry in self._entries]
