"""Pixels between Krita's layout and the server's, in plain Python (Krita's Python may lack numpy).

Krita hands out RGBA layers as interleaved little-endian samples: BGRA for 8- and 16-bit integer
documents, RGBA for 16- and 32-bit float ones. The server takes RAW RGBA (uint8, uint16, float32)
and returns PNG 8/16-bit or RAW float32, always sRGB-encoded values in 0..1. Documents whose
profile is linear (Krita's default for 16-bit and float: sRGB-elle-V2-g10) are converted with the
sRGB transfer function on the way in and out; alpha is never converted.

The heavy loops are C: extended-slice assignment on bytearray/array and struct for halves.
Only colour transfer and rounding run per value in Python.
"""

from __future__ import annotations

import re
import struct
import sys
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from artforge_client.colors import linear_to_srgb, srgb_to_linear
from artforge_client.v1 import pixels_pb2

Samples = bytes | bytearray | array

# depth -> (sample size in bytes, array typecode or None for halves, integer maximum or None for floats)
_DEPTHS = {"U8": (1, "B", 255), "U16": (2, "H", 65535), "F16": (2, None, None), "F32": (4, "f", None)}


class Refused(ValueError):
    """A document, request or result the plugin cannot handle; the message is one sentence for the
    artist (a ValueError, so that run_stream fails a job with it as it is)."""


@dataclass(frozen=True)
class PixelFormat:
    """How a Krita RGBA document stores pixels: `depth` is Krita's colorDepth(); `linear` its profile's transfer."""

    depth: str
    linear: bool

    @property
    def sample_size(self) -> int:
        return _DEPTHS[self.depth][0]

    @property
    def pixel_size(self) -> int:
        return 4 * self.sample_size

    @property
    def bgra(self) -> bool:
        return self.depth in ("U8", "U16")

    @property
    def output_format(self) -> int:
        """What to ask the server for: integer sRGB documents take the PNG at their own depth
        (so the pixels are exactly the server's), everything else the unquantized floats."""
        if not self.linear and self.depth == "U8":
            return pixels_pb2.OUTPUT_FORMAT_PNG8
        if not self.linear and self.depth == "U16":
            return pixels_pb2.OUTPUT_FORMAT_PNG16
        return pixels_pb2.OUTPUT_FORMAT_RAW_FLOAT32


def document_format(model: str, depth: str, profile: str) -> PixelFormat:
    """The format of a document from Krita's colorModel(), colorDepth() and colorProfile(), or Refused."""
    if model != "RGBA":
        raise Refused(f"ArtForge works on RGBA documents; this one is {model}. Convert it with Image > Convert Image Color Space.")
    if depth not in _DEPTHS:
        raise Refused(f"ArtForge cannot handle {depth} documents; use 8-bit, 16-bit integer, or 16/32-bit float.")
    name = profile.lower()
    if "srgb" not in name and "scrgb" not in name:
        # Other primaries (Rec. 2020, ACES, Adobe RGB) need a colour engine to convert correctly.
        raise Refused(f"ArtForge understands sRGB documents only; this one uses '{profile}'. Convert it to an sRGB profile first.")
    return PixelFormat(depth, linear="g10" in name or "linear" in name or "scrgb" in name)


# -- samples -------------------------------------------------------------------------------------


def _floats(data: Samples, depth: str) -> array:
    """Samples of one depth as float32 values (integers scaled to 0..1)."""
    if depth == "F32":
        return array("f", bytes(data))
    if depth == "F16":
        return array("f", struct.unpack(f"<{len(data) // 2}e", data))
    _, code, maximum = _DEPTHS[depth]
    values = data if isinstance(data, array) else _native(array(code, bytes(data)))
    scale = 1.0 / maximum
    return array("f", [v * scale for v in values])


def _native(values: array) -> array:
    if sys.byteorder == "big":  # every platform Krita ships on is little-endian; kept correct anyway
        values.byteswap()
    return values


def _pack(values: array, depth: str) -> bytes:
    """float32 values in 0..1 (floats: any) as little-endian samples of `depth`."""
    if depth == "F32":
        return values.tobytes()
    if depth == "F16":
        return struct.pack(f"<{len(values)}e", *values)
    _, code, maximum = _DEPTHS[depth]
    out = array(code, [min(max(round(v * maximum), 0), maximum) for v in values])
    return _native(out).tobytes()


def _transfer(values: array, function: Callable[[float], float]) -> None:
    """Apply a transfer function to the R, G and B samples of interleaved RGBA values, in place."""
    for channel in range(3):
        values[channel::4] = array("f", map(function, values[channel::4]))


def swap_red_blue(samples: Samples) -> Samples:
    """BGRA <-> RGBA: a copy with samples 0 and 2 of every pixel exchanged."""
    out = samples[:]
    out[0::4], out[2::4] = samples[2::4], samples[0::4]
    return out


def to_server(data: bytes, width: int, height: int, fmt: PixelFormat) -> pixels_pb2.Image:
    """Krita layer bytes as a RAW RGBA Image for a request: integer sRGB at its own depth, the rest as float32."""
    if not fmt.linear and fmt.depth == "U8":
        return raw_image(width, height, 4, pixels_pb2.PIXEL_TYPE_UINT8, bytes(swap_red_blue(bytearray(data))))
    if not fmt.linear and fmt.depth == "U16":
        return raw_image(width, height, 4, pixels_pb2.PIXEL_TYPE_UINT16, _native(swap_red_blue(_native(array("H", data)))).tobytes())
    values = _floats(data, fmt.depth)
    if fmt.bgra:
        values = swap_red_blue(values)
    if fmt.linear:
        _transfer(values, linear_to_srgb)
    return raw_image(width, height, 4, pixels_pb2.PIXEL_TYPE_FLOAT32, values.tobytes())


def raw_image(width: int, height: int, channels: int, dtype: int, data: bytes) -> pixels_pb2.Image:
    return pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_RAW, width=width, height=height, channels=channels, dtype=dtype, data=data)


def from_server(image: pixels_pb2.Image, fmt: PixelFormat) -> bytes:
    """A result (PNG 8/16-bit, RAW float32 or uint8; gray, RGB or RGBA) as Krita bytes for `fmt`, opaque where it has no alpha."""
    if image.encoding == pixels_pb2.IMAGE_ENCODING_PNG:
        decoded = decode_png(image.data)
        width, height, channels, samples, bits = decoded.width, decoded.height, decoded.channels, decoded.samples, decoded.bits
        source_depth = "U8" if bits == 8 else "U16"
    elif image.encoding == pixels_pb2.IMAGE_ENCODING_RAW and image.dtype == pixels_pb2.PIXEL_TYPE_FLOAT32:
        width, height, channels, samples, source_depth = image.width, image.height, image.channels, array("f", image.data), "F32"
    elif image.encoding == pixels_pb2.IMAGE_ENCODING_RAW and image.dtype == pixels_pb2.PIXEL_TYPE_UINT8:
        width, height, channels, samples, source_depth = image.width, image.height, image.channels, bytearray(image.data), "U8"
    else:
        raise Refused("The server sent pixels in a form this plugin does not read (expected PNG or RAW float32).")
    rgba = _expand_to_rgba(samples, channels, width * height, source_depth)
    if source_depth == fmt.depth and not fmt.linear:  # the server's own samples, bit for bit
        ordered = swap_red_blue(rgba) if fmt.bgra else rgba
        return _native(ordered).tobytes() if isinstance(ordered, array) else bytes(ordered)
    values = rgba if source_depth == "F32" else _floats(rgba, source_depth)
    if fmt.linear:
        _transfer(values, srgb_to_linear)
    if fmt.bgra:
        values = swap_red_blue(values)
    return _pack(values, fmt.depth)


def _expand_to_rgba(samples: Samples, channels: int, pixels: int, depth: str) -> Samples:
    if channels == 4:
        return samples
    size, code, maximum = _DEPTHS[depth]
    out = bytearray(pixels * 4) if depth == "U8" else array(code, bytes(pixels * 4 * size))
    gray = channels in (1, 2)
    for channel in range(3):
        out[channel::4] = samples[0::channels] if gray else samples[channel::channels]
    if channels == 2:
        out[3::4] = samples[1::2]
    else:
        out[3::4] = bytes([maximum]) * pixels if depth == "U8" else array(code, [maximum or 1.0]) * pixels
    return out


# -- PNG -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedPng:
    width: int
    height: int
    channels: int
    bits: int
    samples: Samples  # bytearray for 8-bit, native array('H') for 16-bit


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def decode_png(data: bytes) -> DecodedPng:
    """A non-interlaced 8/16-bit gray/RGB(A) PNG. Unfiltered rows (what the server writes) decode
    at C speed; filtered rows are undone in Python, correct but slow for big images."""
    if not data.startswith(_PNG_SIGNATURE):
        raise Refused("The server's result is not a PNG file.")
    position, idat, header = 8, [], None
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        payload = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind == b"IEND":
            break
        position += 12 + length
    if header is None:
        raise Refused("The server's PNG has no header.")
    width, height, bits, color_type, _, _, interlace = header
    if bits not in (8, 16) or color_type not in _PNG_CHANNELS or interlace:
        raise Refused(f"The server's PNG ({bits}-bit, colour type {color_type}) is a kind this plugin does not read.")
    channels = _PNG_CHANNELS[color_type]
    pixel_bytes = channels * bits // 8
    stride = width * pixel_bytes
    raw = zlib.decompress(b"".join(idat))
    rows = bytearray(stride * height)
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind:
            _unfilter(kind, line, previous, pixel_bytes)
        rows[y * stride : (y + 1) * stride] = line
        previous = line
    samples: Samples = rows
    if bits == 16:
        samples = array("H", bytes(rows))
        if sys.byteorder == "little":
            samples.byteswap()  # PNG is big-endian
    return DecodedPng(width, height, channels, bits, samples)


def _unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> None:
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = previous[i]
        if kind == 1:
            predictor = left
        elif kind == 2:
            predictor = up
        elif kind == 3:
            predictor = (left + up) >> 1
        elif kind == 4:
            upper_left = previous[i - bpp] if i >= bpp else 0
            p = left + up - upper_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
            predictor = left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
        else:
            raise Refused(f"The server's PNG uses an unknown row filter ({kind}).")
        line[i] = (line[i] + predictor) & 0xFF


# -- geometry and masks --------------------------------------------------------------------------


def round_up8(value: int) -> int:
    """The server wants sizes in multiples of 8."""
    return (value + 7) // 8 * 8


def pad(data: bytes, width: int, height: int, new_width: int, new_height: int, pixel_size: int) -> bytes:
    """Extend to the right and bottom with zero bytes (transparent black in every format, keep in a mask)."""
    if (width, height) == (new_width, new_height):
        return bytes(data)
    row, new_row = width * pixel_size, new_width * pixel_size
    out = bytearray(new_row * new_height)
    for y in range(height):
        out[y * new_row : y * new_row + row] = data[y * row : (y + 1) * row]
    return bytes(out)


def crop(data: bytes, width: int, new_width: int, new_height: int, pixel_size: int) -> bytes:
    """The top-left new_width x new_height of an image `width` pixels wide."""
    row, new_row = width * pixel_size, new_width * pixel_size
    if row == new_row:
        return bytes(data[: new_row * new_height])
    return b"".join(data[y * row : y * row + new_row] for y in range(new_height))


def scale_nearest(data: bytes, width: int, height: int, new_width: int, new_height: int, pixel_size: int) -> bytes:
    """Nearest-neighbour resize, for previews (a small latent preview over the whole region)."""
    xs = [x * width // new_width for x in range(new_width)]
    rows: dict[int, bytes] = {}
    out = []
    for y in range(new_height):
        source_y = y * height // new_height
        if source_y not in rows:
            start = source_y * width * pixel_size
            pixels = [data[start + x * pixel_size : start + (x + 1) * pixel_size] for x in range(width)]
            rows[source_y] = b"".join(pixels[x] for x in xs)
        out.append(rows[source_y])
    return b"".join(out)


def mask_image(coverage: bytes, width: int, height: int) -> pixels_pb2.Image:
    """Krita's selection pixelData (one byte of coverage per pixel, 255 = selected) as the inpaint
    mask: white repaints, black keeps, feathered values blend."""
    return raw_image(width, height, 1, pixels_pb2.PIXEL_TYPE_UINT8, bytes(coverage))


_FULL = re.compile(b"\xff+")
_PARTIAL = re.compile(b"[\x01-\xfe]")


def composite(original: bytes, result: bytes, coverage: bytes, width: int, fmt: PixelFormat) -> bytes:
    """`result` over `original` through the selection coverage: where the coverage is 0 the bytes
    stay exactly the original's, where it is 255 they are the result's, in between they blend
    (straight alpha per channel, as Krita's selection does)."""
    size = fmt.pixel_size
    out = bytearray(original)
    partial: list[int] = []
    for y in range(len(coverage) // width):
        row = coverage[y * width : (y + 1) * width]
        for run in _FULL.finditer(row):
            start, end = (y * width + run.start()) * size, (y * width + run.end()) * size
            out[start:end] = result[start:end]
        partial.extend(y * width + m.start() for m in _PARTIAL.finditer(row))
    if not partial:
        return bytes(out)
    code = "e" if fmt.depth == "F16" else _DEPTHS[fmt.depth][1]
    maximum = _DEPTHS[fmt.depth][2]
    for index in partial:
        weight = coverage[index] / 255.0
        start = index * size
        below = struct.unpack(f"<4{code}", original[start : start + size])
        above = struct.unpack(f"<4{code}", result[start : start + size])
        mixed = [b + (a - b) * weight for a, b in zip(above, below, strict=True)]
        if maximum is not None:
            mixed = [min(max(round(v), 0), maximum) for v in mixed]
        out[start : start + size] = struct.pack(f"<4{code}", *mixed)
    return bytes(out)
