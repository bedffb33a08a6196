"""Input pixels: artforge.v1.Image messages -> float32 H x W x C arrays with values in 0..1.

PNGs are decoded by Pillow, RAW buffers by numpy; sizes are checked against the limit from
the header, before anything is decoded. (Results are encoded in artforge.images.)
"""

from __future__ import annotations

import io
import struct

import numpy as np

from artforge.errors import invalid
from artforge.images import PNG_SIGNATURE
from artforge_client.v1 import pixels_pb2

_RAW_DTYPES = {
    pixels_pb2.PIXEL_TYPE_UINT8: (np.dtype("<u1"), 255.0),
    pixels_pb2.PIXEL_TYPE_UINT16: (np.dtype("<u2"), 65535.0),
    pixels_pb2.PIXEL_TYPE_FLOAT16: (np.dtype("<f2"), 1.0),
    pixels_pb2.PIXEL_TYPE_FLOAT32: (np.dtype("<f4"), 1.0),
}


def image_size(message: pixels_pb2.Image, field: str) -> tuple[int, int]:
    """(width, height) without decoding, to check limits before any work."""
    if message.encoding == pixels_pb2.IMAGE_ENCODING_PNG:
        data = message.data
        if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
            raise invalid(field, "is not a PNG file (bad signature or header)")
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if message.encoding == pixels_pb2.IMAGE_ENCODING_RAW:
        return message.width, message.height
    raise invalid(f"{field}.encoding", "must be IMAGE_ENCODING_PNG or IMAGE_ENCODING_RAW")


def decode_image(message: pixels_pb2.Image, field: str, max_pixels: int) -> np.ndarray:
    """The image as float32 H x W x C (C = 1..4) in 0..1; INVALID_ARGUMENT naming `field` otherwise."""
    width, height = image_size(message, field)
    if width == 0 or height == 0:
        raise invalid(field, f"is {width}x{height}; it needs pixels")
    if width * height > max_pixels:
        raise invalid(field, f"is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if message.encoding == pixels_pb2.IMAGE_ENCODING_RAW:
        return _decode_raw(message, field)
    return _decode_png(message.data, field)


def _decode_raw(message: pixels_pb2.Image, field: str) -> np.ndarray:
    if message.dtype not in _RAW_DTYPES:
        raise invalid(f"{field}.dtype", "must be UINT8, UINT16, FLOAT16 or FLOAT32 for RAW pixels")
    if not 1 <= message.channels <= 4:
        raise invalid(f"{field}.channels", f"{message.channels} is outside 1..4")
    dtype, scale = _RAW_DTYPES[message.dtype]
    expected = message.width * message.height * message.channels * dtype.itemsize
    if len(message.data) != expected:
        raise invalid(
            f"{field}.data",
            f"has {len(message.data)} bytes; {message.width}x{message.height}x{message.channels} {dtype.name} needs {expected}",
        )
    pixels = np.frombuffer(message.data, dtype=dtype).reshape(message.height, message.width, message.channels)
    pixels = pixels.astype(np.float32) / scale
    if not np.isfinite(pixels).all():
        raise invalid(f"{field}.data", "holds NaN or infinite values")
    return np.clip(pixels, 0.0, 1.0)


def _decode_png(data: bytes, field: str) -> np.ndarray:
    from PIL import Image as PILImage

    bit_depth, color_type = data[24], data[25]
    if bit_depth == 16 and color_type in (2, 6):
        # Pillow reads these as 8-bit, silently dropping precision; refuse rather than degrade.
        raise invalid(field, "16-bit colour PNGs are not read; send RAW pixels (dtype UINT16) or an 8-bit PNG")
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode == "I;16":
                return (np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0)[..., None]
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                image = image.convert("RGBA" if "transparency" in image.info or image.mode in ("PA", "RGBa") else "RGB")
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise invalid(field, f"is not a readable PNG ({exc})") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels.astype(np.float32) / 255.0
