"""PBR maps derived from an albedo: shapes and ranges, the normal map's convention and its
consistency with the height map, and tiling (shift equivariance and seams)."""

from __future__ import annotations

import numpy as np
import pytest

from artforge.engines.base import Provenance
from artforge.engines.pbr import DEFAULT_NORMAL_STRENGTH, ROUGHNESS_MAX, ROUGHNESS_MIN, derive_pbr, to_image_outputs
from artforge.errors import ArtForgeError, ErrorCode

MAPS = ("height", "normal", "roughness")


def gray(luminance: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(luminance, 0.0, 1.0)[:, :, None], 3, axis=2).astype(np.float32)


def periodic_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smooth random noise that tiles both ways: white noise blurred by a circular Gaussian; mean 0, std 1."""
    f = np.fft.fftfreq(size)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    field = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * np.exp(-2 * np.pi**2 * sigma**2 * f2)))
    return (field - field.mean()) / field.std()


def tileable_albedo(seed: int, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return gray(0.5 + 0.12 * periodic_field(rng, size, 8.0) + 0.05 * periodic_field(rng, size, 1.5))


def bump(size: int = 64, sigma: float = 8.0) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size] - (size - 1) / 2
    return gray(0.2 + 0.6 * np.exp(-(rows**2 + cols**2) / (2 * sigma**2)))


def decoded(normal: np.ndarray) -> np.ndarray:
    return normal.astype(np.float64) * 2.0 - 1.0


# -- shapes and ranges --------------------------------------------------------------------


@pytest.mark.parametrize("tiled", [True, False])
def test_shapes_types_and_ranges(tiled):
    albedo = np.random.default_rng(0).random((48, 80, 3), dtype=np.float32)
    maps = derive_pbr(albedo, tiled, tiled)
    assert maps.height.shape == (48, 80, 1)
    assert maps.normal.shape == (48, 80, 3)
    assert maps.roughness.shape == (48, 80, 1)
    for name in MAPS:
        pixels = getattr(maps, name)
        assert pixels.dtype == np.float32, name
        assert pixels.min() >= 0.0 and pixels.max() <= 1.0, name
    assert maps.height.min() == 0.0 and maps.height.max() == 1.0, "the height uses its whole range"
    assert maps.roughness.min() >= ROUGHNESS_MIN - 1e-6 and maps.roughness.max() <= ROUGHNESS_MAX + 1e-6
    assert (decoded(maps.normal)[..., 2] > 0).all(), "normals point out of the surface"


def test_alpha_is_ignored():
    rng = np.random.default_rng(1)
    rgb = rng.random((32, 32, 3), dtype=np.float32)
    rgba = np.concatenate([rgb, rng.random((32, 32, 1), dtype=np.float32)], axis=2)
    with_alpha, without = derive_pbr(rgba, True, False), derive_pbr(rgb, True, False)
    for name in MAPS:
        np.testing.assert_array_equal(getattr(with_alpha, name), getattr(without, name))


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 2), (1, 32, 3), (32, 32, 5)])
def test_bad_albedo_shape_is_an_error_naming_the_field(shape):
    with pytest.raises(ArtForgeError) as caught:
        derive_pbr(np.zeros(shape, np.float32), False, False)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("albedo:")


@pytest.mark.parametrize("level", [0.0, 0.35, 0.9])
@pytest.mark.parametrize("tiled", [True, False])
def test_constant_albedo_is_a_flat_surface(level, tiled):
    maps = derive_pbr(np.full((24, 40, 3), level, np.float32), tiled, tiled)
    np.testing.assert_allclose(maps.normal, np.broadcast_to([0.5, 0.5, 1.0], maps.normal.shape), atol=1e-6)
    assert np.ptp(maps.height) == 0.0
    assert np.ptp(maps.roughness) < 1e-6


# -- the normal map -----------------------------------------------------------------------


@pytest.mark.parametrize("tiled", [True, False])
def test_normals_are_unit_length(tiled):
    albedo = np.random.default_rng(2).random((64, 64, 3), dtype=np.float32)
    for strength in (1.0, DEFAULT_NORMAL_STRENGTH, 50.0):
        lengths = np.linalg.norm(decoded(derive_pbr(albedo, tiled, tiled, strength).normal), axis=-1)
        np.testing.assert_allclose(lengths, 1.0, atol=1e-3)


def test_bump_faces_outward_in_opengl_convention():
    """A bright bump is raised: its upper flank faces up (+Y, green > 0.5), its left flank left (red < 0.5)."""
    normal = decoded(derive_pbr(bump(), False, False).normal)
    centre, off = 32, 8
    assert normal[centre - off, centre, 1] > 0.1, "upper flank: green up"
    assert normal[centre + off, centre, 1] < -0.1, "lower flank: green down"
    assert normal[centre, centre - off, 0] < -0.1, "left flank: red left"
    assert normal[centre, centre + off, 0] > 0.1, "right flank: red right"
    assert abs(normal[centre - off, centre, 0]) < 0.05 and abs(normal[centre, centre - off, 1]) < 0.05


@pytest.mark.parametrize("tiled", [True, False])
def test_ramps_tilt_against_their_rise(tiled):
    """`tiled` is the axis across the ramp: it must not change anything (a ramp does not wrap along its rise)."""
    ramp = np.linspace(0.1, 0.9, 64)
    brighter_down = derive_pbr(gray(np.repeat(ramp[:, None], 64, axis=1)), tiled, False).normal
    brighter_right = derive_pbr(gray(np.repeat(ramp[None, :], 64, axis=0)), False, tiled).normal
    # Rising toward the bottom of the image = rising against OpenGL's +Y: the slope faces up.
    assert (decoded(brighter_down)[1:-1, :, 1] > 0.02).all()
    np.testing.assert_allclose(brighter_down[..., 0], 0.5, atol=1e-6)
    # Rising toward the right: the slope faces left.
    assert (decoded(brighter_right)[:, 1:-1, 0] < -0.02).all()
    np.testing.assert_allclose(brighter_right[..., 1], 0.5, atol=1e-6)


def height_gradient(height: np.ndarray, tiled: bool) -> tuple[np.ndarray, np.ndarray]:
    """The test's own dh/dx (toward the right) and dh/drow (toward the bottom), interior pixels when not tiled."""
    h = height[..., 0].astype(np.float64)
    if tiled:
        dx = (np.roll(h, -1, axis=1) - np.roll(h, 1, axis=1)) / 2
        drow = (np.roll(h, -1, axis=0) - np.roll(h, 1, axis=0)) / 2
        return dx, drow
    dx, drow = np.gradient(h, axis=1), np.gradient(h, axis=0)
    return dx[1:-1, 1:-1], drow[1:-1, 1:-1]


@pytest.mark.parametrize(
    "albedo",
    [bump(), gray(np.add.outer(np.linspace(0.1, 0.5, 64), np.linspace(0.0, 0.3, 64))), tileable_albedo(3, 64)],
    ids=["bump", "diagonal-ramp", "smooth-field"],
)
@pytest.mark.parametrize("tiled", [True, False])
def test_normal_follows_the_height_gradient(albedo, tiled):
    """Decoded, the normal is (-s dh/dx, +s dh/drow, 1) normalized: slopes recovered from it match the height map's."""
    strength = 6.0
    maps = derive_pbr(albedo, tiled, tiled, strength)
    n = decoded(maps.normal)
    if not tiled:
        n = n[1:-1, 1:-1]
    slope_x, slope_up = -n[..., 0] / n[..., 2], n[..., 1] / n[..., 2]
    dx, drow = height_gradient(maps.height, tiled)
    for recovered, expected in ((slope_x, strength * dx), (slope_up, strength * drow)):
        assert np.abs(expected).max() > 0.02, "the case must have slopes to compare"
        if np.ptp(expected) > 1e-6:
            assert np.corrcoef(recovered.ravel(), expected.ravel())[0, 1] > 0.99
        np.testing.assert_allclose(recovered, expected, atol=2e-3 * (1 + np.abs(expected).max()))


def test_strength_scales_the_slope():
    albedo = tileable_albedo(4, 64)
    soft, strong = (decoded(derive_pbr(albedo, True, True, s).normal) for s in (2.0, 8.0))
    slope_soft, slope_strong = soft[..., :2] / soft[..., 2:], strong[..., :2] / strong[..., 2:]
    np.testing.assert_allclose(slope_strong, 4.0 * slope_soft, atol=5e-3)


# -- the height map -----------------------------------------------------------------------


def test_height_keeps_large_shapes_and_fine_detail():
    """Large shapes are favoured over pixel grain, yet the grain still shows (neither plain luminance nor a blur)."""
    size = 128
    x = np.arange(size)
    large, fine = 0.2 * np.sin(2 * np.pi * x / 64), 0.05 * np.sin(2 * np.pi * x / 4)
    albedo = gray(0.5 + large[None, :] + fine[:, None])
    spectrum = np.abs(np.fft.fft2(derive_pbr(albedo, True, True).height[..., 0]))
    large_amplitude, fine_amplitude = spectrum[0, size // 64], spectrum[size // 4, 0]
    relative = (fine_amplitude / large_amplitude) / (0.05 / 0.2)
    assert 0.15 < relative < 0.8, f"fine detail kept at {relative:.2f} of its share of the albedo"


def test_brighter_is_higher():
    albedo = tileable_albedo(5, 64)
    height = derive_pbr(albedo, True, True).height[..., 0]
    assert np.corrcoef(height.ravel(), albedo[..., 0].ravel())[0, 1] > 0.8


# -- the roughness map --------------------------------------------------------------------


def test_bright_smooth_is_glossier_than_dark_busy():
    rng = np.random.default_rng(6)
    luminance = np.empty((64, 64))
    luminance[:, :32] = 0.85  # bright, smooth
    luminance[:, 32:] = 0.25 + 0.2 * rng.random((64, 32))  # dark, busy
    roughness = derive_pbr(gray(luminance), False, False).roughness[..., 0]
    glossy, rough = roughness[:, 4:24].mean(), roughness[:, 40:60].mean()
    assert glossy < 0.5 and rough > 0.85, (glossy, rough)


def test_roughness_is_smooth():
    albedo = np.random.default_rng(7).random((64, 64, 3), dtype=np.float32) * 0.5 + 0.3
    roughness = derive_pbr(albedo, True, True).roughness[..., 0]
    luminance = albedo[..., 1]
    assert np.abs(np.diff(roughness, axis=1)).mean() < 0.2 * np.abs(np.diff(luminance, axis=1)).mean()


# -- tiling -------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [(5, 11), (-17, 3), (1, 0), (0, 63)])
def test_tiled_maps_shift_with_the_albedo(shift):
    albedo = 0.4 + 0.1 * np.random.default_rng(8).random((64, 96, 3), dtype=np.float32)
    base, moved = derive_pbr(albedo, True, True), derive_pbr(np.roll(albedo, shift, axis=(0, 1)), True, True)
    for name in MAPS:
        np.testing.assert_allclose(getattr(moved, name), np.roll(getattr(base, name), shift, axis=(0, 1)), atol=1e-5, err_msg=name)


def test_one_tiled_axis_shifts_only_along_it():
    albedo = 0.4 + 0.1 * np.random.default_rng(9).random((64, 64, 3), dtype=np.float32)  # roughness not saturated
    base = derive_pbr(albedo, True, False)
    along_x = derive_pbr(np.roll(albedo, 13, axis=1), True, False)
    along_rows = derive_pbr(np.roll(albedo, 13, axis=0), True, False)
    for name in MAPS:
        np.testing.assert_allclose(getattr(along_x, name), np.roll(getattr(base, name), 13, axis=1), atol=1e-5, err_msg=name)
        assert not np.allclose(getattr(along_rows, name), np.roll(getattr(base, name), 13, axis=0), atol=1e-3), name


def test_untiled_maps_do_not_shift_with_the_albedo():
    albedo = 0.4 + 0.1 * np.random.default_rng(10).random((64, 64, 3), dtype=np.float32)
    base, moved = derive_pbr(albedo, False, False), derive_pbr(np.roll(albedo, 7, axis=1), False, False)
    for name in MAPS:
        shifted = np.roll(getattr(base, name), 7, axis=1)
        edge = np.abs(getattr(moved, name)[:, [0, 6, 7, -1]] - shifted[:, [0, 6, 7, -1]]).max()
        assert edge > 1e-3, f"{name}: the edge columns see the image's edges, not its wrap"


def seam_ratio(pixels: np.ndarray, axis: int) -> float:
    """The mean jump across the wrap (last line to first) over the median jump between neighbouring lines inside."""
    lines = np.moveaxis(pixels.astype(np.float64), axis, 0)
    inside = np.abs(np.diff(lines, axis=0)).mean(axis=(1, 2))
    return float(np.abs(lines[0] - lines[-1]).mean() / np.median(inside))


@pytest.mark.parametrize("axis", [0, 1])
def test_maps_of_a_tileable_albedo_tile_when_tiled(axis):
    """Across the wrap, tiled maps jump about as much as between any two lines inside; untiled maps clearly more.

    Averaged over a few albedos: a single seam is one sample of a noisy quantity.
    """
    albedos = [tileable_albedo(seed) for seed in range(4)]
    assert np.mean([seam_ratio(albedo, axis) for albedo in albedos]) < 1.3, "the albedos themselves tile"
    tiled = [derive_pbr(albedo, True, True) for albedo in albedos]
    untiled = [derive_pbr(albedo, False, False) for albedo in albedos]
    for name in MAPS:
        seam_tiled = np.mean([seam_ratio(getattr(maps, name), axis) for maps in tiled])
        seam_untiled = np.mean([seam_ratio(getattr(maps, name), axis) for maps in untiled])
        assert seam_tiled < 1.3, f"{name}: tiled, the wrap jumps {seam_tiled:.2f} x the typical step inside"
        assert seam_untiled > 1.5, f"{name}: untiled, the wrap jumps only {seam_untiled:.2f} x the typical step inside"


def test_tiled_maps_match_the_middle_of_a_repeated_texture():
    """What a renderer shows: the tiled maps of one tile are the maps of the middle tile of a 3 x 3 repeat."""
    albedo = tileable_albedo(1)
    size = albedo.shape[0]
    tiled = derive_pbr(albedo, True, True)
    middle = derive_pbr(np.tile(albedo, (3, 3, 1)), False, False)
    untiled = derive_pbr(albedo, False, False)
    for name in MAPS:
        expected = getattr(middle, name)[size : 2 * size, size : 2 * size]
        # Not exact: the height's range is measured over the whole 3 x 3 image.
        assert np.abs(getattr(tiled, name) - expected).max() < 0.03, name
        assert np.abs(getattr(untiled, name) - expected)[:, [0, -1]].max() > 0.05, name


# -- outputs ------------------------------------------------------------------------------


def test_image_outputs_carry_roles_and_provenance():
    maps = derive_pbr(tileable_albedo(11, 32), True, True)
    provenance = Provenance(model="sdxl", seed=42, tiling_x=True, tiling_y=True)
    outputs = to_image_outputs(maps, provenance, batch_index=2)
    assert [o.role for o in outputs] == ["height", "normal", "roughness"]
    assert [o.pixels.shape[2] for o in outputs] == [1, 3, 1]
    assert all(o.provenance is provenance and o.batch_index == 2 for o in outputs)
    assert outputs[1].pixels is maps.normal
