"""The measured style names, checked on synthetic pictures whose colours, tone and texture are known."""

from __future__ import annotations

import numpy as np
import pytest

from artforge.engines.style_catalog import PREVIEW_SIZE, measure, reference_picture, style_names


def flat(*columns: tuple[tuple[float, float, float], int], height: int = 64) -> np.ndarray:
    """Vertical bands: each (rgb, width in pixels), left to right. float32 H x W x 3."""
    return np.concatenate([np.full((height, width, 3), rgb, np.float32) for rgb, width in columns], axis=1)


def grey_noise(amplitude: float, seed: int = 0, size: int = 128) -> np.ndarray:
    """Mid grey with independent noise of +-amplitude per pixel: high-frequency energy, no hue."""
    noise = np.random.default_rng(seed).uniform(-amplitude, amplitude, (size, size, 1))
    return np.repeat(0.5 + noise, 3, axis=2).astype(np.float32)


@pytest.mark.parametrize(
    ("rgb", "word"),
    [
        ((1.0, 0.0, 0.0), "red"),
        ((1.0, 0.0, 0.1), "red"),  # hue 354: red wraps around 0
        ((1.0, 0.5, 0.0), "orange"),
        ((0.5, 0.28, 0.05), "brown"),  # orange, dark
        ((1.0, 1.0, 0.0), "yellow"),
        ((0.0, 0.8, 0.0), "green"),
        ((0.0, 0.8, 0.8), "teal"),
        ((0.0, 0.0, 1.0), "blue"),
        ((0.6, 0.0, 1.0), "purple"),
        ((1.0, 0.0, 0.6), "pink"),
        ((0.5, 0.5, 0.5), "grey"),
        ((0.5, 0.47, 0.53), "grey"),  # a trace of hue is still grey
        ((0.95, 0.95, 0.95), "white"),
        ((0.1, 0.02, 0.12), "black"),  # too dark for its hue to show
    ],
)
def test_a_flat_colour_is_named_by_its_word(rgb, word):
    assert measure(flat((rgb, 64))).colours == ((word, 1.0),)


@pytest.mark.parametrize(
    ("picture", "description"),
    [
        (flat(((0.2, 0.4, 1.0), 64)), "vivid blue, smooth"),
        (flat(((0.0, 0.0, 1.0), 64)), "dark vivid blue, smooth"),  # pure blue has a luma of 0.07
        (flat(((0.8, 0.9, 1.0), 64)), "light blue, smooth"),
        (flat(((0.5, 0.45, 0.4), 64)), "muted brown, smooth"),
        (flat(((0.2, 0.05, 0.05), 64)), "dark red, smooth"),
        (flat(((0.5, 0.5, 0.5), 64)), "grey, smooth"),  # not "muted grey"
        (flat(((0.05, 0.05, 0.05), 64)), "black, smooth"),  # not "dark black"
        (flat(((1.0, 0.0, 0.0), 38), ((0.0, 0.8, 0.0), 26)), "vivid red and green, smooth"),
        (flat(((1.0, 0.0, 0.0), 61), ((0.0, 0.8, 0.0), 3)), "vivid red, smooth"),  # 5% green is not named
        (grey_noise(0.03), "grey, visible strokes"),
        (grey_noise(0.2), "grey, busy strokes"),
    ],
)
def test_descriptions_say_what_was_measured(picture, description):
    assert measure(picture).describe() == description


def test_more_high_frequency_energy_measures_busier():
    # Other noise for each amplitude: a measure that only scaled with one pattern would not do.
    details = [measure(grey_noise(amplitude, seed)).detail for seed, amplitude in enumerate((0.0, 0.01, 0.03, 0.1, 0.3))]
    assert details[0] == 0.0 and details == sorted(details) and len(set(details)) == len(details)


def test_colours_come_with_their_shares_largest_first():
    look = measure(flat(((1.0, 0.0, 0.0), 32), ((0.0, 0.0, 1.0), 24), ((1.0, 1.0, 0.0), 8)))
    assert look.colours == (("red", 0.5), ("blue", 0.375), ("yellow", 0.125))


def test_names_keep_the_index_and_equal_descriptions_name_their_next_colour():
    red, blue, green, yellow = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.8, 0.0), (1.0, 1.0, 0.0)
    pictures = [
        flat((red, 38), (blue, 19), (green, 7)),
        flat((green, 64)),
        flat((red, 38), (blue, 19), (yellow, 7)),
    ]
    assert style_names(pictures) == [
        "0: vivid red and blue with green, smooth",
        "1: light vivid green, smooth",  # green at 0.8 has an L* of 0.71
        "2: vivid red and blue with yellow, smooth",
    ]
    assert style_names(pictures) == style_names([p.copy() for p in pictures])


def test_the_reference_picture_is_fixed_and_has_colours_and_edges():
    picture = reference_picture()
    assert picture.shape == (PREVIEW_SIZE, PREVIEW_SIZE, 3) and picture.dtype == np.float32
    assert 0.0 <= picture.min() and picture.max() <= 1.0
    assert np.array_equal(picture, reference_picture())
    # Sky, hills and sun: mostly blue and green, smooth apart from its few hard edges.
    assert measure(picture).describe() == "vivid blue and green, smooth"
    assert {word for word, _ in measure(picture).colours} >= {"blue", "green", "yellow"}
