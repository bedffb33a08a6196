"""The built-in styles told apart: each renders one fixed reference picture, and its name says what
was measured in that rendering (its main colours, dark or light, vivid or muted, how busy its
strokes are), as in "3: dark vivid blue and black, busy strokes".

multistyle26.onnx was published without names for its styles, so no name here comes from art
history: every word stands for a number measured below. The thresholds were set on the 26
renderings at PREVIEW_SIZE, in the gaps between their values, so that a tiny numeric difference
(another CPU, another onnxruntime) flips no word. Pixels are float sRGB in 0..1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PREVIEW_SIZE = 128  # the previews' width and height, and the size the measurements were tuned at

WORDS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "brown", "grey", "white", "black")
# The upper ends of the hue ranges, in degrees, of WORDS[0] to WORDS[7]; past the last, red again.
HUE_ENDS = (10, 45, 70, 165, 195, 255, 290, 345)
NEUTRAL_CHROMA = 0.08  # max - min of a pixel's channels below this: no hue to speak of (grey, white)
BLACK_VALUE = 0.15  # the brightest channel below this: black, whatever the hue
WHITE_VALUE = 0.85  # a neutral pixel above this: white
BROWN_VALUE = 0.65  # orange whose brightest channel is below this reads as brown
SECOND_COLOUR_SHARE = 0.105  # the second colour is named when it covers at least this much of the picture
DARK_LIGHTNESS, LIGHT_LIGHTNESS = 0.38, 0.695  # mean lightness
MUTED_CHROMA, VIVID_CHROMA = 0.11, 0.3  # mean chroma
SMOOTH_DETAIL, BUSY_DETAIL = 0.045, 0.091  # mean absolute Laplacian of lightness: the high-frequency energy


def lightness(rgb: np.ndarray) -> np.ndarray:
    """CIE L* / 100 of sRGB pixels: how light a colour looks (pure blue 0.32, red 0.53, yellow 0.97)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    f = np.where(luminance > (6 / 29) ** 3, np.cbrt(luminance), luminance * (29 / 6) ** 2 / 3 + 4 / 29)
    return 1.16 * f - 0.16


def reference_picture(size: int = PREVIEW_SIZE) -> np.ndarray:
    """A landscape with what shows a style: a sky gradient, a sun disc with a hard edge, two wavy hill
    lines; flat and graded areas of blue, green and yellow. float32 size x size x 3 in 0..1."""
    y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    picture = np.stack([0.35 + 0.45 * y, 0.55 + 0.3 * y, 0.95 - 0.2 * y], axis=-1)
    picture[(x - 0.7) ** 2 + (y - 0.28) ** 2 < 0.13**2] = (1.0, 0.82, 0.25)
    picture[y > 0.55 + 0.06 * np.sin(7 * x + 0.5)] = (0.35, 0.55, 0.35)
    near = y > 0.72 + 0.08 * np.sin(11 * x + 2.0)
    picture[near] = np.stack([0.2 + 0.2 * x, 0.45 - 0.1 * y, np.full_like(x, 0.12)], axis=-1)[near]
    return picture


def colour_codes(rgb: np.ndarray) -> np.ndarray:
    """The colour word of every pixel of float32 H x W x 3 sRGB pixels, as its index in WORDS: H x W ints."""
    value, low = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = value - low
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(chroma > 0, chroma, 1.0)
    sector = np.where(value == r, ((g - b) / safe) % 6, np.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    codes = np.searchsorted(HUE_ENDS, 60.0 * sector, side="right") % len(HUE_ENDS)  # past the last end: 0, red
    codes[(codes == WORDS.index("orange")) & (value < BROWN_VALUE)] = WORDS.index("brown")
    neutral = chroma < NEUTRAL_CHROMA
    codes[neutral] = np.where(value[neutral] > WHITE_VALUE, WORDS.index("white"), WORDS.index("grey"))
    codes[value < BLACK_VALUE] = WORDS.index("black")
    return codes


@dataclass(frozen=True)
class Look:
    """What was measured in one picture."""

    colours: tuple[tuple[str, float], ...]  # colour words with the share of pixels each covers, largest first
    lightness: float  # mean
    chroma: float  # mean
    detail: float  # mean absolute Laplacian of lightness

    def describe(self, third_colour: bool = False) -> str:
        """Words for the look, as in "dark vivid blue and black, busy strokes"; `third_colour` adds
        the next colour ("... with red, ...")."""
        main = self.colours[0][0]
        tone = []
        if self.lightness < DARK_LIGHTNESS and main != "black":
            tone.append("dark")
        elif self.lightness > LIGHT_LIGHTNESS and main != "white":
            tone.append("light")
        if self.chroma > VIVID_CHROMA:
            tone.append("vivid")
        elif self.chroma < MUTED_CHROMA and main not in ("grey", "white", "black"):
            tone.append("muted")
        colours = main
        rest = list(self.colours[1:])
        if rest and rest[0][1] >= SECOND_COLOUR_SHARE:
            colours += f" and {rest.pop(0)[0]}"
        if third_colour and rest:
            colours += f" with {rest[0][0]}"
        if self.detail < SMOOTH_DETAIL:
            strokes = "smooth"
        elif self.detail > BUSY_DETAIL:
            strokes = "busy strokes"
        else:
            strokes = "visible strokes"
        return f"{' '.join([*tone, colours])}, {strokes}"


def measure(rgb: np.ndarray) -> Look:
    """The look of float32 H x W x 3 sRGB pixels in 0..1 (at least 3 x 3)."""
    counts = np.bincount(colour_codes(rgb).ravel(), minlength=len(WORDS))
    order = sorted(np.flatnonzero(counts), key=lambda i: (-counts[i], WORDS[i]))  # ties by the word: deterministic
    colours = tuple((WORDS[i], float(counts[i] / counts.sum())) for i in order)
    light = lightness(rgb)
    laplacian = 4 * light[1:-1, 1:-1] - light[:-2, 1:-1] - light[2:, 1:-1] - light[1:-1, :-2] - light[1:-1, 2:]
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
    return Look(colours, float(light.mean()), float(chroma.mean()), float(np.abs(laplacian).mean()))


def style_names(renders: Sequence[np.ndarray]) -> list[str]:
    """A name "INDEX: description" for each style's rendering of the reference picture. Where two
    descriptions coincide, both name their next colour too; the index keeps every name distinct."""
    looks = [measure(render) for render in renders]
    described = [look.describe() for look in looks]
    repeated = Counter(described)
    return [
        f"{index}: {look.describe(third_colour=True) if repeated[text] > 1 else text}"
        for index, (look, text) in enumerate(zip(looks, described, strict=True))
    ]
