"""Project Texture from View's plain-Python part (plugins/blender/artforge_blender/projection.py
and image_jobs.projection_request): depth to the gray a depth ControlNet reads, the PNG, the
camera projection that makes the UVs, the request. No bpy: tests/test_blender_extension.py runs
the rest inside Blender."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "blender"))

import numpy as np
import pytest
from artforge_blender.image_jobs import ProjectionSettings, capture_layout, projection_request
from artforge_blender.projection import (
    FAR_LEVEL,
    PROJECTION_UV_MAP,
    CameraView,
    depth_file,
    depth_to_gray,
    gray_png,
    in_view,
    loop_uvs,
    pad_to_canvas,
    project_points,
    projection_size,
)
from PIL import Image as PILImage

from artforge.api.pixels import decode_image
from artforge_client.v1 import image_pb2, pixels_pb2

# -- depth ----------------------------------------------------------------------------------------


def test_near_is_bright_far_is_dim_and_nothing_is_black():
    depth = np.array([[2.0, 4.0, 8.0], [1e10, math.inf, math.nan], [-1.0, 0.0, 150.0]])
    gray = depth_to_gray(depth, clip_end=100.0)
    assert gray.dtype == np.float32 and gray.shape == depth.shape
    assert gray[0, 0] == 1.0 and gray[0, 2] == pytest.approx(FAR_LEVEL) and gray[0, 0] > gray[0, 1] > gray[0, 2] > 0
    assert (gray[1:] == 0).all(), "the world, behind the camera or past the clip end must be black"
    # Linear in 1/depth: 4 m lies a third of the way from 8 m (1/8) to 2 m (1/2) in disparity.
    assert gray[0, 1] == pytest.approx(FAR_LEVEL + (1 - FAR_LEVEL) * (1 / 4 - 1 / 8) / (1 / 2 - 1 / 8))


def test_one_distance_is_all_bright_and_an_empty_view_all_black():
    assert (depth_to_gray(np.full((4, 6), 3.0)) == 1.0).all()
    assert (depth_to_gray(np.full((4, 6), 1e10)) == 0.0).all()


def test_a_plane_seen_at_an_angle_is_a_straight_ramp():
    """A pinhole camera 2 m above the ground, looking down at 30 degrees: 1/depth of the ground is
    affine in the image row, so its grays step evenly, brighter towards the bottom."""
    rows = np.arange(48) + 0.5
    angles = math.radians(30) + np.arctan((rows - 24) / 60)  # the ray's angle below the horizon
    distance_along_axis = (2 / np.sin(angles)) * np.cos(angles - math.radians(30))
    gray = depth_to_gray(distance_along_axis[:, None].repeat(3, axis=1))
    steps = np.diff(gray[:, 0])
    assert (steps > 0).all() and np.allclose(steps, steps[0], rtol=1e-4), steps
    assert gray[0, 0] == pytest.approx(FAR_LEVEL) and gray[-1, 0] == 1.0


# -- sizes and the canvas ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "percent", "limit", "expected"),
    [(160, 96, 100, 512, 160), (1920, 1080, 100, 768, 768), (1920, 1080, 25, 768, 480), (1080, 1920, 50, 2048, 960)],
)
def test_the_size_is_the_render_resolution_up_to_the_limit(x, y, percent, limit, expected):
    assert projection_size(x, y, percent, limit) == expected


def test_padding_repeats_the_edges_onto_the_canvas_like_the_colour_capture():
    layout = capture_layout(1000, 300, 100)  # 100x30 -> 104x64 canvas
    assert layout.padded and (layout.canvas_width, layout.canvas_height) == (104, 64)
    gray = np.linspace(0, 1, layout.width * layout.height, dtype=np.float32).reshape(layout.height, layout.width)
    padded = pad_to_canvas(gray, layout)
    assert padded.shape == (64, 104)
    frame = padded[layout.y : layout.y + layout.height, layout.x : layout.x + layout.width]
    assert np.array_equal(frame, gray)
    assert (padded[: layout.y, layout.x : layout.x + layout.width] == gray[0]).all()  # the top row, repeated
    assert pad_to_canvas(np.zeros((96, 160), np.float32), capture_layout(160, 96, 160)).shape == (96, 160)
    with pytest.raises(ValueError, match="the layout's frame 100x30"):
        pad_to_canvas(np.zeros((30, 90)), layout)


# -- the PNG ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 16])
def test_the_png_is_gray_and_reads_back_in_pillow_and_on_the_server(bits):
    gray = np.random.default_rng(1).random((37, 53)).astype(np.float32)
    gray[0, 0], gray[-1, -1] = 0.0, 1.0
    png = gray_png(gray, bits)
    image = PILImage.open(io.BytesIO(png))
    assert image.size == (53, 37) and image.mode == ("I;16" if bits == 16 else "L")
    top = (1 << bits) - 1
    assert np.array_equal(np.asarray(image, np.int64), np.round(gray.astype(np.float64) * top).astype(np.int64))
    served = decode_image(pixels_pb2.Image(encoding=pixels_pb2.IMAGE_ENCODING_PNG, data=png), "controls[0].image", 10**7)
    assert served.shape == (37, 53, 1) and np.abs(served[..., 0] - gray).max() <= 0.5 / top + 1e-6


def test_the_png_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="2-D"):
        gray_png(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="8 or 16"):
        gray_png(np.zeros((4, 4)), 12)


# -- the request ------------------------------------------------------------------------------------


def test_the_request_is_the_canvas_with_one_depth_control():
    layout = capture_layout(1000, 300, 100)
    settings = ProjectionSettings("mossy stones", depth_strength=0.8, model="sd15", steps=12, seed=-1)
    request = projection_request(settings, b"depth-png", layout)
    assert (request.width, request.height) == (104, 64) and request.prompt == "mossy stones" and request.model == "sd15"
    assert request.mode == image_pb2.IMAGE_MODE_UNSPECIFIED and not request.HasField("init_image")
    assert request.steps == 12 and not request.HasField("seed") and request.preview_every == 1
    (control,) = request.controls
    assert (control.type, control.model, control.preprocessor, control.image.data) == ("depth", "", "", b"depth-png")
    assert control.strength == pytest.approx(0.8) and not control.HasField("start") and not control.HasField("end")
    assert control.image.encoding == pixels_pb2.IMAGE_ENCODING_PNG and request.output_format == pixels_pb2.OUTPUT_FORMAT_PNG8


def test_the_views_colours_make_it_img2img():
    layout = capture_layout(160, 96, 160)
    request = projection_request(ProjectionSettings("x", init_strength=0.6, seed=5), b"depth", layout, b"colours")
    assert request.mode == image_pb2.IMAGE_MODE_IMG2IMG and request.init_image.data == b"colours"
    assert request.strength == pytest.approx(0.6) and request.seed == 5 and not request.HasField("steps")
    with pytest.raises(ValueError, match="colours"):
        projection_request(ProjectionSettings("x", init_strength=0.6), b"depth", layout)


# -- the camera projection ----------------------------------------------------------------------------

IDENTITY = np.eye(4).tolist()
# Camera.view_frame of a 50 mm lens on a 36 mm sensor, 16:9: corners at 1.44 m, half width 0.5
FRAME_16_9 = [(0.5, 0.28125, -1.44), (0.5, -0.28125, -1.44), (-0.5, -0.28125, -1.44), (-0.5, 0.28125, -1.44)]


def test_points_project_like_a_pinhole_camera():
    view = CameraView.from_frame(IDENTITY, FRAME_16_9, ortho=False)
    assert (view.min_x, view.max_x, view.min_y, view.max_y, view.distance) == (-0.5, 0.5, -0.28125, 0.28125, 1.44)
    points = np.array([[0, 0, -5], [0.5, 0.28125, -1.44], [-1, -0.5625, -2.88], [0.25, 0, -1.44], [1, 1, 0], [0, 0, 3]])
    projected = project_points(view, points)
    expected = [[0.5, 0.5, 5], [1, 1, 1.44], [0, 0, 2.88], [0.75, 0.5, 1.44], [0.5, 0.5, 0], [0.5, 0.5, -3]]
    assert np.allclose(projected, expected)
    assert in_view(projected).tolist() == [True, True, True, True, False, False]


def test_the_camera_and_object_matrices_are_applied():
    """A camera at (0, -10, 0) looking along +y (rotated 90 degrees about x) and an object moved
    by (1, 0, 0): the object's origin is 10 m in front, a quarter of the frame right of centre
    when the frame is 4 m wide there."""
    camera_to_world = np.array([[1, 0, 0, 0], [0, 0, -1, -10], [0, 1, 0, 0], [0, 0, 0, 1]], float)
    view = CameraView.from_frame(
        np.linalg.inv(camera_to_world).tolist(), [(0.2, 0.1, -1), (0.2, -0.1, -1), (-0.2, -0.1, -1), (-0.2, 0.1, -1)], False
    )
    object_to_world = [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    (u, v, depth), (u2, v2, _) = project_points(view, np.array([[0, 0, 0], [0, 0, 1]]), object_to_world)
    assert (u, v, depth) == pytest.approx((0.75, 0.5, 10)) and (u2, v2) == pytest.approx((0.75, 1.0))


def test_an_orthographic_camera_ignores_distance():
    view = CameraView.from_frame(IDENTITY, [(3, 2, -1), (3, -2, -1), (-3, -2, -1), (-3, 2, -1)], ortho=True)
    projected = project_points(view, np.array([[1.5, 1, -2], [1.5, 1, -20]]))
    assert np.allclose(projected[:, :2], [[0.75, 0.75], [0.75, 0.75]]) and projected[:, 2].tolist() == [2, 20]


def test_each_loop_takes_its_vertex_uv():
    projected = np.array([[0.1, 0.2, 3.0], [0.3, 0.4, 3.0], [0.5, 0.6, 3.0]])
    uvs = loop_uvs(projected, np.array([2, 0, 1, 0]))
    assert uvs.dtype == np.float32 and np.allclose(uvs, [0.5, 0.6, 0.1, 0.2, 0.3, 0.4, 0.1, 0.2])
    assert PROJECTION_UV_MAP == "ArtForge Projection"


# -- the depth file -----------------------------------------------------------------------------------


def test_the_depth_file_never_overwrites_one_that_is_there(tmp_path):
    first = depth_file(tmp_path, "shot", "Cam")
    assert first == tmp_path / "shot depth Cam.png"
    first.write_bytes(b"x")
    second = depth_file(tmp_path, "shot", "Cam")
    assert second == tmp_path / "shot depth Cam 2.png"
    second.write_bytes(b"x")
    assert depth_file(tmp_path, "shot", "Cam").name == "shot depth Cam 3.png"
    assert depth_file(tmp_path, "a/b", 'Cam:"1"').name == "a_b depth Cam__1_.png"
