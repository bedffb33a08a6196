"""The Krita plugin's plain-Python parts (no Krita): pixel formats, PNG reading, masks, requests, history, bundling."""

from __future__ import annotations

import io
import socket
import struct
import sys
import time
from array import array

import numpy as np
import png
import pytest
from PIL import Image as PILImage

from artforge_client import ImageResult
from artforge_client.colors import linear_to_srgb
from artforge_client.job_state import Phase
from artforge_client.server import ServerSettings
from artforge_client.v1 import image_pb2, pixels_pb2
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "plugins" / "krita"))

from artforge_krita import bundled, controls, jobs, pixels
from artforge_krita.pixels import PixelFormat, Refused
from artforge_krita.status import StatusLine

U8, U16, U16_LINEAR, F16_LINEAR, F32_LINEAR = (
    PixelFormat("U8", False),
    PixelFormat("U16", False),
    PixelFormat("U16", True),
    PixelFormat("F16", True),
    PixelFormat("F32", True),
)
CODES = {"U8": "B", "U16": "H", "F16": "e", "F32": "f"}


def krita_bytes(rgba: np.ndarray, fmt: PixelFormat) -> bytes:
    """float RGBA (H x W x 4, 0..1, in the document's own transfer) as Krita lays it out."""
    ordered = rgba[..., [2, 1, 0, 3]] if fmt.bgra else rgba
    if fmt.depth == "U8":
        return np.rint(ordered * 255).astype("<u1").tobytes()
    if fmt.depth == "U16":
        return np.rint(ordered * 65535).astype("<u2").tobytes()
    return ordered.astype("<f2" if fmt.depth == "F16" else "<f4").tobytes()


def values(data: bytes, fmt: PixelFormat) -> np.ndarray:
    return np.frombuffer(data, {"U8": "<u1", "U16": "<u2", "F16": "<f2", "F32": "<f4"}[fmt.depth]).astype(np.float64)


def gradient(width: int = 13, height: int = 7, alpha: bool = True) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    rgba = np.stack([x / (width - 1), y / (height - 1), ((x * 5 + y * 3) % 11) / 10, np.ones_like(x, float)], -1)
    if alpha:
        rgba[..., 3] = ((x + y) % 4) / 3
    return rgba


def png_bytes(pixels: np.ndarray, bits: int) -> bytes:
    height, width, planes = pixels.shape
    buffer = io.BytesIO()
    png.Writer(width, height, greyscale=planes < 3, alpha=planes in (2, 4), bitdepth=bits).write(
        buffer, pixels.reshape(height, -1).tolist()
    )
    return buffer.getvalue()


# -- formats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "profile", "linear"),
    [
        ("U8", "sRGB-elle-V2-srgbtrc.icc", False),
        ("U16", "sRGB-elle-V2-g10.icc", True),
        ("F32", "sRGB built-in", False),
        ("F16", "scRGB (linear)", True),
    ],
)
def test_document_formats(depth, profile, linear):
    assert pixels.document_format("RGBA", depth, profile) == PixelFormat(depth, linear)


@pytest.mark.parametrize(
    ("model", "depth", "profile", "words"),
    [("CMYKA", "U8", "Fogra", "RGBA"), ("RGBA", "U32", "sRGB", "U32"), ("RGBA", "U8", "Rec2020-elle-V4-g10.icc", "sRGB documents only")],
)
def test_unsupported_documents_are_refused_with_a_reason(model, depth, profile, words):
    with pytest.raises(Refused, match=words):
        pixels.document_format(model, depth, profile)


def test_output_formats_follow_the_document():
    assert U8.output_format == pixels_pb2.OUTPUT_FORMAT_PNG8
    assert U16.output_format == pixels_pb2.OUTPUT_FORMAT_PNG16
    assert U16_LINEAR.output_format == F32_LINEAR.output_format == pixels_pb2.OUTPUT_FORMAT_RAW_FLOAT32


# -- to the server and back ------------------------------------------------------------------------


def test_8_bit_bgra_goes_out_as_rgba_bytes():
    rgba = gradient()
    image = pixels.to_server(krita_bytes(rgba, U8), 13, 7, U8)
    assert (image.encoding, image.dtype, image.channels) == (pixels_pb2.IMAGE_ENCODING_RAW, pixels_pb2.PIXEL_TYPE_UINT8, 4)
    assert image.data == np.rint(rgba * 255).astype(np.uint8).tobytes()


def test_16_bit_srgb_goes_out_as_little_endian_rgba():
    rgba = gradient()
    image = pixels.to_server(krita_bytes(rgba, U16), 13, 7, U16)
    assert image.dtype == pixels_pb2.PIXEL_TYPE_UINT16
    assert image.data == np.rint(rgba * 65535).astype("<u2").tobytes()


@pytest.mark.parametrize("fmt", [U16_LINEAR, F16_LINEAR, F32_LINEAR], ids=str)
def test_linear_documents_go_out_as_srgb_floats_with_alpha_untouched(fmt):
    rgba = gradient()
    image = pixels.to_server(krita_bytes(rgba, fmt), 13, 7, fmt)
    assert image.dtype == pixels_pb2.PIXEL_TYPE_FLOAT32
    sent = np.frombuffer(image.data, "<f4").reshape(7, 13, 4)
    stored = values(krita_bytes(rgba, fmt), fmt).reshape(7, 13, 4)
    stored = stored[..., [2, 1, 0, 3]] if fmt.bgra else stored
    scale = 65535.0 if fmt.depth == "U16" else 1.0
    expected = np.vectorize(linear_to_srgb)(stored[..., :3] / scale)
    assert np.abs(sent[..., :3] - expected).max() < 1e-6
    assert np.abs(sent[..., 3] - stored[..., 3] / scale).max() < 1e-6


@pytest.mark.parametrize(("fmt", "bits"), [(U8, 8), (U16, 16)], ids=["png8", "png16"])
def test_png_results_land_bit_exact_in_integer_srgb_documents(fmt, bits):
    maximum = (1 << bits) - 1
    rgb = np.rint(gradient(alpha=False)[..., :3] * maximum).astype(np.uint16)
    image = pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, data=png_bytes(rgb, bits))
    got = values(pixels.from_server(image, fmt), fmt).reshape(7, 13, 4)
    assert (got[..., [2, 1, 0]] == rgb).all() and (got[..., 3] == maximum).all()


@pytest.mark.parametrize("fmt", [U8, U16, U16_LINEAR, F16_LINEAR, F32_LINEAR], ids=str)
def test_a_document_survives_the_trip_through_the_servers_formats(fmt):
    """What goes out comes back (the server returns the input at strength 0) within the format's precision."""
    original = krita_bytes(gradient(), fmt)
    sent = pixels.to_server(original, 13, 7, fmt)
    back = sent
    if fmt.output_format != pixels_pb2.OUTPUT_FORMAT_RAW_FLOAT32:
        dtype = "<u1" if fmt.depth == "U8" else "<u2"
        back = pixels_pb2.Image(
            encoding=pixels_pb2.IMAGE_ENCODING_PNG,
            data=png_bytes(np.frombuffer(sent.data, dtype).reshape(7, 13, 4), 8 * np.dtype(dtype).itemsize),
        )
    elif sent.dtype != pixels_pb2.PIXEL_TYPE_FLOAT32:
        raise AssertionError("float documents go out as float32")
    tolerance = {"U8": 0, "U16": 0 if not fmt.linear else 2, "F16": 1e-3, "F32": 1e-6}[fmt.depth]
    assert np.abs(values(pixels.from_server(back, fmt), fmt) - values(original, fmt)).max() <= tolerance


def test_gray_and_gray_alpha_results_expand_to_rgba():
    gray = np.array([[[0], [128], [255]]], np.uint16)
    got = pixels.from_server(pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, data=png_bytes(gray, 8)), U8)
    assert got == bytes([0, 0, 0, 255, 128, 128, 128, 255, 255, 255, 255, 255])
    raw = pixels.raw_image(2, 1, 2, pixels_pb2.PIXEL_TYPE_FLOAT32, array("f", [0.5, 0.25, 1.0, 1.0]).tobytes())
    assert struct.unpack("<8f", pixels.from_server(raw, PixelFormat("F32", False))) == (0.5, 0.5, 0.5, 0.25, 1.0, 1.0, 1.0, 1.0)


def test_filtered_pngs_decode_like_pillow():
    """Pillow writes adaptive filters (sub, up, average, paeth); the server writes none, which is the fast path."""
    rng = np.random.default_rng(0)
    picture = np.clip(np.cumsum(rng.integers(-9, 10, (20, 23, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(picture).save(buffer, format="PNG", optimize=True)
    decoded = pixels.decode_png(buffer.getvalue())
    assert (decoded.width, decoded.height, decoded.channels, decoded.bits) == (23, 20, 3, 8)
    assert bytes(decoded.samples) == picture.tobytes()


def test_not_a_png_is_refused():
    with pytest.raises(Refused, match="not a PNG"):
        pixels.decode_png(b"GIF89a....")


# -- geometry, masks, compositing ------------------------------------------------------------------


def test_pad_and_crop_round_trip_to_multiples_of_8():
    assert [pixels.round_up8(v) for v in (1, 8, 9, 70)] == [8, 8, 16, 72]
    data = bytes(range(5 * 3 * 4))
    padded = pixels.pad(data, 5, 3, 8, 8, 4)
    assert len(padded) == 8 * 8 * 4 and padded[:20] == data[:20] and padded[20:32] == bytes(12)
    assert pixels.crop(padded, 8, 5, 3, 4) == data


def test_scale_nearest_repeats_pixels():
    data = bytes([1, 2])
    assert pixels.scale_nearest(data, 2, 1, 4, 2, 1) == bytes([1, 1, 2, 2, 1, 1, 2, 2])


def test_selection_coverage_is_the_mask():
    mask = pixels.mask_image(bytes([0, 128, 255, 0]), 2, 2)
    assert (mask.channels, mask.dtype, mask.data) == (1, pixels_pb2.PIXEL_TYPE_UINT8, bytes([0, 128, 255, 0]))


@pytest.mark.parametrize("fmt", [U8, U16, F16_LINEAR, F32_LINEAR], ids=str)
def test_composite_keeps_unselected_bytes_and_blends_feathering(fmt):
    below = krita_bytes(np.full((1, 4, 4), 0.2), fmt)
    above = krita_bytes(np.full((1, 4, 4), 0.8), fmt)
    out = pixels.composite(below, above, bytes([0, 255, 128, 0]), 4, fmt)
    size = fmt.pixel_size
    assert out[:size] == below[:size] and out[3 * size :] == below[3 * size :]
    assert out[size : 2 * size] == above[size : 2 * size]
    half = values(out[2 * size : 3 * size], fmt)
    scale = {"U8": 255, "U16": 65535}.get(fmt.depth, 1)
    assert np.allclose(half / scale, 0.2 + 0.6 * 128 / 255, atol=2e-3)


# -- requests and results --------------------------------------------------------------------------


def test_generate_request_pads_the_region_and_carries_the_fields():
    target = jobs.Target("generate", jobs.Region(10, 20, 70, 42), U8)
    request = jobs.image_request(jobs.Params(prompt="fog", model="m", steps=3, seed=9), target)
    assert (request.mode, request.width, request.height, request.steps, request.seed) == (image_pb2.IMAGE_MODE_TXT2IMG, 72, 48, 3, 9)
    assert request.model == "m" and request.output_format == pixels_pb2.OUTPUT_FORMAT_PNG8 and not request.HasField("init_image")
    unset = jobs.image_request(jobs.Params(steps=0, seed=-1), target)
    assert not unset.HasField("steps") and not unset.HasField("seed")


def test_fill_request_sends_the_padded_source_and_mask():
    region = jobs.Region(0, 0, 5, 3)
    source = krita_bytes(gradient(5, 3), U8)
    target = jobs.Target("fill", region, U8, original=source, coverage=bytes([255] * 15))
    request = jobs.image_request(jobs.Params(strength=0.7), target, source)
    assert request.mode == image_pb2.IMAGE_MODE_INPAINT and request.strength == pytest.approx(0.7)
    assert (request.init_image.width, request.init_image.height, request.mask.width, request.mask.height) == (8, 8, 8, 8)
    assert request.mask.data[:5] == bytes([255] * 5) and request.mask.data[5:8] == bytes(3)


def test_stylize_request_keeps_the_size():
    region = jobs.Region(0, 0, 5, 3)
    request = jobs.stylize_request(jobs.Params(style_index=4, strength=0), jobs.Target("stylize", region, U8), bytes(60))
    assert (request.image.width, request.image.height, request.style_index, request.strength) == (5, 3, 4, 1.0)


def test_layer_result_crops_the_servers_image():
    rgb = np.arange(8 * 8 * 3, dtype=np.uint16).reshape(8, 8, 3) % 256
    header = pixels_pb2.ImageResultHeader(
        role=pixels_pb2.IMAGE_ROLE_COLOR, image=pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, width=8, height=8)
    )
    header.provenance.seed = 42
    result = jobs.layer_result([ImageResult(header, png_bytes(rgb, 8))], jobs.Target("generate", jobs.Region(3, 4, 5, 3), U8), "fog")
    got = np.frombuffer(result.data, np.uint8).reshape(3, 5, 4)
    assert (got[..., [2, 1, 0]] == rgb[:3, :5]).all() and result.seed == 42 and "seed 42" in result.label


# -- controls --------------------------------------------------------------------------------------


def control_choice(layer_id: str = "{layer}", use: controls.Use | None = None, **changes) -> controls.ControlChoice:
    return controls.ControlChoice(layer_id, "sketch", use or controls.Use("scribble", "scribble"), **changes)


def test_the_type_list_has_each_type_as_is_then_the_ones_made_from_a_layer():
    entries = controls.uses(("scribble", "depth", "tile"))
    assert [entry.label for entry in entries] == ["scribble", "depth", "tile", "scribble from layer", "depth from layer"]
    assert entries[3] == controls.Use("scribble", "scribble") and entries[2].preprocessor == ""
    # A new row: a From canvas layer as it is; any other layer as a drawing, for scribble.
    assert controls.default_use(entries, "Control: depth") == controls.Use("depth")
    assert controls.default_use(entries, "Control: canny") == controls.Use("scribble", "scribble")  # no canny ControlNet
    assert controls.default_use(entries, "Paint Layer 2") == controls.Use("scribble", "scribble")
    assert controls.default_use(controls.uses(("normal",)), "sketch") == controls.Use("normal")
    assert controls.use_of_control_layer(controls.layer_name("lineart")) == controls.Use("lineart")
    assert controls.use_of_control_layer("Control: nonsense") is None


def test_the_server_offers_the_types_of_its_controlnets():
    listed = ["depth", "scribble", "depth", ""]  # ServerSummary.control_types: one per ControlNet, "" a type nobody knows
    options = controls.control_options(listed, 3)
    assert options == controls.ControlOptions(("scribble", "depth"), 3, known=True)
    # None registered, or a server that does not say its limit: every type, and the default limit.
    assert controls.control_options([], 0) == controls.ControlOptions(controls.CONTROL_TYPES, 4, known=True)
    assert not controls.ControlOptions().known and controls.ControlOptions().types == controls.CONTROL_TYPES


@pytest.mark.parametrize(
    ("choices", "limit", "words"),
    [
        ([control_choice()] * 3, 2, "at most 2 controls a job; remove 1"),
        ([control_choice(), control_choice(layer_id="")], 4, "Control 2: pick its layer"),
        ([control_choice(strength=2.5)], 4, "Control 1: strength 2.5 is outside 0..2"),
        ([control_choice(start=0.5, end=0.5)], 4, "Control 1: it must start before it ends (from 50% to 50%"),
        ([control_choice(use=controls.Use("sketchy"))], 4, "Control 1: 'sketchy' is not a control type"),
        ([control_choice(use=controls.Use("normal", "normal"))], 4, "cannot make 'normal' from a layer"),
    ],
)
def test_controls_the_server_would_refuse_are_refused_with_a_reason(choices, limit, words):
    with pytest.raises(Refused, match=words.replace("(", r"\(").replace(".", r"\.")):
        controls.check_choices(choices, limit)
    controls.check_choices([control_choice(strength=0.0, start=0.0, end=1.0), control_choice(strength=2.0, start=0.9)], 2)


@pytest.mark.parametrize("action", ["generate", "refine", "fill"])
def test_controls_send_their_layers_pixels_over_the_jobs_padded_region(action):
    region = jobs.Region(4, 6, 13, 7)
    drawn = gradient(13, 7)  # a transparent layer: alpha 0..1 across it
    source = krita_bytes(gradient(13, 7, alpha=False), U8)
    coverage = bytes([255] * (13 * 7)) if action == "fill" else b""
    target = jobs.Target(action, region, U8, original=source if action == "fill" else b"", coverage=coverage)
    layers = [
        controls.ControlLayer(control_choice(strength=0.8, start=0.1, end=0.6), krita_bytes(drawn, U8)),
        controls.ControlLayer(control_choice("{other}", controls.Use("depth")), krita_bytes(drawn[::-1].copy(), U8)),
    ]
    request = jobs.image_request(jobs.Params(strength=0.7), target, b"" if action == "generate" else source, layers)
    assert len(request.controls) == 2
    first, second = request.controls
    assert (first.type, first.preprocessor, first.model) == ("scribble", "scribble", "")
    assert (first.strength, first.start, first.end) == pytest.approx((0.8, 0.1, 0.6))
    assert (second.type, second.preprocessor) == ("depth", "") and second.HasField("strength")
    assert (second.strength, second.start, second.end) == (1.0, 0.0, 1.0)
    for control, pixels_ in zip(request.controls, (drawn, drawn[::-1]), strict=True):
        image = control.image
        # The job's size (the region padded to multiples of 8, as the source image is), RGBA with the alpha kept.
        assert (image.width, image.height, image.channels, image.dtype) == (16, 8, 4, pixels_pb2.PIXEL_TYPE_UINT8)
        sent = np.frombuffer(image.data, np.uint8).reshape(8, 16, 4)
        assert (sent[:7, :13] == np.rint(pixels_ * 255)).all()
        assert not sent[7:].any() and not sent[:, 13:].any()  # padding: transparent black
    if action != "generate":
        assert (request.init_image.width, request.init_image.height) == (16, 8)


def test_controls_of_a_linear_document_go_as_srgb_floats():
    drawn = gradient(5, 3)
    target = jobs.Target("generate", jobs.Region(0, 0, 5, 3), F32_LINEAR)
    request = jobs.image_request(jobs.Params(), target, b"", [controls.ControlLayer(control_choice(), krita_bytes(drawn, F32_LINEAR))])
    image = request.controls[0].image
    assert (image.width, image.height, image.dtype) == (8, 8, pixels_pb2.PIXEL_TYPE_FLOAT32)
    sent = np.frombuffer(image.data, np.float32).reshape(8, 8, 4)[:3, :5]
    assert np.allclose(sent[..., 3], drawn[..., 3])  # alpha as it is
    assert np.allclose(sent[..., 0], [[linear_to_srgb(v) for v in row] for row in drawn[..., 0]], atol=1e-6)


def test_the_preprocess_request_sends_the_canvas_at_its_size():
    region = jobs.Region(3, 2, 13, 7)
    canvas = krita_bytes(gradient(13, 7, alpha=False), U16)
    request = jobs.preprocess_request("canny", jobs.Target("preprocess", region, U16), canvas)
    assert isinstance(request, image_pb2.PreprocessRequest)
    assert (request.preprocessor, request.output_format) == ("canny", pixels_pb2.OUTPUT_FORMAT_PNG16)
    assert (request.image.width, request.image.height, request.image.dtype) == (13, 7, pixels_pb2.PIXEL_TYPE_UINT16)
    assert request.image == pixels.to_server(canvas, 13, 7, U16) and "canny" in request.options.label
    with pytest.raises(Refused, match="not 'blur'"):
        jobs.preprocess_request("blur", jobs.Target("preprocess", region, U16), canvas)


def test_a_preprocess_result_becomes_an_opaque_gray_control_layer():
    gray = (np.arange(6 * 9, dtype=np.uint16).reshape(6, 9, 1) * 4) % 256
    header = pixels_pb2.ImageResultHeader(
        role=pixels_pb2.IMAGE_ROLE_COLOR, image=pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, width=9, height=6)
    )
    target = jobs.Target("preprocess", jobs.Region(1, 2, 9, 6), U8)
    result = jobs.layer_result([ImageResult(header, png_bytes(gray, 8))], target, "canny", controls.layer_name("canny"))
    got = np.frombuffer(result.data, np.uint8).reshape(6, 9, 4)
    assert (got[..., :3] == gray).all() and (got[..., 3] == 255).all()
    assert (result.action, result.layer_name, result.label) == ("preprocess", "Control: canny", "Control: canny 9x6")


def test_history_keeps_the_newest_within_count_and_bytes():
    history = jobs.History(limit=3, max_bytes=25)
    for seed in range(5):
        history.add(jobs.LayerResult("generate", jobs.Region(0, 0, 1, 1), U8, bytes(10), seed, "p"))
    assert len(history) == 2 and [history[i].seed for i in range(2)] == [4, 3]
    assert history.labels()[0] == "generate 1x1 seed 4: p"


@pytest.mark.parametrize(("text", "seed"), [("", -1), ("  ", -1), ("0", 0), ("2147483648", 2**31), (str(2**64 - 1), 2**64 - 1)])
def test_seeds_are_any_64_bit_number(text, seed):
    assert jobs.parse_seed(text) == seed
    target = jobs.Target("generate", jobs.Region(0, 0, 8, 8), U8)
    request = jobs.image_request(jobs.Params(seed=seed), target)
    assert request.seed == seed if seed >= 0 else not request.HasField("seed")


@pytest.mark.parametrize(
    ("text", "words"), [(str(2**64), "above the largest seed"), ("-3", "not a whole number"), ("²", "not a whole number")]
)
def test_seeds_out_of_range_are_refused_with_a_reason(text, words):
    with pytest.raises(Refused, match=words):
        jobs.parse_seed(text)


# -- the status line --------------------------------------------------------------------------------


def finished_job(label: str, message: str) -> jobs.Job:
    job = jobs.Job(ServerSettings(), label)
    job.state.begin(label)
    job.state.succeed(None, message)
    return job


def test_the_status_line_shows_news_not_a_finished_jobs_repeats():
    line = StatusLine()
    image = finished_job("generate", "Done")
    line.watch("image", image)
    assert line.text == "Done"
    line.say("Fill repaints the selection: select the area to fill first.")
    for _ in range(3):  # the docker's timer ticks on; the old job still says "Done"
        line.watch("image", image)
    assert line.text.startswith("Fill repaints")
    line.watch("connection", finished_job("connection", "Cannot reach the ArtForge server at 127.0.0.1:1: is it running?"))
    line.watch("image", image)
    assert line.text.startswith("Cannot reach")
    line.watch("connection", finished_job("connection", "Connected to ArtForge"))  # a new job in the same slot is news
    assert line.text == "Connected to ArtForge"


def test_the_status_line_follows_a_running_job():
    line = StatusLine()
    job = jobs.Job(ServerSettings(), "generate")
    job.state.begin("generate")
    line.watch("image", job)
    assert line.text == "Sending the request"
    line.say("Pick a result in the history first.")
    line.watch("image", job)
    assert line.text == "Pick a result in the history first."
    job.state.started("Running on cpu")
    line.watch("image", job)
    assert line.text == "Running on cpu"
    line.watch("image", None)  # no image job yet: nothing to say
    assert line.text == "Running on cpu"


# -- bundling and the worker thread ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "machine", "version", "folder"),
    [
        ("Linux", "x86_64", (3, 11), "linux-x86_64-cp311"),
        ("Windows", "AMD64", (3, 10), "windows-x86_64-cp310"),
        ("Darwin", "arm64", (3, 10), "macos-universal2-cp310"),
        ("Linux", "aarch64", (3, 10), None),
    ],
)
def test_vendor_folder_per_platform(system, machine, version, folder):
    assert bundled.folder_name(system, machine, version) == folder


def test_missing_libraries_give_a_sentence(tmp_path, monkeypatch):
    (tmp_path / "windows-x86_64-cp310").mkdir()
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)
    message = bundled.activate(tmp_path)
    assert "cannot load its network libraries" in message and "windows-x86_64-cp310" in message


def wait(job: jobs.Job) -> object:
    deadline = time.monotonic() + 20
    while not job.state.snapshot().phase.finished:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return job.state.snapshot()


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_an_unreachable_server_fails_the_job_with_a_sentence():
    settings = ServerSettings(address=closed_address())
    target = jobs.Target("generate", jobs.Region(0, 0, 8, 8), U8)
    snapshot = wait(jobs.start_image_job(settings, jobs.image_request(jobs.Params(), target), target))
    assert snapshot.phase is Phase.FAILED and snapshot.message.startswith("Cannot reach the ArtForge server")
    snapshot = wait(jobs.start_connection_test(settings))
    assert snapshot.phase is Phase.FAILED and snapshot.message.startswith("Cannot reach the ArtForge server")


def test_a_missing_certificate_fails_with_a_sentence(tmp_path):
    settings = ServerSettings(address=closed_address(), tls=True, certificate=str(tmp_path / "nope.pem"))
    snapshot = wait(jobs.start_connection_test(settings))
    assert snapshot.phase is Phase.FAILED and "Cannot read the TLS certificate" in snapshot.message
