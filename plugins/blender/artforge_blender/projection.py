"""Project Texture from View, the plain part (numpy, no bpy): the camera's depth as the gray
picture a depth ControlNet reads, that picture as a PNG, and where the camera sees each point (the
UVs of the "ArtForge Projection" map). scene_io renders the depth and writes the UVs; operators
runs the job; image_jobs.projection_request builds the request.

Depth convention (what depth ControlNets were trained on: MiDaS-style relative inverse depth):
near is bright. A pixel's gray is linear in 1/depth between the farthest geometry in view
(FAR_LEVEL) and the nearest (1.0), so a flat plane seen at an angle is a straight ramp; where the
camera sees nothing (the world, or beyond the clip end) it is black, 0.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .image_jobs import CaptureLayout

PROJECTION_UV_MAP = "ArtForge Projection"
FAR_LEVEL = 0.1  # the farthest geometry's gray: above the background's black, so the two stay apart
NO_DEPTH = 1e9  # Blender's Z pass holds 1e10 where a ray hits nothing


def projection_size(resolution_x: int, resolution_y: int, percentage: int, limit: int) -> int:
    """The long side to render and generate at: the camera's render resolution (times its
    percentage), scaled down to `limit` (what the server and the artist's time allow)."""
    return max(1, min(limit, round(max(resolution_x, resolution_y) * percentage / 100)))


def depth_to_gray(depth: np.ndarray, clip_end: float = NO_DEPTH) -> np.ndarray:
    """Distances from the camera (a Z pass, any shape) -> float32 grays in 0..1, near bright.
    What is not finite, not in front of the camera or at or beyond `clip_end` is background: 0."""
    depth = np.asarray(depth, dtype=np.float64)
    seen = np.isfinite(depth) & (depth > 0) & (depth < min(clip_end, NO_DEPTH))
    gray = np.zeros(depth.shape, np.float32)
    if not seen.any():
        return gray
    disparity = 1.0 / depth[seen]
    near, far = disparity.max(), disparity.min()
    if near - far <= near * 1e-9:  # everything at one distance (a wall facing the camera)
        gray[seen] = 1.0
        return gray
    gray[seen] = FAR_LEVEL + (1.0 - FAR_LEVEL) * (disparity - far) / (near - far)
    return gray


def pad_to_canvas(gray: np.ndarray, layout: CaptureLayout) -> np.ndarray:
    """The frame's grays (top row first, layout.width x layout.height) centred on the canvas the
    server takes, edges repeated, as capture_camera pads the colour picture."""
    if gray.shape != (layout.height, layout.width):
        raise ValueError(f"the depth is {gray.shape[1]}x{gray.shape[0]}, the layout's frame {layout.width}x{layout.height}")
    if not layout.padded:
        return gray
    bottom, right = layout.canvas_height - layout.height - layout.y, layout.canvas_width - layout.width - layout.x
    return np.pad(gray, ((layout.y, bottom), (layout.x, right)), mode="edge")


def gray_png(gray: np.ndarray, bits: int = 16) -> bytes:
    """A grayscale PNG (8 or 16 bits) of values in 0..1, top row first. 16 bits keep the depth's
    steps below what the eye or a ControlNet tells apart; Krita and the server read both."""
    if gray.ndim != 2 or 0 in gray.shape:
        raise ValueError(f"a gray picture is 2-D and not empty, not {gray.shape}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    height, width = gray.shape
    top = (1 << bits) - 1
    values = np.round(np.clip(np.asarray(gray, np.float64), 0.0, 1.0) * top).astype(">u2" if bits == 16 else "u1")
    rows = np.hstack([np.zeros((height, 1), np.uint8), values.view(np.uint8).reshape(height, -1)])  # filter 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)  # colour type 0: gray
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b"")


@dataclass(frozen=True)
class CameraView:
    """What projecting needs of the camera as it was when its depth was rendered: the world ->
    camera matrix (the camera's matrix_world without scale, inverted; 4x4 rows) and its view frame
    (Camera.view_frame: the frame's corners in camera space, at `distance` in front for a
    perspective camera)."""

    world_to_camera: tuple[tuple[float, ...], ...]
    min_x: float
    max_x: float
    min_y: float
    max_y: float
    distance: float
    ortho: bool = False

    @classmethod
    def from_frame(cls, world_to_camera: Sequence[Sequence[float]], corners: Sequence[Sequence[float]], ortho: bool) -> CameraView:
        """`corners` as Camera.view_frame gives them: top right, bottom right, bottom left, top left."""
        matrix = tuple(tuple(float(v) for v in row) for row in world_to_camera)
        return cls(matrix, corners[2][0], corners[1][0], corners[1][1], corners[0][1], -corners[0][2], ortho)


def project_points(view: CameraView, points: np.ndarray, object_to_world: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """Where the camera sees each point: N x 3 of (x, y) in the frame (0..1, from its bottom left
    corner, so directly a UV) and the distance in front of the camera, as Blender's
    bpy_extras.object_utils.world_to_camera_view computes it. `points` in object space when
    `object_to_world` (4x4 rows) is given, else in world space."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    matrix = np.asarray(view.world_to_camera, np.float64)
    if object_to_world is not None:
        matrix = matrix @ np.asarray(object_to_world, np.float64)
    local = points @ matrix[:3, :3].T + matrix[:3, 3]
    depth = -local[:, 2]
    x, y = local[:, 0].copy(), local[:, 1].copy()
    if not view.ortho:
        at_eye = depth == 0
        scale = np.divide(view.distance, depth, out=np.zeros_like(depth), where=~at_eye)
        x, y = x * scale, y * scale
    u = (x - view.min_x) / (view.max_x - view.min_x)
    v = (y - view.min_y) / (view.max_y - view.min_y)
    if not view.ortho:
        u[at_eye], v[at_eye] = 0.5, 0.5
    return np.stack([u, v, depth], axis=1)


def in_view(projected: np.ndarray) -> np.ndarray:
    """Which projected points (project_points' rows) are in the frame and in front of the camera."""
    u, v, depth = projected[:, 0], projected[:, 1], projected[:, 2]
    return (depth > 0) & (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)


def loop_uvs(projected: np.ndarray, loop_vertices: np.ndarray) -> np.ndarray:
    """The flat (u0, v0, u1, v1, ...) array of a mesh's loops (each loop takes its vertex's place),
    ready for MeshUVLoopLayer.uv.foreach_set."""
    return np.ascontiguousarray(projected[np.asarray(loop_vertices, np.int64), :2], np.float32).ravel()


def depth_file(folder: str | Path, stem: str, camera: str, exists: Callable[[Path], bool] = Path.exists) -> Path:
    """Where to save a depth PNG: "<stem> depth <camera>.png" in `folder`, numbered (" 2", " 3",
    ...) when that file is there already, so an earlier depth (perhaps the artist's) is never
    overwritten. Characters a file name cannot hold become "_"."""
    safe = "".join("_" if c in '<>:"/\\|?*' or ord(c) < 32 else c for c in f"{stem} depth {camera}").strip(" .") or "depth"
    folder = Path(folder)
    path, number = folder / f"{safe}.png", 1
    while exists(path):
        number += 1
        path = folder / f"{safe} {number}.png"
    return path
