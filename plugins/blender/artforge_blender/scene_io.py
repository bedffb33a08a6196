"""The bpy side of the plain modules: read a SceneInfo from a scene, build a BlockoutPlan into it,
turn server images into packed image datablocks and a material, capture the camera view.
Main thread only."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import bmesh
import bpy
from mathutils import Euler, Matrix

from .blockout_plan import BlockoutPlan, Primitive
from .image_jobs import capture_size
from .scene_context import CameraInfo, LightInfo, MaterialInfo, ObjectInfo, SceneInfo

BLOCKOUT_COLLECTION = "ArtForge Block-out"


# -- reading the scene (see scene_context's docstring for the field mapping) --------------------


def _degrees(obj: bpy.types.Object) -> tuple[float, float, float]:
    euler = obj.matrix_world.to_euler("XYZ")
    return (math.degrees(euler.x), math.degrees(euler.y), math.degrees(euler.z))


def _material_info(material: bpy.types.Material) -> MaterialInfo:
    color = tuple(material.diffuse_color[:3])
    if material.use_nodes and material.node_tree is not None:
        bsdf = next((n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
        if bsdf is not None:
            color = tuple(bsdf.inputs["Base Color"].default_value[:3])
    return MaterialInfo(material.name, color)


def _world_color(world: bpy.types.World | None) -> tuple[float, float, float] | None:
    if world is None:
        return None
    if world.use_nodes and world.node_tree is not None:
        background = next((n for n in world.node_tree.nodes if n.type == "BACKGROUND"), None)
        if background is not None:
            return tuple(background.inputs["Color"].default_value[:3])
    return tuple(world.color)


def gather_scene(scene: bpy.types.Scene, view_layer: bpy.types.ViewLayer) -> SceneInfo:
    objects, lights = [], []
    for obj in scene.objects:
        if not obj.visible_get(view_layer=view_layer):
            continue
        location = tuple(obj.matrix_world.translation)
        if obj.type == "LIGHT":
            light = obj.data
            lights.append(LightInfo(obj.name, light.type, tuple(light.color), light.energy, location, _degrees(obj)))
        elif obj.type != "CAMERA":
            materials = tuple(_material_info(slot.material) for slot in obj.material_slots if slot.material is not None)
            objects.append(ObjectInfo(obj.name, obj.type, tuple(obj.dimensions), location, _degrees(obj), materials))
    camera = None
    if scene.camera is not None:
        camera = CameraInfo(
            scene.camera.name,
            getattr(scene.camera.data, "lens", 50.0),
            tuple(scene.camera.matrix_world.translation),
            _degrees(scene.camera),
        )
    return SceneInfo(scene.name, tuple(objects), tuple(lights), camera, _world_color(scene.world))


# -- building a block-out plan ---------------------------------------------------------------------


def _torus(bm: bmesh.types.BMesh, segments: int = 32, ring_segments: int = 12) -> None:
    """A torus 1 m across and 0.25 m tall (major radius 0.375, minor 0.125); bmesh has no torus op."""
    major, minor = 0.375, 0.125
    rings = []
    for i in range(segments):
        a = 2 * math.pi * i / segments
        ring = []
        for j in range(ring_segments):
            b = 2 * math.pi * j / ring_segments
            r = major + minor * math.cos(b)
            ring.append(bm.verts.new((r * math.cos(a), r * math.sin(a), minor * math.sin(b))))
        rings.append(ring)
    for i in range(segments):
        for j in range(ring_segments):
            a, b = rings[i], rings[(i + 1) % segments]
            bm.faces.new((a[j], b[j], b[(j + 1) % ring_segments], a[(j + 1) % ring_segments]))


def _primitive_mesh(kind: str, name: str) -> bpy.types.Mesh:
    """A mesh that fits a 1 m cube centred on the origin, so object scale is size in metres."""
    bm = bmesh.new()
    try:
        match kind:
            case "cube":
                bmesh.ops.create_cube(bm, size=1.0)
            case "uv_sphere":
                bmesh.ops.create_uvsphere(bm, u_segments=32, v_segments=16, radius=0.5)
            case "ico_sphere":
                bmesh.ops.create_icosphere(bm, subdivisions=2, radius=0.5)
            case "cylinder":
                bmesh.ops.create_cone(bm, cap_ends=True, segments=32, radius1=0.5, radius2=0.5, depth=1.0)
            case "cone":
                bmesh.ops.create_cone(bm, cap_ends=True, segments=32, radius1=0.5, radius2=0.0, depth=1.0)
            case "plane":
                bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=0.5)
            case "monkey":
                bmesh.ops.create_monkey(bm, matrix=Matrix.Scale(0.5, 4))  # as primitive_monkey_add(size=1)
            case "torus":
                _torus(bm)
            case _:
                raise ValueError(f"unknown primitive {kind!r}")  # validate_plan lets none through
        mesh = bpy.data.meshes.new(name)
        bm.to_mesh(mesh)
        return mesh
    finally:
        bm.free()


def colour_material(name: str, linear: tuple[float, float, float]) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    material.diffuse_color = (*linear, 1.0)  # what Solid view shows
    material.use_nodes = True
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Base Color"].default_value = (*linear, 1.0)
    return material


def _place(obj: bpy.types.Object, location: tuple[float, float, float], rotation: tuple[float, float, float]) -> None:
    obj.location = location
    obj.rotation_euler = Euler(tuple(math.radians(r) for r in rotation), "XYZ")


def _primitive(item: Primitive) -> list[bpy.types.ID]:
    mesh = _primitive_mesh(item.type, item.name)
    material = colour_material(item.name, item.linear_color)
    mesh.materials.append(material)
    obj = bpy.data.objects.new(item.name, mesh)
    _place(obj, item.location, item.rotation)
    obj.scale = item.scale
    return [obj, mesh, material]


def build_plan(plan: BlockoutPlan, scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """Build a validated plan into a new collection as one undo step; on any failure, remove
    everything made so far and re-raise, so a plan builds completely or not at all."""
    made: list[bpy.types.ID] = []
    camera = None
    try:
        collection = bpy.data.collections.new(BLOCKOUT_COLLECTION)
        made.append(collection)
        for item in plan.objects:
            made += _primitive(item)
        for item in plan.lights:
            light = bpy.data.lights.new(item.name, item.type.upper())
            light.energy, light.color = item.energy, item.linear_color
            obj = bpy.data.objects.new(item.name, light)
            _place(obj, item.location, item.rotation)
            made += [obj, light]
        if plan.camera is not None:
            data = bpy.data.cameras.new(plan.camera.name)
            data.lens = plan.camera.lens
            camera = bpy.data.objects.new(plan.camera.name, data)
            _place(camera, plan.camera.location, plan.camera.rotation)
            made += [camera, data]
        objects = [item for item in made if isinstance(item, bpy.types.Object)]
        for obj in objects:
            collection.objects.link(obj)
        scene.collection.children.link(collection)
        if camera is not None:
            scene.camera = camera
    except Exception:
        for item in reversed(made):
            _remove(item)
        raise
    # Data made outside an operator needs its own undo step; in the file-less bpy module undo may be off.
    if bpy.ops.ed.undo_push.poll():
        bpy.ops.ed.undo_push(message="ArtForge block-out")
    return objects


_DATA = {
    "Object": "objects",
    "Mesh": "meshes",
    "Material": "materials",
    "Light": "lights",
    "Camera": "cameras",
    "Collection": "collections",
}


def _remove(item: bpy.types.ID) -> None:
    base = next(cls.__name__ for cls in type(item).__mro__ if cls.__name__ in _DATA)  # lights are PointLight, SunLight ...
    getattr(bpy.data, _DATA[base]).remove(item)


# -- images and materials -----------------------------------------------------------------------


def set_png(image: bpy.types.Image | None, name: str, png: bytes, data: bool = False) -> bpy.types.Image:
    """An image datablock holding exactly these PNG bytes, packed into the .blend. Reuses `image`
    (a preview updated step by step) when given."""
    if image is None:
        image = bpy.data.images.new(name, 8, 8)
    image.pack(data=png, data_len=len(png))
    image.source = "FILE"
    image.reload()
    image.colorspace_settings.name = "Non-Color" if data else "sRGB"
    return image


def show_in_image_editors(image: bpy.types.Image) -> None:
    """Every open Image Editor shows `image` (the issue asks that results show as they progress)."""
    window_manager = bpy.context.window_manager
    for window in window_manager.windows if window_manager else ():
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image


def texture_material(name: str, images: dict[str, bpy.types.Image]) -> bpy.types.Material:
    """Principled BSDF: albedo -> Base Color, roughness -> Roughness, normal -> Normal Map -> Normal.
    The height map is kept as an image datablock, not wired (a displacement setup is a choice)."""
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    tree = material.node_tree
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    for row, (map_name, socket) in enumerate((("albedo", "Base Color"), ("roughness", "Roughness"), ("normal", None))):
        image = images.get(map_name)
        if image is None:
            continue
        node = tree.nodes.new("ShaderNodeTexImage")
        node.name = node.label = map_name
        node.image = image
        node.location = (-700, 300 - 300 * row)
        if socket is not None:
            tree.links.new(node.outputs["Color"], bsdf.inputs[socket])
        else:
            normal_map = tree.nodes.new("ShaderNodeNormalMap")
            normal_map.location = (-350, 300 - 300 * row)
            tree.links.new(node.outputs["Color"], normal_map.inputs["Color"])
            tree.links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    return material


def assign_material(obj: bpy.types.Object, material: bpy.types.Material) -> None:
    """Into the active slot, or a new slot when the object has none."""
    if obj.material_slots:
        obj.material_slots[obj.active_material_index].material = material
    else:
        obj.data.materials.append(material)


# -- capturing the camera view --------------------------------------------------------------------


@contextmanager
def _temporarily(owner: object, **values: object) -> Iterator[None]:
    saved = {key: getattr(owner, key) for key in values}
    try:
        for key, value in values.items():
            setattr(owner, key, value)
        yield
    finally:
        for key, value in saved.items():
            setattr(owner, key, value)


def capture_camera(scene: bpy.types.Scene, size: int, engine: str = "BLENDER_WORKBENCH") -> bytes:
    """The active camera's view as PNG bytes, `size` pixels on the long side (a multiple of 8, as
    the server wants). Workbench by default: it is quick and runs without a GPU (software GL).
    The scene's render settings are restored afterwards."""
    render = scene.render
    width, height = capture_size(render.resolution_x, render.resolution_y, size)
    fd, path = tempfile.mkstemp(suffix=".png", prefix="artforge-camera-")
    os.close(fd)
    try:
        settings = render.image_settings
        with (
            _temporarily(render, engine=engine, resolution_x=width, resolution_y=height, resolution_percentage=100),
            _temporarily(settings, file_format="PNG", color_mode="RGB", color_depth="8"),
        ):
            bpy.ops.render.render(scene=scene.name)
            bpy.data.images["Render Result"].save_render(path, scene=scene)
        with open(path, "rb") as file:
            return file.read()
    finally:
        os.unlink(path)
