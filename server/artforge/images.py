"""Image results as bytes: PNG 8/16-bit with provenance text chunks, or raw float32.

Pillow cannot write 16-bit colour PNGs, so PNGs are written here (unfiltered rows, zlib).
Results are encoded once, on the device thread, and kept as the job's events, so every
watcher replays the same bytes.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from artforge.engines.base import ImageOutput, Provenance

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    encoding: str  # "png" or "raw"
    dtype: str  # "uint8", "uint16" or "float32"
    width: int
    height: int
    channels: int

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def to_rgb(pixels: np.ndarray, over_white: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Split into RGB and the alpha channel (None when there is none); gray becomes RGB.

    `over_white` composites onto white instead of returning the alpha (for style pictures).
    """
    alpha = pixels[..., -1:] if pixels.shape[-1] in (2, 4) else None
    color = pixels[..., :-1] if alpha is not None else pixels
    if color.shape[-1] == 1:
        color = np.repeat(color, 3, axis=-1)
    if over_white and alpha is not None:
        return color * alpha + (1.0 - alpha), None
    return color, alpha


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Lanczos resize of float32 H x W x C pixels, channel by channel (PIL's float mode keeps the precision)."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    from PIL import Image

    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[..., c], dtype=np.float32)).resize((width, height), Image.Resampling.LANCZOS)
        )
        for c in range(pixels.shape[-1])
    ]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def provenance_text(provenance: Provenance) -> dict[str, str]:
    fields = {
        "prompt": provenance.prompt,
        "negative_prompt": provenance.negative_prompt,
        "seed": str(provenance.seed),
        "model": provenance.model,
        "steps": str(provenance.steps) if provenance.steps else "",
        "scheduler": provenance.scheduler,
        "size": f"{provenance.width}x{provenance.height}",
        "guidance_scale": f"{provenance.guidance_scale:g}" if provenance.guidance_scale else "",
        "strength": f"{provenance.strength:g}" if provenance.strength else "",
        "tiling": "".join(axis for axis, on in (("x", provenance.tiling_x), ("y", provenance.tiling_y)) if on),
        "loras": ",".join(f"{name}:{scale:g}" for name, scale in provenance.loras),
        "style": provenance.style,
        "controls": ",".join(
            f"{model}{'/' + preprocessor if preprocessor else ''}:{strength:g}:{start:g}:{end:g}"
            for model, strength, start, end, preprocessor in provenance.controls
        ),
    }
    return {f"artforge:{key}": value for key, value in fields.items() if value}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def encode_preview(pixels: np.ndarray) -> EncodedImage:
    """A step preview (small float32 H x W x 3 in 0..1) as an 8-bit PNG."""
    height, width, channels = pixels.shape
    return EncodedImage(encode_png(pixels, 8, {}), "png", "uint8", width, height, channels)


def encode_png(pixels: np.ndarray, bits: int, text: dict[str, str]) -> bytes:
    """A PNG of float32 H x W x C pixels at 8 or 16 bits per channel, with tEXt chunks."""
    height, width, channels = pixels.shape
    scale, dtype = (255.0, np.dtype("u1")) if bits == 8 else (65535.0, np.dtype(">u2"))
    samples = np.rint(np.clip(pixels, 0.0, 1.0) * scale).astype(dtype).reshape(height, -1).view(np.uint8)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), samples], axis=1)  # filter byte 0 (None) per row
    header = struct.pack(">IIBBBBB", width, height, bits, _COLOR_TYPES[channels], 0, 0, 0)
    # tEXt is Latin-1; anything else (a prompt in another script) goes as UTF-8 in iTXt.
    texts = b"".join(
        _png_chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8"))
        if not value.isascii()
        else _png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
        for key, value in text.items()
    )
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + texts
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 4))
        + _png_chunk(b"IEND", b"")
    )


def encode_output(output: ImageOutput, output_format: str) -> EncodedImage:
    pixels = output.pixels.astype(np.float32, copy=False)
    height, width, channels = pixels.shape
    if output_format == "raw_float32":
        return EncodedImage(np.ascontiguousarray(pixels, dtype="<f4").tobytes(), "raw", "float32", width, height, channels)
    bits = 16 if output_format == "png16" else 8
    data = encode_png(pixels, bits, provenance_text(output.provenance))
    return EncodedImage(data, "png", f"uint{bits}", width, height, channels)
