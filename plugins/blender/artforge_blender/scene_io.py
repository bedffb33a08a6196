"""The bpy side of the plain modules: read a SceneInfo from a scene, build a BlockoutPlan into it,
turn server images into packed image datablocks and a material, capture the camera view, render
its depth, project a texture through it and bake it.
Main thread only."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import bmesh
import bpy
import numpy as np
from mathutils import Euler, Matrix

from .blockout_plan import BlockoutPlan, BuildReport, Primitive
from .image_jobs import CaptureLayout, capture_layout
from .projection import PROJECTION_UV_MAP, CameraView, depth_file, in_view, loop_uvs, project_points
from .scene_context import CameraInfo, LightInfo, MaterialInfo, ObjectInfo, SceneInfo

BLOCKOUT_COLLECTION = "ArtForge Block-out"


# -- reading the scene (see scene_context's docstring for the field mapping) --------------------


def _degrees(obj: bpy.types.Object) -> tuple[float, float, float]:
    euler = obj.matrix_world.to_euler("XYZ")
    return (math.degrees(euler.x), math.degrees(euler.y), math.degrees(euler.z))


DEFAULT_BASE_COLOR = (0.8, 0.8, 0.8)  # what Blender gives a new material, in its node and its viewport colour


def _material_info(material: bpy.types.Material) -> MaterialInfo:
    """The colour the material shows: what feeds the Principled BSDF's Base Color (a colour node, the
    mean of an image), its own value, or the viewport colour when only that was ever set."""
    viewport = tuple(material.diffuse_color[:3])
    bsdf = next((n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None) if material.node_tree else None
    if bsdf is None:
        return MaterialInfo(material.name, viewport)
    socket = bsdf.inputs["Base Color"]
    if socket.is_linked:
        color = _linked_color(socket.links[0].from_node)
        if color is not None:
            return MaterialInfo(material.name, color)
    value = tuple(socket.default_value[:3])
    unset = all(abs(a - b) < 1e-4 for a, b in zip(value, DEFAULT_BASE_COLOR, strict=True))
    return MaterialInfo(material.name, viewport if unset else value)


def _linked_color(node: bpy.types.Node) -> tuple[float, float, float] | None:
    """The colour a node feeds: an RGB node's, or an image's mean (linear); None for anything else."""
    if node.type == "RGB":
        return tuple(node.outputs[0].default_value[:3])
    if node.type != "TEX_IMAGE" or node.image is None or 0 in node.image.size:
        return None
    small = node.image.copy()  # a mean needs no more than 32 x 32 pixels; a 4K texture's floats are 256 MB
    try:
        small.scale(min(32, small.size[0]), min(32, small.size[1]))
        return tuple(float(v) for v in _pixels(small)[..., :3].reshape(-1, 3).mean(axis=0))
    finally:
        bpy.data.images.remove(small)


def _world_color(world: bpy.types.World | None) -> tuple[float, float, float] | None:
    if world is None:
        return None
    if world.node_tree is not None:  # World.use_nodes is deprecated in Blender 5: a node tree is what counts
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
    material = bpy.data.materials.new(name)  # Blender 5 gives every new material its node tree
    material.diffuse_color = (*linear, 1.0)  # what Solid view shows
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


BLOCKOUT_MARK = "artforge_blockout"  # an ID property on everything a block-out made: the block-out's number in its scene


def blockouts(scene: bpy.types.Scene) -> list[bpy.types.Collection]:
    """The scene's block-out collections, oldest first."""
    found = [c for c in scene.collection.children_recursive if BLOCKOUT_MARK in c]
    return sorted(found, key=lambda c: c[BLOCKOUT_MARK])


def _removable(obj: bpy.types.Object) -> bool:
    """Made by a block-out and in its collection only: one the artist also linked elsewhere is theirs now."""
    return BLOCKOUT_MARK in obj and len(obj.users_collection) == 1


def remove_blockout(collection: bpy.types.Collection, scene: bpy.types.Scene) -> None:
    """Remove what a block-out made: its collection, its removable objects, and their data once
    nothing uses it. The artist's things in it (objects moved in, collections nested) move up to
    the scene's collection; nothing of theirs is deleted."""
    ours, data = [], []
    for obj in collection.objects:
        if _removable(obj):
            ours.append(obj)
            if obj.data is not None:
                data.append(obj.data)
                data += [m for m in getattr(obj.data, "materials", ()) if m is not None]
        elif len(obj.users_collection) == 1:
            scene.collection.objects.link(obj)
    for child in collection.children:
        if child.name not in scene.collection.children:
            scene.collection.children.link(child)
    for obj in ours:
        bpy.data.objects.remove(obj)
    bpy.data.collections.remove(collection)
    for item in data:  # meshes before their materials, so a material's last user is gone first
        if BLOCKOUT_MARK in item and item.users == 0:
            _remove(item)


def _claim(item: bpy.types.ID, name: str) -> None:
    """Name `item` again now that the replaced block-out is gone: Blender gives it `name`, or where
    that is still taken the lowest free number ("House.001" again, not "House.002")."""
    if item.name != name:
        item.name = name


def build_plan(plan: BlockoutPlan, scene: bpy.types.Scene, *, replace: bool, use_camera: bool) -> BuildReport:
    """Build a validated plan into a new collection as one undo step; on any failure, remove
    everything made so far and re-raise, so a plan builds completely or not at all.

    `replace`: the scene's latest block-out is removed once the new one is built (remove_blockout),
    and the new one takes its collection's name.
    The plan's camera becomes the scene camera when `use_camera` is set, when the scene has none,
    or when the scene camera is the replaced block-out's; otherwise it is not made at all, since
    an unused camera is one more thing for the artist to delete."""
    existing = blockouts(scene)
    previous = existing[-1] if replace and existing else None
    number = existing[-1][BLOCKOUT_MARK] + 1 if existing else 1
    active = scene.camera
    leaving = previous is not None and active is not None and active.name in previous.objects and _removable(active)
    make_camera = use_camera or active is None or leaving
    made: list[tuple[bpy.types.ID, str]] = []  # everything made, with the name it was made with
    camera = None
    try:
        collection_name = BLOCKOUT_COLLECTION if previous is None else previous.name
        collection = bpy.data.collections.new(collection_name)
        made.append((collection, collection_name))
        for item in plan.objects:
            made += [(part, item.name) for part in _primitive(item)]
        for item in plan.lights:
            light = bpy.data.lights.new(item.name, item.type.upper())
            light.energy, light.color = item.energy, item.linear_color
            obj = bpy.data.objects.new(item.name, light)
            _place(obj, item.location, item.rotation)
            made += [(obj, item.name), (light, item.name)]
        if make_camera:
            data = bpy.data.cameras.new(plan.camera.name)
            data.lens, data.clip_end = plan.camera.lens, plan.camera.clip_end
            camera = bpy.data.objects.new(plan.camera.name, data)
            _place(camera, plan.camera.location, plan.camera.rotation)
            made += [(camera, plan.camera.name), (data, plan.camera.name)]
        for item, _ in made:
            item[BLOCKOUT_MARK] = number
        objects = [(item, name) for item, name in made if isinstance(item, bpy.types.Object)]
        for obj, _ in objects:
            collection.objects.link(obj)
        scene.collection.children.link(collection)
    except Exception:
        for item, _ in reversed(made):
            _remove(item)
        raise
    kept = None if make_camera else active.name
    replaced = None
    if previous is not None:
        replaced = previous.name
        remove_blockout(previous, scene)
    if camera is not None:
        scene.camera = camera
    # Built before the old one went (a failed build leaves it as it was), so names it held were numbered.
    for item, name in made:
        _claim(item, name)
    renamed = tuple(obj.name for obj, name in objects if obj.name != name)
    push_undo("ArtForge block-out")
    return BuildReport(
        collection.name,
        len(plan.objects),
        len(plan.lights),
        camera.name if camera is not None else None,
        kept,
        replaced,
        renamed,
        plan.notes,
    )


_DATA = {
    "Object": "objects",
    "Mesh": "meshes",
    "Material": "materials",
    "Light": "lights",
    "Camera": "cameras",
    "Collection": "collections",
}


def _pool(item: bpy.types.ID) -> bpy.types.bpy_prop_collection:
    base = next(cls.__name__ for cls in type(item).__mro__ if cls.__name__ in _DATA)  # lights are PointLight, SunLight ...
    return getattr(bpy.data, _DATA[base])


def _remove(item: bpy.types.ID) -> None:
    _pool(item).remove(item)


# -- images and materials -----------------------------------------------------------------------


def set_png(image: bpy.types.Image | None, name: str, png: bytes, data: bool = False) -> bpy.types.Image:
    """An image datablock holding exactly these PNG bytes, packed into the .blend. Reuses `image`
    (a preview updated step by step) when given."""
    if image is None:
        image = bpy.data.images.new(name, 8, 8)
    image.pack(data=png, data_len=len(png))
    image.source = "FILE"
    image.buffers_free()  # decoded again from the packed bytes on use; reload() would look for a file first and complain
    image.colorspace_settings.name = "Non-Color" if data else "sRGB"
    return image


def show_in_image_editors(image: bpy.types.Image) -> None:
    """Every open Image Editor shows `image` (the issue asks that results show as they progress)."""
    window_manager = bpy.context.window_manager
    for window in window_manager.windows if window_manager else ():
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image


TEXTURE_MARK = "artforge_texture"  # an ID property on what a texture job made, so a regenerate can find and replace it
BOX_UV_MAP = "ArtForge box"


def texture_material(name: str, images: dict[str, bpy.types.Image]) -> bpy.types.Material:
    """Principled BSDF: albedo -> Base Color, roughness -> Roughness, normal -> Normal Map -> Normal.
    The height map gets a node of its own, not wired (relief through a Displacement node is the
    artist's choice), so that the image has a user and is saved with the file."""
    material = bpy.data.materials.new(name)
    material[TEXTURE_MARK] = True
    tree = material.node_tree  # Blender 5 gives every new material its node tree (use_nodes is deprecated)
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    for row, (map_name, socket) in enumerate((("albedo", "Base Color"), ("roughness", "Roughness"), ("normal", None), ("height", None))):
        image = images.get(map_name)
        if image is None:
            continue
        image[TEXTURE_MARK] = True
        node = tree.nodes.new("ShaderNodeTexImage")
        node.name = node.label = map_name
        node.image = image
        node.location = (-700, 300 - 300 * row)
        if socket is not None:
            tree.links.new(node.outputs["Color"], bsdf.inputs[socket])
        elif map_name == "normal":
            normal_map = tree.nodes.new("ShaderNodeNormalMap")
            normal_map.location = (-350, 300 - 300 * row)
            tree.links.new(node.outputs["Color"], normal_map.inputs["Color"])
            tree.links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    tree.nodes.active = tree.nodes["albedo"]  # what Solid view's Texture colour and texture painting show
    return material


def object_by_uid(uid: int) -> bpy.types.Object | None:
    """The object a job was started on: session_uid survives renames, and no other object takes it."""
    return next((obj for obj in bpy.data.objects if obj.session_uid == uid), None)


def selected_faces(obj: bpy.types.Object) -> frozenset[int]:
    """The faces selected in Edit Mode (empty outside it, or when none are)."""
    if obj.type != "MESH" or obj.mode != "EDIT":
        return frozenset()
    obj.update_from_editmode()
    return frozenset(p.index for p in obj.data.polygons if p.select)


def place_texture(obj: bpy.types.Object, material: bpy.types.Material, faces: frozenset[int], mark: str = TEXTURE_MARK) -> str:
    """Put `material` on `obj` without losing anything of the artist's; says where, as a sentence's end.

    - The active slot holds an earlier ArtForge material of the same kind (`mark`: a texture, a
      projection): it is replaced, and removed when unused.
    - A mesh of its own: a new slot, on `faces` (the Edit Mode selection) or on every face; the
      other materials stay in their slots.
    - A mesh shared with other objects (linked duplicates), or a curve or text: the active slot
      links the material to this object only, and the data keeps its own material for the rest."""
    slots = obj.material_slots
    previous = slots[obj.active_material_index].material if slots else None
    if previous is not None and previous.get(mark):
        slots[obj.active_material_index].material = material
        name = previous.name
        remove_unused_texture(previous, mark)
        return f"on {obj.name}, in place of the earlier ArtForge {'texture' if mark == TEXTURE_MARK else 'projection'} '{name}'"
    data = obj.data
    if obj.type == "MESH" and data.users == 1:
        data.materials.append(material)
        index = len(data.materials) - 1
        _assign_faces(obj, index, faces)
        obj.active_material_index = index
        where = f"{len(faces)} selected faces" if faces else "all faces"
        kept = [m.name for m in data.materials[:index] if m is not None]
        return f"on {obj.name}, {where}, in a new material slot" + (f"; {', '.join(kept)} kept in their slots" if kept else "")
    if not slots:
        data.materials.append(None)
    slot = obj.material_slots[obj.active_material_index]
    kept = slot.material  # the data's material: the other users of the data keep showing it
    slot.link = "OBJECT"
    slot.material = material
    why = f"its data is shared by {data.users} objects" if data.users > 1 else "only a mesh's faces can take a new slot"
    return f"on {obj.name} only ({why}): the slot now links to the object" + (f", and '{kept.name}' stays on the data" if kept else "")


def _assign_faces(obj: bpy.types.Object, index: int, faces: frozenset[int]) -> None:
    """Faces (all when `faces` is empty; ones that no longer exist are skipped) use material slot `index`."""
    mesh = obj.data
    if obj.mode == "EDIT":
        bm = bmesh.from_edit_mesh(mesh)
        for face in bm.faces:
            if not faces or face.index in faces:
                face.material_index = index
        bmesh.update_edit_mesh(mesh)
        return
    for polygon in mesh.polygons:
        if not faces or polygon.index in faces:
            polygon.material_index = index
    mesh.update()


def remove_unused_texture(material: bpy.types.Material, mark: str = TEXTURE_MARK) -> None:
    """Remove an ArtForge material (a texture, a projection: `mark`) nothing uses any more, and its
    images that nothing else uses."""
    if material.users:
        return
    images = [n.image for n in material.node_tree.nodes if n.type == "TEX_IMAGE" and n.image is not None]
    bpy.data.materials.remove(material)
    for image in images:
        if image.users == 0 and image.get(mark):
            bpy.data.images.remove(image)


def needs_uvs(obj: bpy.types.Object) -> bool:
    return obj.type == "MESH" and len(obj.data.uv_layers) == 0


def add_box_uvs(obj: bpy.types.Object) -> None:
    """A UV map for a mesh without one, as a cube projection: each face takes the two object axes
    across its normal, in units of the object's largest side. Neighbouring faces that face the same
    way continue each other's coordinates, so a seamless texture stays seamless across them."""
    mesh = obj.data
    editing = obj.mode == "EDIT"
    bm = bmesh.from_edit_mesh(mesh) if editing else bmesh.new()
    try:
        if not editing:
            bm.from_mesh(mesh)
        layer = bm.loops.layers.uv.new(BOX_UV_MAP)
        side = max(max(obj.dimensions) / max(max(obj.scale), 1e-9), 1e-6)  # object-space size
        for face in bm.faces:
            axis = max(range(3), key=lambda i: abs(face.normal[i]))
            u_axis, v_axis = [(1, 2), (0, 2), (0, 1)][axis]
            for loop in face.loops:
                co = loop.vert.co
                loop[layer].uv = (co[u_axis] / side + 0.5, co[v_axis] / side + 0.5)
        if editing:
            bmesh.update_edit_mesh(mesh)
        else:
            bm.to_mesh(mesh)
    finally:
        if not editing:
            bm.free()


def push_undo(message: str) -> None:
    """Data made outside an operator (from a timer) needs an undo step of its own, or the artist's next
    step would take it along: one Ctrl+Z would undo both. In the file-less bpy module undo may be off."""
    if bpy.ops.ed.undo_push.poll():
        bpy.ops.ed.undo_push(message=message)


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


CAPTURE_SLOT = "ArtForge capture"  # a render slot of its own: the artist's last F12 render stays in theirs


def capture_camera(scene: bpy.types.Scene, size: int, engine: str = "BLENDER_WORKBENCH") -> tuple[bytes, CaptureLayout]:
    """The active camera's view as PNG bytes, `size` pixels on the long side, padded (edge pixels
    repeated) to a size the server takes; and its layout, to crop the result back. Workbench by
    default: quick, and runs without a GPU (software GL). The scene's render settings and the
    Render Result's active slot are restored afterwards."""
    render = scene.render
    layout = capture_layout(render.resolution_x, render.resolution_y, size)
    fd, path = tempfile.mkstemp(suffix=".png", prefix="artforge-camera-")
    os.close(fd)
    try:
        settings = render.image_settings
        with (
            _temporarily(render, engine=engine, resolution_x=layout.width, resolution_y=layout.height, resolution_percentage=100),
            _temporarily(settings, file_format="PNG", color_mode="RGB", color_depth="8"),
            _own_render_slot(),
        ):
            bpy.ops.render.render(scene=scene.name)
            bpy.data.images["Render Result"].save_render(path, scene=scene)
        if layout.padded:
            _pad_png(path, layout)
        with open(path, "rb") as file:
            return file.read(), layout
    finally:
        os.unlink(path)


@contextmanager
def _own_render_slot() -> Iterator[None]:
    """Render into the CAPTURE_SLOT of the Render Result, then make the artist's slot active again."""
    result = bpy.data.images.get("Render Result")
    if result is None:  # nothing rendered yet: nothing to keep
        yield
        return
    slots = result.render_slots
    previous = slots.active_index
    slot = next((s for s in slots if s.name == CAPTURE_SLOT), None) or slots.new(name=CAPTURE_SLOT)
    slots.active = slot
    try:
        yield
    finally:
        slots.active_index = previous


def _pixels(image: bpy.types.Image) -> np.ndarray:
    """Height x width x 4 floats, bottom row first, as Blender keeps them."""
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, 4)


def _write_png(pixels: np.ndarray, path: str) -> None:
    height, width = pixels.shape[:2]
    image = bpy.data.images.new("ArtForge scratch", width, height, alpha=True)
    try:
        image.pixels.foreach_set(np.ascontiguousarray(pixels, np.float32).ravel())
        image.filepath_raw, image.file_format = path, "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)


def _pad_png(path: str, layout: CaptureLayout) -> None:
    source = bpy.data.images.load(path)
    try:
        pixels = _pixels(source)
    finally:
        bpy.data.images.remove(source)
    bottom = layout.canvas_height - layout.height - layout.y  # rows are bottom first in Blender
    right = layout.canvas_width - layout.width - layout.x
    _write_png(np.pad(pixels, ((bottom, layout.y), (layout.x, right), (0, 0)), mode="edge"), path)


def crop_to_frame(image: bpy.types.Image, layout: CaptureLayout) -> bpy.types.Image:
    """A concept-art result cut back to the camera frame when the capture was padded (in place)."""
    if not layout.padded:
        return image
    width, height = image.size
    x, y, w, h = layout.frame_in(width, height)
    top = height - y - h  # the frame's rows, counted from Blender's bottom row
    pixels = _pixels(image)[top : top + h, x : x + w].copy()
    image.scale(w, h)
    image.pixels.foreach_set(pixels.ravel())
    image.pack()
    return image


# -- projecting a texture from the camera (the plain part: projection.py) -------------------------

PROJECTION_MARK = "artforge_projection"  # on the projection's material and image
PROJECTION_UV_KEY = "artforge_projection_uv"  # on a mesh: the name of the UV map a projection made there
BAKE_MARK = "artforge_bake"
BAKE_SAMPLES = 4  # a colour bake needs no light paths: a few samples a texel only smooth its edges


def can_render_depth() -> bool:
    """The depth is read through a compositor node group of its own (Scene.compositing_node_group,
    Blender 5.0); Blender 4's compositor is the scene's own node tree, which this does not touch."""
    return "compositing_node_group" in bpy.types.Scene.bl_rna.properties


def camera_view(scene: bpy.types.Scene) -> CameraView:
    """The scene camera as projecting needs it, at the scene's resolution and aspect (view_frame
    takes the sensor fit, shift and pixel aspect into account)."""
    camera = scene.camera
    corners = [tuple(corner) for corner in camera.data.view_frame(scene=scene)]
    matrix = camera.matrix_world.normalized().inverted()
    return CameraView.from_frame([tuple(row) for row in matrix], corners, camera.data.type == "ORTHO")


def render_depth(scene: bpy.types.Scene, view_layer: bpy.types.ViewLayer, layout: CaptureLayout) -> np.ndarray:
    """The scene camera's Z pass at layout.width x layout.height: distances along the camera's axis,
    top row first, 1e10 where nothing is hit. Rendered with Workbench (quick, no GPU needed) through
    a compositor node group of its own that sends the Depth pass to the output, saved as a 32-bit
    EXR and read back. The scene's render settings, its compositor, the view layer's passes and the
    Render Result's active slot are as they were afterwards."""
    render = scene.render
    tree = bpy.data.node_groups.new("ArtForge depth", "CompositorNodeTree")
    fd, path = tempfile.mkstemp(suffix=".exr", prefix="artforge-depth-")
    os.close(fd)
    try:
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        settings = render.image_settings
        media = {"media_type": "IMAGE"} if hasattr(settings, "media_type") else {}
        with (
            _temporarily(
                render,
                engine="BLENDER_WORKBENCH",
                resolution_x=layout.width,
                resolution_y=layout.height,
                resolution_percentage=100,
                use_border=False,
                use_compositing=True,
                use_single_layer=True,
            ),
            _temporarily(settings, **media, file_format="OPEN_EXR", color_mode="RGB", color_depth="32"),
            _temporarily(scene, compositing_node_group=tree),
            _temporarily(view_layer, use_pass_z=True),
            _own_render_slot(),
        ):
            layers = tree.nodes.new("CompositorNodeRLayers")  # its outputs are the passes on when it is made
            layers.scene, layers.layer = scene, view_layer.name
            output = tree.nodes.new("NodeGroupOutput")
            tree.links.new(layers.outputs["Depth"], output.inputs[0])
            bpy.ops.render.render(scene=scene.name)
            bpy.data.images["Render Result"].save_render(path, scene=scene)
        image = bpy.data.images.load(path)
        try:
            depth = _pixels(image)[..., 0]
        finally:
            bpy.data.images.remove(image)
        if depth.shape != (layout.height, layout.width):
            raise RuntimeError(f"the depth render is {depth.shape[1]}x{depth.shape[0]}, not {layout.width}x{layout.height}")
        return depth[::-1].copy()
    finally:
        bpy.data.node_groups.remove(tree)
        os.unlink(path)


def save_depth(png: bytes, camera: str) -> tuple[str, bpy.types.Image]:
    """The depth PNG as a file, next to the .blend (a temporary folder while it is unsaved), never
    over an existing file; and as an image datablock (packed, Non-Color, kept with a fake user)
    whose file path is that file. The path and the image."""
    blend = bpy.data.filepath
    folder, stem = (os.path.dirname(blend), os.path.splitext(os.path.basename(blend))[0]) if blend else (tempfile.gettempdir(), "untitled")
    path = depth_file(folder, stem, camera)
    path.write_bytes(png)
    image = set_png(None, f"AF Depth {camera}", png, data=True)
    image.filepath_raw = str(path)
    image.use_fake_user = True
    return str(path), image


def _projection_uv_name(mesh: bpy.types.Mesh) -> str:
    """The UV map an earlier projection made on this mesh, else the first free "ArtForge
    Projection", " 2", ...: a UV map of that name that is not ours (the artist's) is never taken."""
    ours = mesh.get(PROJECTION_UV_KEY)
    if ours and ours in mesh.uv_layers:
        return ours
    name, number = PROJECTION_UV_MAP, 1
    while name in mesh.uv_layers:
        number += 1
        name = f"{PROJECTION_UV_MAP} {number}"
    return name


def project_uvs(obj: bpy.types.Object, view: CameraView) -> tuple[str, int]:
    """Write where the camera sees each vertex into the mesh's projection UV map (made, or reused
    when an earlier projection made it); the mesh's other UV maps, and which one is active and
    which renders, stay as they were. The map's name and how many vertices are in view."""
    mesh = obj.data
    name = _projection_uv_name(mesh)
    matrix = [tuple(row) for row in obj.matrix_world]
    if obj.mode == "EDIT":
        bm = bmesh.from_edit_mesh(mesh)
        bm.verts.index_update()
        layer = bm.loops.layers.uv.get(name) or bm.loops.layers.uv.new(name)
        projected = project_points(view, np.array([v.co for v in bm.verts], np.float64).reshape(-1, 3), matrix)
        for face in bm.faces:
            for loop in face.loops:
                loop[layer].uv = projected[loop.vert.index, :2]
        bmesh.update_edit_mesh(mesh)
    else:
        layers = mesh.uv_layers
        active, renders = layers.active_index, next((uv.name for uv in layers if uv.active_render), None)
        layer = layers.get(name) or layers.new(name=name, do_init=False)
        if layer is None:
            raise ValueError(f"{obj.name} has {len(layers)} UV maps, the most Blender allows: remove one to project onto it")
        if len(layers) > 1:  # the first map a mesh gets becomes active; a later one must not take the artist's place
            layers.active_index = active
            if renders is not None:
                layers[renders].active_render = True
        coords = np.empty(len(mesh.vertices) * 3, np.float64)
        mesh.vertices.foreach_get("co", coords)
        loop_vertices = np.empty(len(mesh.loops), np.int64)
        mesh.loops.foreach_get("vertex_index", loop_vertices)
        projected = project_points(view, coords, matrix)
        layer.data.foreach_set("uv", loop_uvs(projected, loop_vertices))
        mesh.update()
    mesh[PROJECTION_UV_KEY] = name
    return name, int(in_view(projected).sum())


def _image_material(name: str, image: bpy.types.Image, uv_map: str, mark: str) -> bpy.types.Material:
    """Principled BSDF whose Base Color is `image` through the UV map `uv_map` (a UV Map node, so
    the material does not depend on which map is active)."""
    material = bpy.data.materials.new(name)
    material[mark] = True
    tree = material.node_tree
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    uv = tree.nodes.new("ShaderNodeUVMap")
    uv.uv_map, uv.location = uv_map, (-900, 300)
    texture = tree.nodes.new("ShaderNodeTexImage")
    texture.name = texture.label = "albedo"
    texture.image, texture.extension, texture.location = image, "EXTEND", (-600, 300)
    tree.links.new(uv.outputs["UV"], texture.inputs["Vector"])
    tree.links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    tree.nodes.active = texture
    return material


def projection_material(label: str, image: bpy.types.Image, uv_map: str) -> bpy.types.Material:
    image[PROJECTION_MARK] = True
    return _image_material(f"AF Projection {label}", image, uv_map, PROJECTION_MARK)


def place_projection(obj: bpy.types.Object, material: bpy.types.Material) -> str:
    """The projection on every face of `obj`: in the slot of this object's earlier projection (its UV
    map now holds the new view, so the earlier one could not show right), which is removed when
    unused; else as place_texture puts a texture (a new slot, or the object's own link)."""
    for index, slot in enumerate(obj.material_slots):
        previous = slot.material
        if previous is not None and previous.get(PROJECTION_MARK) and previous != material:
            slot.material = material
            name = previous.name
            remove_unused_texture(previous, PROJECTION_MARK)
            if obj.type == "MESH" and obj.data.users == 1:
                _assign_faces(obj, index, frozenset())
            return f"on {obj.name}, in place of the earlier projection '{name}'"
    return place_texture(obj, material, frozenset(), mark=PROJECTION_MARK)


def bake_uv_map(obj: bpy.types.Object) -> str | None:
    """The UV map to bake onto: the active one, else the one that renders, else the first, of the
    maps that are not a projection's; None when there is none."""
    layers = obj.data.uv_layers
    projection = obj.data.get(PROJECTION_UV_KEY)
    own = [uv for uv in layers if uv.name != projection]
    for uv in (layers.active, next((uv for uv in layers if uv.active_render), None), *own):
        if uv is not None and uv.name != projection:
            return uv.name
    return None


def bake_projection(
    obj: bpy.types.Object, projection: bpy.types.Material, uv_map: str, size: int, label: str, scene: bpy.types.Scene
) -> bpy.types.Material:
    """Bake the projection's colour (Cycles, Diffuse colour only: no light) into a new image in the
    object's UV map `uv_map`, and make it a material of its own ("AF Baked ..."), through that map.
    The bake runs on a stand-in copy of the object (same mesh, transform and modifiers) that holds
    only the projection, so the artist's materials, selection and active object are never touched;
    the stand-in is removed afterwards. A mesh of its own gets the material in a new slot, on no
    face (the faces keep showing the projection); a shared mesh keeps its slots, and the material
    is kept with a fake user."""
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    image = bpy.data.images.new(f"AF Baked {label}", size, size, alpha=True)
    image.generated_color = (0.0, 0.0, 0.0, 0.0)  # texels the bake does not reach stay empty
    image[BAKE_MARK] = True
    mesh = obj.data.copy()
    mesh.materials.clear()
    mesh.materials.append(projection)
    mesh.polygons.foreach_set("material_index", np.zeros(len(mesh.polygons), np.int32))
    stand_in = obj.copy()
    stand_in.data = mesh
    for slot in stand_in.material_slots:
        slot.link, slot.material = "OBJECT", projection
    stand_in.hide_render = stand_in.hide_viewport = False
    tree = projection.node_tree
    target = tree.nodes.new("ShaderNodeTexImage")
    target.image = image
    active = tree.nodes.active
    scene.collection.objects.link(stand_in)
    try:
        tree.nodes.active = target
        window = bpy.context.window or next(iter(bpy.context.window_manager.windows), None)
        override = {"window": window} if window is not None else {}
        with (
            _temporarily(scene.render, engine="CYCLES"),
            _temporarily(scene.cycles, samples=BAKE_SAMPLES),
            bpy.context.temp_override(
                **override,
                scene=scene,
                object=stand_in,
                active_object=stand_in,
                selected_objects=[stand_in],
                selected_editable_objects=[stand_in],
            ),
        ):
            bpy.ops.object.bake(
                type="DIFFUSE",
                pass_filter={"COLOR"},
                uv_layer=uv_map,
                target="IMAGE_TEXTURES",
                use_selected_to_active=False,
                use_clear=True,
                margin=max(2, size // 64),
            )
    except BaseException:
        bpy.data.images.remove(image)
        raise
    finally:
        tree.nodes.remove(target)
        tree.nodes.active = active
        bpy.data.objects.remove(stand_in)
        bpy.data.meshes.remove(mesh)
    image.pack()
    material = _image_material(f"AF Baked {label}", image, uv_map, BAKE_MARK)
    if obj.type == "MESH" and obj.data.users == 1:
        obj.data.materials.append(material)
    else:
        material.use_fake_user = True
    return material
