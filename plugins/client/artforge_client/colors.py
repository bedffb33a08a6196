"""Colour conversions shared by the plugins (Blender's scene context and block-out plan, Krita's pixels).

Blender stores colours scene-linear; people, hex codes and language models think in sRGB. The
conversions here are the standard sRGB transfer functions, so a hex code in a plan looks the same
in Blender's colour picker (which shows sRGB hex) as it was written.
"""

from __future__ import annotations

import colorsys
import re

RGB = tuple[float, float, float]

_HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


def linear_to_srgb(value: float) -> float:
    value = min(max(value, 0.0), 1.0)
    return value * 12.92 if value <= 0.0031308 else 1.055 * value ** (1 / 2.4) - 0.055


def srgb_to_linear(value: float) -> float:
    value = min(max(value, 0.0), 1.0)
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


def parse_hex(text: str) -> RGB | None:
    """'#RRGGBB', 'RRGGBB' or '#RGB' as sRGB 0..1; None if it is not one of those."""
    match = _HEX.fullmatch(text.strip())
    if match is None:
        return None
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    return (int(digits[0:2], 16) / 255, int(digits[2:4], 16) / 255, int(digits[4:6], 16) / 255)


def srgb_hex(rgb: RGB) -> str:
    """sRGB 0..1 as '#RRGGBB' (clamped)."""
    return "#" + "".join(f"{round(min(max(c, 0.0), 1.0) * 255):02X}" for c in rgb)


# Hue boundaries in degrees; a coarse name helps a small model more than a hex code does.
_HUES = ((15, "red"), (40, "orange"), (65, "yellow"), (160, "green"), (200, "cyan"), (255, "blue"), (290, "purple"), (335, "pink"))


def colour_name(rgb: RGB) -> str:
    """A coarse English name for an sRGB colour: 'dark red', 'light grey', 'white' ..."""
    hue, lightness, saturation = colorsys.rgb_to_hls(*(min(max(c, 0.0), 1.0) for c in rgb))
    if saturation < 0.15 or lightness < 0.06 or lightness > 0.94:
        if lightness < 0.12:
            return "black"
        if lightness > 0.9:
            return "white"
        return "dark grey" if lightness < 0.35 else "light grey" if lightness > 0.7 else "grey"
    degrees = hue * 360
    name = next((label for limit, label in _HUES if degrees < limit), "red")
    if name == "orange" and lightness < 0.4:
        name = "brown"
    if lightness < 0.3:
        return f"dark {name}"
    if lightness > 0.75:
        return f"light {name}"
    return name
