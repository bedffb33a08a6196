"""Checks that run inside real Blender (the bpy module in .venv-blender), driven by
tests/test_blender_extension.py:

    .venv-blender/bin/python tests/blender/run_checks.py CONFIG.json

CONFIG names the extension zip, the server (address, token, and its pid, which one check kills
mid-job for pytest to start it again), the token of a user with a quota of one queued job, an
address where nothing listens, and an output folder.
The extension is installed the way Edit > Preferences > Get Extensions > Install from Disk does
it (`extensions.package_install_files`: manifest checks, the zip's wheels installed for this
platform), with BLENDER_USER_RESOURCES pointing at a scratch folder. Each check records
{"ok", "detail", ...} in OUT/results.json; pytest asserts on them. Jobs run on worker threads;
the bpy module has no event loop, so `drive()` calls the add-on's timer function (`jobs.tick`)
itself until the job has finished and its result has been applied.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bpy
import numpy as np
from harness import CONFIG, OUT, PACKAGE, check, module, prefs
from mathutils import Vector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: helpers shared with the Krita checks
from host_jobs import Submitted


def configure(address: str | None = None, token: str | None = None) -> None:
    prefs().address = CONFIG["address"] if address is None else address
    prefs().token = CONFIG["token"] if token is None else token


def drive(kind: str, timeout: float = 180.0, until: Callable | None = None):
    """Tick the add-on's timer until the job is finished and applied (or `until(snapshot)` holds)."""
    jobs = module("jobs")
    job = jobs.get(kind)
    assert job is not None, f"no {kind} job was started"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs.tick()
        snapshot = job.state.snapshot()
        if until is not None and until(snapshot):
            return job
        if snapshot.phase.finished and job.applied_revision == snapshot.revision:
            return job
        time.sleep(0.02)
    raise TimeoutError(f"{kind} job did not finish in {timeout} s: {job.state.snapshot()}")


def outcome(job) -> dict:
    snapshot = job.state.snapshot()
    return {"phase": snapshot.phase.value, "message": job.done_message, "failed": job.failed, "job_id": snapshot.job_id}


def top_down(image: bpy.types.Image) -> np.ndarray:
    """Blender's pixels (bottom row first, RGBA floats) as the PNG's rows, 0..255."""
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return np.round(pixels.reshape(height, width, 4)[::-1] * 255).astype(np.uint8)


def fresh_scene() -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    configure()


def scene_to_describe() -> None:
    """A fresh scene with something in it: Describe refuses an empty one without asking the model."""
    fresh_scene()
    bpy.context.scene.collection.objects.link(bpy.data.objects.new("Rock", bpy.data.meshes.new("Rock")))


# -- the checks ---------------------------------------------------------------------------------


def install_from_zip() -> dict:
    result = bpy.ops.extensions.package_install_files(filepath=CONFIG["zip"], repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"}, result
    assert PACKAGE in bpy.context.preferences.addons, [a.module for a in bpy.context.preferences.addons]
    import grpc

    import artforge_client

    site = str(Path(CONFIG["user_resources"]).resolve())
    for mod in (artforge_client, grpc):
        assert str(Path(mod.__file__).resolve()).startswith(site), (
            f"{mod.__name__} imported from {mod.__file__}, not the extension's wheels"
        )
    panels = [name for name in ("ARTFORGE_PT_view3d", "ARTFORGE_PT_shader_editor") if hasattr(bpy.types, name)]
    operators = ["texture", "concept_art", "project_texture", "describe_scene", "blockout", "cancel", "test_connection"]
    missing = [op for op in operators if not hasattr(bpy.types, f"ARTFORGE_OT_{op}")]
    assert len(panels) == 2 and not missing, f"panels {panels}, missing operators {missing}"
    assert hasattr(bpy.types.Scene, "artforge")
    configure()
    return {"panels": panels, "operators": operators, "grpc": grpc.__version__}


def test_connection() -> dict:
    assert bpy.ops.artforge.test_connection() == {"FINISHED"}
    job = drive("connection")
    assert not job.failed and "Connected to ArtForge" in job.done_message, outcome(job)
    return outcome(job)


def _texture(name: str, seamless: bool, pbr: bool) -> dict:
    fresh_scene()
    mesh = bpy.data.meshes.new("Tile")
    obj = bpy.data.objects.new("Tile", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    props = bpy.context.scene.artforge
    props.texture_prompt, props.texture_size, props.steps, props.seed = "mossy cobblestones", "256", 2, 1234
    props.seamless, props.pbr = seamless, pbr
    assert bpy.ops.artforge.texture() == {"FINISHED"}
    job = drive(module("jobs").texture_key(obj.session_uid))
    assert not job.failed, outcome(job)
    material = obj.active_material
    assert material is not None and material.name.startswith("AF "), f"material {material}"
    links = sorted(
        f"{link.from_node.name}.{link.from_socket.name} -> {link.to_node.type}.{link.to_socket.name}" for link in material.node_tree.links
    )
    images = {}
    for node in material.node_tree.nodes:
        if node.type == "TEX_IMAGE":
            image = node.image
            np.save(OUT / f"{name}-{node.name}.npy", top_down(image))
            images[node.name] = {
                "size": list(image.size),
                "packed": image.packed_file is not None,
                "sha256": hashlib.sha256(image.packed_file.data).hexdigest(),
                "colorspace": image.colorspace_settings.name,
            }
    height = [i.name for i in bpy.data.images if i.name.endswith(" height")]
    preview = bpy.data.images.get("ArtForge Preview")
    return {
        **outcome(job),
        "links": links,
        "images": images,
        "height_images": height,
        "preview_size": list(preview.size) if preview else None,
    }


def texture_seamless_pbr() -> dict:
    return _texture("pbr", seamless=True, pbr=True)


def texture_plain() -> dict:
    return _texture("plain", seamless=False, pbr=False)


def texture_job(obj, prompt: str = "mossy cobblestones", **settings) -> str:
    """Start a small texture job on `obj` (made active); its key, for drive()."""
    bpy.context.view_layer.objects.active = obj
    props = bpy.context.scene.artforge
    props.texture_prompt, props.texture_size, props.steps, props.seed, props.pbr = prompt, "256", 2, 1234, True
    for key, value in settings.items():
        setattr(props, key, value)
    assert bpy.ops.artforge.texture() == {"FINISHED"}
    return module("jobs").texture_key(obj.session_uid)


def hand_made(name: str = "Hand Made", color=(0.8, 0.05, 0.05)) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    return material


def cube(name: str, uvs: bool = True) -> bpy.types.Object:
    import bmesh

    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=2.0, calc_uvs=uvs)
    bm.to_mesh(mesh)
    bm.free()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def artforge_images() -> list[str]:
    return sorted(i.name for i in bpy.data.images if i.name.startswith("AF "))


def texture_keeps_the_artists_material_through_save_and_reopen() -> dict:
    fresh_scene()
    obj = cube("Crate")
    obj.data.materials.append(hand_made())
    job = drive(texture_job(obj))
    assert not job.failed, outcome(job)
    slots = [slot.material.name for slot in obj.material_slots]
    assert slots[0] == "Hand Made" and slots[1].startswith("AF "), slots
    assert {p.material_index for p in obj.data.polygons} == {1}, "the texture is not on every face"
    made = artforge_images()
    assert len(made) == 4, made  # albedo, normal, roughness, height
    path = str(OUT / "texture-save.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    reopened = bpy.data.objects["Crate"]
    assert [slot.material.name for slot in reopened.material_slots] == slots, [s.material for s in reopened.material_slots]
    assert artforge_images() == made, f"images lost on save: {sorted(set(made) - set(artforge_images()))}"
    assert all(bpy.data.images[name].packed_file is not None for name in made)
    configure()
    return {**outcome(job), "slots": slots, "images": made}


def texture_on_a_linked_duplicate_changes_only_that_object() -> dict:
    fresh_scene()
    first = cube("Pillar")
    first.data.materials.append(hand_made())
    second = bpy.data.objects.new("Pillar twin", first.data)  # Alt+D: the same mesh
    bpy.context.scene.collection.objects.link(second)
    job = drive(texture_job(first))
    assert not job.failed, outcome(job)
    assert second.material_slots[0].material.name == "Hand Made", "the twin changed"
    assert first.material_slots[0].link == "OBJECT" and first.material_slots[0].material.name.startswith("AF ")
    assert first.data.materials[0].name == "Hand Made" and len(first.data.materials) == 1
    return outcome(job)


def texture_again_replaces_its_own_material() -> dict:
    fresh_scene()
    obj = cube("Wall")
    first = drive(texture_job(obj, "red bricks"))
    assert not first.failed, outcome(first)
    before = obj.active_material.name
    second = drive(texture_job(obj, "grey bricks", seed=99))
    assert not second.failed, outcome(second)
    materials = [m.name for m in bpy.data.materials if m.name.startswith("AF ")]
    assert len(obj.material_slots) == 1 and materials == [obj.active_material.name], (materials, before)
    assert before not in bpy.data.materials and len(artforge_images()) == 4, artforge_images()
    assert "in place of the earlier ArtForge texture" in second.done_message, second.done_message
    return {"first": first.done_message, "second": second.done_message}


def texture_follows_its_object_not_its_name() -> dict:
    fresh_scene()
    obj = cube("Tile")
    key = texture_job(obj)
    obj.name = "Floor"
    impostor = cube("Tile")
    job = drive(key)
    assert not job.failed, outcome(job)
    assert obj.active_material is not None and obj.active_material.name.startswith("AF "), "the renamed object got nothing"
    assert not impostor.material_slots, "the new object that took the old name got the texture"
    assert "Floor" in job.done_message, job.done_message
    return outcome(job)


def texture_for_a_deleted_object_is_kept() -> dict:
    fresh_scene()
    obj = cube("Gone")
    key = texture_job(obj)
    bpy.data.objects.remove(obj)
    job = drive(key)
    material = next(m for m in bpy.data.materials if m.name.startswith("AF "))
    assert material.use_fake_user and "kept in the file" in job.done_message, job.done_message
    return outcome(job)


def texture_on_the_faces_selected_in_edit_mode() -> dict:
    import bmesh

    fresh_scene()
    obj = cube("Box")
    obj.data.materials.append(hand_made())
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    bm = bmesh.from_edit_mesh(obj.data)
    for face in bm.faces:
        face.select_set(face.index in (0, 3))
    bmesh.update_edit_mesh(obj.data)
    job = drive(texture_job(obj))  # applied while the mesh is still in Edit Mode
    assert not job.failed, outcome(job)
    bpy.ops.object.mode_set(mode="OBJECT")
    slots = {p.index: p.material_index for p in obj.data.polygons}
    assert slots == {i: 1 if i in (0, 3) else 0 for i in range(6)}, slots
    assert "2 selected faces" in job.done_message, job.done_message
    return {**outcome(job), "slots": slots}


def two_objects_get_textures_at_once() -> dict:
    fresh_scene()
    left, right = cube("Left"), cube("Right")
    keys = [texture_job(left, "red bricks"), texture_job(right, "blue tiles")]
    assert keys[0] != keys[1]
    done = [drive(key) for key in keys]
    assert not any(job.failed for job in done), [outcome(job) for job in done]
    names = [obj.active_material.name for obj in (left, right)]
    assert names[0] != names[1] and all(name.startswith("AF ") for name in names), names
    return {"materials": names}


def render_colours(obj) -> int:
    """Distinct colours of a small Workbench render of `obj`, in its textures."""
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    camera.location, camera.rotation_euler = (4, -4, 3), (1.1, 0, 0.785)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.engine, scene.render.resolution_x, scene.render.resolution_y = "BLENDER_WORKBENCH", 96, 96
    scene.display.shading.color_type, scene.display.shading.light = "TEXTURE", "FLAT"
    path = str(OUT / f"render-{obj.name}.png")
    bpy.ops.render.render()
    bpy.data.images["Render Result"].save_render(path)
    image = bpy.data.images.load(path)
    colours = len(np.unique(top_down(image).reshape(-1, 4), axis=0))
    bpy.data.images.remove(image)
    return colours


def a_mesh_without_uvs_gets_a_cube_projection() -> dict:
    fresh_scene()
    found = {}
    for add_uvs in (True, False):
        fresh_scene()
        obj = cube("Block", uvs=False)
        job = drive(texture_job(obj, add_uvs=add_uvs, seamless=True))
        assert not job.failed, outcome(job)
        found[add_uvs] = {"uv_maps": [uv.name for uv in obj.data.uv_layers], "colours": render_colours(obj), "message": job.done_message}
    assert found[True]["uv_maps"] == ["ArtForge box"] and "cube projection" in found[True]["message"], found
    assert found[False]["uv_maps"] == [] and "no UV map" in found[False]["message"], found
    assert found[True]["colours"] > 4 * found[False]["colours"], found
    return {str(key): value for key, value in found.items()}


def texture_is_one_undo_step() -> dict:
    """The issue's case: a cube added while the job runs survives the one Ctrl+Z that removes the texture."""
    fresh_scene()
    window = bpy.context.window_manager.windows[0]
    area = next(a for a in window.screen.areas if a.type == "VIEW_3D")
    with bpy.context.temp_override(window=window, area=area):
        bpy.ops.ed.undo_push(message="start")  # the bpy module starts without an undo stack
        obj = cube("Statue")
        obj.data.materials.append(hand_made())
        bpy.ops.ed.undo_push(message="statue")
        key = texture_job(obj)
        # The artist works on: Add Cube and its undo step, as the window manager pushes it after an
        # operator (an operator pushing its own step crashes the bpy module).
        bpy.ops.mesh.primitive_cube_add(location=(4, 0, 0))
        added = bpy.context.active_object.name
        bpy.ops.ed.undo_push(message="Add Cube")
        job = drive(key)
        assert not job.failed, outcome(job)
        assert bpy.data.objects["Statue"].active_material.name.startswith("AF ")
        bpy.ops.ed.undo()
    statue = bpy.data.objects["Statue"]
    slots = [slot.material.name for slot in statue.material_slots if slot.material]
    assert slots == ["Hand Made"], f"after one undo the statue has {slots}"
    assert added in bpy.data.objects, f"one undo also removed {added}"
    return {"after_undo": slots, "kept": added}


def concept_art() -> dict:
    fresh_scene()
    bpy.ops.mesh.primitive_monkey_add()
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    camera.location, camera.rotation_euler = (0, -4, 0), (1.5708, 0, 0)
    bpy.context.scene.collection.objects.link(camera)
    scene = bpy.context.scene
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y, scene.render.engine = 1000, 500, "CYCLES"
    props = scene.artforge
    found = {}
    for mode in ("IMG2IMG", "STYLIZE"):
        props.concept_mode, props.concept_prompt, props.concept_size, props.steps, props.seed = mode, "a stone idol, oil painting", 64, 2, 5
        before = {i.name for i in bpy.data.images}
        assert bpy.ops.artforge.concept_art() == {"FINISHED"}
        job = drive("concept")
        assert not job.failed, outcome(job)
        new = [i for i in bpy.data.images if i.name not in before and i.name.startswith("AF Concept")]
        assert len(new) == 1, [i.name for i in new]
        found[mode] = {"image": new[0].name, "size": list(new[0].size), "message": job.done_message}
        assert new[0].size[0] == 64 and new[0].packed_file is not None, found[mode]
    found["render_settings_restored"] = (scene.render.resolution_x, scene.render.resolution_y, scene.render.engine) == (1000, 500, "CYCLES")
    return found


# -- project texture from view -------------------------------------------------------------------

PROJECTION_RESOLUTION = (160, 96)  # multiples of 8: the job is the frame itself, no padding


def projection_scene() -> tuple[bpy.types.Object, bpy.types.Object, bpy.types.Object]:
    """A ground grid seen at an angle (far edge at y = 4; above it the camera sees nothing) and a
    1 m cube standing on it in front of the camera; both with their own UV map "UVMap", the cube
    with the artist's material. The camera looks along +y, 20 degrees down."""
    fresh_scene()
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = PROJECTION_RESOLUTION
    scene.render.resolution_percentage = 100
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=9, y_subdivisions=9, size=8)
    ground = bpy.context.active_object
    ground.name = "Ground"
    bpy.ops.mesh.primitive_cube_add(size=1, location=(0, -1, 0.5))
    box = bpy.context.active_object
    box.name = "Box"
    box.data.materials.append(hand_made())
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    camera.location, camera.rotation_euler = (0, -6, 2.5), (math.radians(70), 0, 0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    props = scene.artforge
    props.projection_prompt, props.steps, props.seed, props.projection_size = "a mossy stone block on a meadow", 2, 77, 512
    props.projection_bake, props.projection_bake_size, props.projection_use_colours = False, "256", False
    bpy.context.view_layer.update()  # world matrices for world_to_camera_view, as the UI keeps them
    return ground, box, camera


def _pixel(scene: bpy.types.Scene, point) -> list[int]:
    """The (column, row from the top) where the scene camera sees a world point."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    x, y, _ = world_to_camera_view(scene, scene.camera, Vector(point))
    width, height = PROJECTION_RESOLUTION
    return [int(x * width), int((1 - y) * height)]


def _uv_errors(obj: bpy.types.Object, uv_map: str) -> dict:
    """How far, in pixels of the camera's frame, each loop's projection UV is from where the
    camera sees its vertex (world_to_camera_view): over the vertices in the frame."""
    from bpy_extras.object_utils import world_to_camera_view

    scene = bpy.context.scene
    width, height = PROJECTION_RESOLUTION
    seen, worst = 0, 0.0
    layer = obj.data.uv_layers[uv_map]
    for loop in obj.data.loops:
        where = world_to_camera_view(scene, scene.camera, obj.matrix_world @ obj.data.vertices[loop.vertex_index].co)
        if where.z <= 0 or not (0 <= where.x <= 1 and 0 <= where.y <= 1):
            continue
        seen += 1
        uv = layer.data[loop.index].uv
        worst = max(worst, abs(uv[0] - where.x) * width, abs(uv[1] - where.y) * height)
    return {"loops_in_view": seen, "worst_pixels": worst}


def _uv_data(obj: bpy.types.Object) -> dict[str, list[float]]:
    found = {}
    for layer in obj.data.uv_layers:
        values = np.empty(len(obj.data.loops) * 2, np.float32)
        layer.data.foreach_get("uv", values)
        found[layer.name] = values.tolist()
    return found


def _material_story(material: bpy.types.Material) -> dict:
    """A material's nodes and links as text, to see that nothing of it changed."""
    tree = material.node_tree
    nodes = sorted(f"{n.type}:{n.name}" for n in tree.nodes)
    links = sorted(f"{k.from_node.name}.{k.from_socket.name} -> {k.to_node.name}.{k.to_socket.name}" for k in tree.links)
    bsdf = next(n for n in tree.nodes if n.type == "BSDF_PRINCIPLED")
    return {"nodes": nodes, "links": links, "base": [round(v, 6) for v in bsdf.inputs["Base Color"].default_value]}


def _render_settings(scene: bpy.types.Scene) -> list:
    render = scene.render
    return [
        render.engine,
        render.resolution_x,
        render.resolution_y,
        render.resolution_percentage,
        render.use_compositing,
        render.image_settings.file_format,
        render.image_settings.color_depth,
        str(scene.compositing_node_group),
        bpy.context.view_layer.use_pass_z,
        scene.cycles.samples,
        sorted(group.name for group in bpy.data.node_groups),
    ]


def project_texture_from_view() -> dict:
    """The operator end to end on the cube, against the server's tiny SD 1.5 and its tiny depth
    ControlNet: what was sent (the depth, the request), the UVs, the material, the saved depth."""
    ground, box, camera = projection_scene()
    scene = bpy.context.scene
    bpy.ops.wm.save_as_mainfile(filepath=str(OUT / "projection.blend"))  # the depth PNG goes next to it
    uv_before, story_before = _uv_data(box), _material_story(box.data.materials["Hand Made"])
    active_uv, render_uv = box.data.uv_layers.active.name, next(uv.name for uv in box.data.uv_layers if uv.active_render)
    settings_before = _render_settings(scene)
    bpy.context.view_layer.objects.active = box
    assert bpy.ops.artforge.project_texture() == {"FINISHED"}
    job = drive("projection")
    assert not job.failed, outcome(job)
    request = job.request
    (OUT / "projection-request.bin").write_bytes(request.SerializeToString())
    sent = request.controls[0].image.data
    (OUT / "projection-depth-sent.png").write_bytes(sent)
    depth_image = bpy.data.images[f"AF Depth {camera.name}"]
    depth_path = Path(depth_image.filepath_raw)
    assert depth_path.is_file(), depth_path
    assert depth_image.packed_file is not None and depth_image.use_fake_user and depth_image.colorspace_settings.name == "Non-Color"
    material = box.active_material
    assert material is not None and material.name.startswith("AF Projection"), [s.material for s in box.material_slots]
    tree = material.node_tree
    (texture,) = [n for n in tree.nodes if n.type == "TEX_IMAGE"]
    (uv_node,) = [n for n in tree.nodes if n.type == "UVMAP"]
    links = sorted(f"{k.from_node.type}.{k.from_socket.name} -> {k.to_node.type}.{k.to_socket.name}" for k in tree.links)
    image = texture.image
    np.save(OUT / "projection-result.npy", top_down(image))
    slots = [slot.material.name for slot in box.material_slots]
    faces = sorted({p.material_index for p in box.data.polygons})
    uv_after = _uv_data(box)
    points = {  # where the camera sees them, and how far in front of it they are
        "cube_front": (0, -1.5, 0.5),
        "ground_near": (-1.5, -1.5, 0),
        "ground_far": (-1.5, 2.5, 0),
        "ground_behind_cube": (0, 3.8, 0),  # above the cube's top edge in the picture
    }
    forward = camera.matrix_world.to_3x3() @ Vector((0, 0, -1))
    return {
        **outcome(job),
        "request": {
            "width": request.width,
            "height": request.height,
            "mode": request.mode,
            "controls": [
                {"type": c.type, "model": c.model, "strength": c.strength, "preprocessor": c.preprocessor} for c in request.controls
            ],
        },
        "depth_path": str(depth_path),
        "depth_file_is_sent": depth_path.read_bytes() == sent,
        "depth_image_is_sent": depth_image.packed_file.data == sent,
        "depth_image_size": list(depth_image.size),
        "pixels": {name: _pixel(scene, point) for name, point in points.items()},
        "distances": {name: (Vector(point) - camera.matrix_world.translation).dot(forward) for name, point in points.items()},
        "uv_map": uv_node.uv_map,
        "uv_maps": list(uv_after),
        "uv_errors": {obj.name: _uv_errors(obj, "ArtForge Projection") for obj in (box,)},
        "links": links,
        "image": {"name": image.name, "size": list(image.size), "packed": image.packed_file is not None},
        "slots": slots,
        "faces_use": faces,
        "projection_slot": box.active_material_index,
        "earlier_uvs_intact": all(uv_after[name] == values for name, values in uv_before.items()),
        "active_uv": [active_uv, box.data.uv_layers.active.name],
        "render_uv": [render_uv, next(uv.name for uv in box.data.uv_layers if uv.active_render)],
        "hand_made_intact": _material_story(box.data.materials["Hand Made"]) == story_before,
        "ground_untouched": [uv.name for uv in ground.data.uv_layers] == ["UVMap"] and not ground.material_slots,
        "render_settings": [settings_before, _render_settings(scene)],
    }


def projected_uvs_match_the_camera() -> dict:
    """The projection UVs of a mesh seen whole and of one seen in part (the ground runs out of
    the frame): each vertex in view is where world_to_camera_view puts it."""
    ground, box, camera = projection_scene()
    found = {}
    scene_io, projection = module("scene_io"), module("projection")
    view = scene_io.camera_view(bpy.context.scene)
    for obj in (ground, box):
        uv_map, seen = scene_io.project_uvs(obj, view)
        assert uv_map == projection.PROJECTION_UV_MAP, uv_map
        found[obj.name] = {**_uv_errors(obj, uv_map), "in_view": seen, "vertices": len(obj.data.vertices)}
    camera.location.x += 0.5  # a second projection from elsewhere, in Edit Mode, reuses the map with the new view
    bpy.context.view_layer.update()
    bpy.context.view_layer.objects.active = box
    bpy.ops.object.mode_set(mode="EDIT")
    uv_map, _ = scene_io.project_uvs(box, scene_io.camera_view(bpy.context.scene))
    bpy.ops.object.mode_set(mode="OBJECT")
    found["again"] = {
        **_uv_errors(box, uv_map),
        "uv_maps": [uv.name for uv in box.data.uv_layers],
        "active": box.data.uv_layers.active.name,
    }
    return found


def _bilinear(picture: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A top-down picture's colours at pixel coordinates (x right, y down; pixel centres at .5)."""
    height, width = picture.shape[:2]
    x, y = np.clip(x - 0.5, 0, width - 1), np.clip(y - 0.5, 0, height - 1)
    x0, y0 = np.minimum(x.astype(int), width - 2), np.minimum(y.astype(int), height - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    p = picture.astype(np.float64)
    top = p[y0, x0] * (1 - fx) + p[y0, x0 + 1] * fx
    bottom = p[y0 + 1, x0] * (1 - fx) + p[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _baked_against_projection(obj: bpy.types.Object, baked: np.ndarray, projection: np.ndarray, bake_map: str) -> dict:
    """Each texel well inside a triangle of the bake's UV map, with the colour the projection
    shows at the same point of the surface: there, the two UV maps are the same affine map of the
    triangle, so the texel's place in the projection image is its barycentric mix of the triangle's
    projection UVs. By face (rounded normal): [[baked RGB], [projection RGB], [baked alpha]]."""
    mesh = obj.data
    mesh.calc_loop_triangles()
    bake, project = mesh.uv_layers[bake_map], mesh.uv_layers["ArtForge Projection"]
    size, (height, width) = baked.shape[0], projection.shape[:2]
    found: dict[str, list] = {}
    for triangle in mesh.loop_triangles:
        own = np.array([bake.data[i].uv[:] for i in triangle.loops], np.float64)
        seen = np.array([project.data[i].uv[:] for i in triangle.loops], np.float64)
        columns, rows = np.meshgrid(np.arange(size), np.arange(size))
        uv = np.stack([(columns.ravel() + 0.5) / size, 1 - (rows.ravel() + 0.5) / size], axis=1)
        basis = np.array([own[1] - own[0], own[2] - own[0]]).T
        l1, l2 = np.linalg.solve(basis, (uv - own[0]).T)
        weights = np.stack([1 - l1 - l2, l1, l2], axis=1)
        inside = (weights > 0.1).all(axis=1)  # away from the edges, where the bake's margin and seams are
        where = weights[inside] @ seen
        normal = obj.data.polygons[triangle.polygon_index].normal
        key = ",".join(str(round(c)) for c in normal)
        entry = found.setdefault(key, [[], [], []])
        entry[0] += baked[rows.ravel()[inside], columns.ravel()[inside], :3].tolist()
        entry[1] += _bilinear(projection[..., :3], where[:, 0] * width, (1 - where[:, 1]) * height).tolist()
        entry[2] += baked[rows.ravel()[inside], columns.ravel()[inside], 3].tolist()
    return found


def project_and_bake() -> dict:
    """With Bake on: the projection baked into a new image in the cube's own UV map, as a material
    of its own; the texels of every face are filled, each with the colour the projection gives
    that point of the surface."""
    _, box, _ = projection_scene()
    props = bpy.context.scene.artforge
    props.projection_bake, props.projection_bake_size = True, "256"
    settings_before = _render_settings(bpy.context.scene)
    bpy.context.view_layer.objects.active = box
    assert bpy.ops.artforge.project_texture() == {"FINISHED"}
    job = drive("projection")
    assert not job.failed and "Baked onto the UV map 'UVMap'" in job.done_message, outcome(job)
    slots = [slot.material.name if slot.material else None for slot in box.material_slots]
    baked = box.material_slots[-1].material
    assert baked.name.startswith("AF Baked"), slots
    (texture,) = [n for n in baked.node_tree.nodes if n.type == "TEX_IMAGE"]
    (uv_node,) = [n for n in baked.node_tree.nodes if n.type == "UVMAP"]
    image = texture.image
    pixels = top_down(image)
    projection = top_down(box.active_material.node_tree.nodes["albedo"].image)
    np.save(OUT / "bake-baked.npy", pixels)
    np.save(OUT / "bake-projection.npy", projection)
    compared = _baked_against_projection(box, pixels, projection, "UVMap")
    for key, (own, seen, _) in compared.items():
        np.save(OUT / f"bake-face-{key}.npy", np.array([own, seen]))
    return {
        **outcome(job),
        "slots": slots,
        "faces_use": sorted({p.material_index for p in box.data.polygons}),
        "uv_node": uv_node.uv_map,
        "image": {"name": image.name, "size": list(image.size), "packed": image.packed_file is not None},
        "filled": float((pixels[..., 3] > 0).mean()),
        "faces": {key: {"texels": len(alpha), "alpha": [min(alpha), max(alpha)]} for key, (_, _, alpha) in compared.items()},
        "stand_in_gone": not [o.name for o in bpy.data.objects if o.name.startswith("Box.")],
        "objects": sorted(o.name for o in bpy.data.objects),
        "meshes": sorted(m.name for m in bpy.data.meshes),
        "render_engine": [settings_before, _render_settings(bpy.context.scene)],
    }


def project_again_replaces_its_projection() -> dict:
    """A second projection onto the same mesh (this time from the view's colours, img2img) takes
    the first one's slot and UV map (the map holds the new view); the artist's material and UV map
    stay; an artist's own map called "ArtForge Projection" is never taken."""
    ground, _, _ = projection_scene()
    ground.data.uv_layers.new(name="ArtForge Projection")  # the artist's, by chance of the same name
    bpy.context.view_layer.objects.active = ground
    found = {}
    for run in ("first", "second"):
        assert bpy.ops.artforge.project_texture() == {"FINISHED"}
        job = drive("projection")
        assert not job.failed, outcome(job)
        found[run] = {
            "message": job.done_message,
            "slots": [slot.material.name for slot in ground.material_slots],
            "uv_maps": [uv.name for uv in ground.data.uv_layers],
            "materials": sorted(m.name for m in bpy.data.materials if m.name.startswith("AF Projection")),
            "request": {"mode": job.request.mode, "strength": job.request.strength, "init": len(job.request.init_image.data)},
        }
        bpy.context.scene.artforge.seed = 78
        bpy.context.scene.artforge.projection_use_colours = True  # the second from the view's colours
    return found


def projection_buttons_say_why() -> dict:
    fresh_scene()
    found = {"nothing selected, no camera": refusal(bpy.ops.artforge.project_texture)}
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    bpy.context.scene.collection.objects.link(camera)
    bpy.context.scene.camera = camera
    found["nothing selected"] = refusal(bpy.ops.artforge.project_texture)
    lamp = bpy.data.objects.new("Lamp", bpy.data.lights.new("Lamp", "POINT"))
    bpy.context.scene.collection.objects.link(lamp)
    bpy.context.view_layer.objects.active = lamp
    found["a light"] = refusal(bpy.ops.artforge.project_texture)
    bpy.context.view_layer.objects.active = cube("Crate")
    camera.data.type = "PANO"
    found["a panoramic camera"] = refusal(bpy.ops.artforge.project_texture)
    camera.data.type = "PERSP"
    camera.location = (0, 10, 0)  # looking down, away from the crate, at nothing
    bpy.context.scene.artforge.projection_prompt = "bricks"
    try:
        bpy.ops.artforge.project_texture()
    except RuntimeError as error:
        found["the camera sees nothing"] = str(error)
    assert module("jobs").get("projection") is None, "a job started"
    generic = [name for name, text in found.items() if "context is incorrect" in text]
    assert not generic, f"no reason given: {generic} {found}"
    return found


def projection_queued_then_cancelled() -> dict:
    """Behind a job that holds the server's one device, the projection shows its place in the
    queue; Cancel stops it, and nothing is put on the cube."""
    from artforge_client import Client

    projection_scene()
    box = bpy.data.objects["Box"]
    bpy.context.view_layer.objects.active = box
    with Client(CONFIG["address"], token=CONFIG["token"]) as client:
        running = busy_server(client)
        try:
            assert bpy.ops.artforge.project_texture() == {"FINISHED"}
            snapshot = drive("projection", timeout=60, until=lambda s: s.phase.value == "queued").state.snapshot()
            assert bpy.ops.artforge.cancel(kind="projection") == {"FINISHED"}
            job = drive("projection", timeout=60)
        finally:
            running.stop()
    assert snapshot.message.startswith("Next in the queue") or snapshot.message.startswith("Waiting in the queue"), snapshot
    assert job.state.snapshot().phase.value == "cancelled", outcome(job)
    assert [slot.material.name for slot in box.material_slots] == ["Hand Made"]
    assert not [m.name for m in bpy.data.materials if m.name.startswith("AF ")]
    return {**outcome(job), "queued": snapshot.message}


def describe_scene() -> dict:
    fresh_scene()
    for name, location in (("RedBarn", (0, 0, 1)), ("OakTree", (4, 2, 2)), ("WaterTrough", (-3, 1, 0.4))):
        obj = bpy.data.objects.new(name, bpy.data.meshes.new(name))
        obj.location = location
        bpy.context.scene.collection.objects.link(obj)
    light = bpy.data.objects.new("KeyLight", bpy.data.lights.new("KeyLight", "SUN"))
    bpy.context.scene.collection.objects.link(light)
    bpy.context.scene.artforge.describe_max_tokens = 40
    assert bpy.ops.artforge.describe_scene() == {"FINISHED"}
    job = drive("describe")
    assert not job.failed, outcome(job)
    sent = bpy.data.texts["ArtForge Scene Context"].as_string()
    written = bpy.data.texts["ArtForge Scene Description"].as_string()
    missing = [n for n in ("RedBarn", "OakTree", "WaterTrough", "KeyLight") if n not in sent]
    assert not missing, f"the context sent lacks {missing}: {sent}"
    assert written.strip(), "the description text is empty"
    return {**outcome(job), "sent": sent, "written": written}


def describe_goes_on_after_the_server_restarts() -> dict:
    """SIGKILL to the server while the description streams in; pytest starts it again on the same
    port and folder (tests/restarting_server.py). The panel says it is reconnecting, the job runs
    again from the start, and the text holds the new attempt's description only."""
    scene_to_describe()
    bpy.context.scene.artforge.describe_max_tokens = 300
    assert bpy.ops.artforge.describe_scene() == {"FINISHED"}
    description = bpy.data.texts["ArtForge Scene Description"]
    drive("describe", until=lambda _: bool(description.as_string().strip()))
    os.kill(int(CONFIG["server_pid"]), signal.SIGKILL)
    messages: list[str] = []  # what the panel's progress bar said, in order

    def shown(snapshot) -> bool:
        if not messages or messages[-1] != snapshot.message:
            messages.append(snapshot.message)
        return False

    job = drive("describe", timeout=240, until=shown)
    assert not job.failed, {**outcome(job), "messages": messages}
    from artforge_client import Client

    with Client(CONFIG["address"], token=CONFIG["token"]) as client:
        events = list(client.watch(job.state.snapshot().job_id))  # the job's whole story, from the restarted server
    last_start = max(i for i, event in enumerate(events) if event.HasField("started"))
    attempts = [event.started.attempt for event in events if event.HasField("started")]
    written, final = description.as_string(), "".join(event.text.text for event in events[last_start:] if event.HasField("text"))
    assert written == final or written.startswith(final + "\n\n[Unfinished:"), f"the text holds {written!r}, the job wrote {final!r}"
    return {**outcome(job), "messages": messages, "attempts": attempts, "written": written}


def refusal(operator) -> str:
    """The sentence a greyed-out button gives: Blender puts the poll message in the error it raises."""
    assert not operator.poll(), "the operator can run"
    try:
        operator()
    except RuntimeError as error:
        return str(error)
    raise AssertionError("the operator ran")


def disabled_buttons_say_why() -> dict:
    fresh_scene()
    found = {"texture, nothing selected": refusal(bpy.ops.artforge.texture)}
    for kind, data in (("light", bpy.data.lights.new("Lamp", "POINT")), ("camera", bpy.data.cameras.new("Cam")), ("empty", None)):
        obj = bpy.data.objects.new(kind.title(), data)
        bpy.context.scene.collection.objects.link(obj)
        bpy.context.view_layer.objects.active = obj
        found[f"texture on a {kind}"] = refusal(bpy.ops.artforge.texture)
    found["concept art without a camera"] = refusal(bpy.ops.artforge.concept_art)
    generic = [name for name, text in found.items() if "context is incorrect" in text]
    assert not generic, f"no reason given: {generic} {found}"
    assert "Select the object" in found["texture, nothing selected"] and "light" in found["texture on a light"], found
    assert "no camera" in found["concept art without a camera"], found
    return found


def wide_scene(width: int, height: int) -> bpy.types.Scene:
    fresh_scene()
    bpy.ops.mesh.primitive_monkey_add()
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    camera.location, camera.rotation_euler = (0, -4, 0), (1.5708, 0, 0)
    scene = bpy.context.scene
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = width, height
    return scene


def a_very_wide_frame_is_padded_then_cropped() -> dict:
    scene = wide_scene(4000, 200)
    props = scene.artforge
    props.concept_mode, props.concept_size, props.style_index, props.concept_strength = "STYLIZE", 512, 3, 1.0
    assert bpy.ops.artforge.concept_art() == {"FINISHED"}
    job = drive("concept")
    assert not job.failed, outcome(job)
    image = next(i for i in bpy.data.images if i.name.startswith("AF Concept"))
    assert tuple(image.size) == (512, 26), f"the result is {tuple(image.size)}, not the 512x26 frame"
    assert image.use_fake_user and "padded to 512x64" in job.done_message, job.done_message
    return {**outcome(job), "size": list(image.size)}


def the_capture_leaves_the_render_result_alone() -> dict:
    scene = wide_scene(80, 60)
    scene.render.engine = "BLENDER_WORKBENCH"
    bpy.ops.render.render()  # the artist's F12
    mine = str(OUT / "artists-render.png")
    bpy.data.images["Render Result"].save_render(mine)
    slots = bpy.data.images["Render Result"].render_slots
    active = slots.active_index
    scene.artforge.concept_mode, scene.artforge.concept_size = "STYLIZE", 64
    assert bpy.ops.artforge.concept_art() == {"FINISHED"}
    job = drive("concept")
    assert not job.failed, outcome(job)
    after = str(OUT / "artists-render-after.png")
    bpy.data.images["Render Result"].save_render(after)
    assert slots.active_index == active, f"the active render slot moved from {active} to {slots.active_index}"
    before_pixels, after_pixels = (top_down(bpy.data.images.load(path)) for path in (mine, after))
    assert before_pixels.shape == after_pixels.shape == (60, 80, 4) and np.array_equal(before_pixels, after_pixels), "F12 render changed"
    return {"slots": [slot.name for slot in slots]}


def a_cut_description_says_so() -> dict:
    scene_to_describe()
    bpy.context.scene.artforge.describe_max_tokens = 16  # the Length limit cuts it
    assert bpy.ops.artforge.describe_scene() == {"FINISHED"}
    job = drive("describe")
    written = bpy.data.texts["ArtForge Scene Description"].as_string()
    assert written.rstrip().endswith("[Unfinished: it reached the Length limit]"), written
    assert "unfinished" in job.done_message, job.done_message
    return {**outcome(job), "written": written}


def describe_an_empty_scene_without_the_model() -> dict:
    fresh_scene()
    assert bpy.ops.artforge.describe_scene() == {"CANCELLED"}
    assert module("jobs").get("describe") is None or not module("jobs").get("describe").state.snapshot().phase.active
    return {}


def describe_reports_the_colours_materials_show() -> dict:
    from artforge_client.colors import colour_name, linear_to_srgb

    fresh_scene()
    made = {}
    painted = (("Base", "base", (0.8, 0.02, 0.02)), ("Viewport", "viewport", (0.02, 0.6, 0.02)), ("Node", "rgb", (0.02, 0.05, 0.8)))
    for name, how, color in painted:
        obj = cube(name)
        material = bpy.data.materials.new(f"{name} paint")
        bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
        if how == "base":
            bsdf.inputs["Base Color"].default_value = (*color, 1.0)
        elif how == "viewport":
            material.diffuse_color = (*color, 1.0)
        else:
            rgb = material.node_tree.nodes.new("ShaderNodeRGB")
            rgb.outputs[0].default_value = (*color, 1.0)
            material.node_tree.links.new(rgb.outputs[0], bsdf.inputs["Base Color"])
        obj.data.materials.append(material)
        made[name] = colour_name(tuple(linear_to_srgb(c) for c in color))
    scene_io = module("scene_io")
    context_text = module("scene_context").scene_context(scene_io.gather_scene(bpy.context.scene, bpy.context.view_layer))
    wrong = {name: word for name, word in made.items() if word not in context_text.split(f"{name} paint")[1][:40]}
    assert not wrong, f"{wrong} not in {context_text}"
    return {"colours": made}


VALID_PLAN = json.dumps(
    {
        "objects": [
            {"type": "plane", "name": "Ground", "location": [0, 0, 0], "scale": [20, 20, 1], "color": "#557733"},
            {"type": "cube", "name": "House", "location": [0, 0, 1.5], "scale": [4, 3, 3], "color": "#AA4433"},
            {"type": "cone", "name": "Roof", "location": [0, 0, 3.5], "rotation": [0, 0, 45], "scale": [5, 5, 1]},
            {"type": "torus", "name": "Wreath", "location": [0, -1.6, 2], "rotation": [90, 0, 0], "scale": 0.6},
        ],
        "lights": [{"type": "sun", "energy": 3}],
        "camera": {"location": [10, -10, 6], "look_at": [0, 0, 1], "lens": 35},
    }
)
INVALID_PLANS = {
    "unknown type": ('{"objects": [{"type": "dragon", "location": [0, 0, 0]}]}', "objects[0].type"),
    "too many objects": (json.dumps({"objects": [{"type": "cube"}] * 65}), "over the limit of 64"),
    "out of range": ('{"objects": [{"type": "cube", "location": [0, 5000, 0]}]}', "objects[0].location[1]"),
    "not JSON": ("Sure! Here is a nice scene with a house and a tree.", "no JSON object"),
}


def blockout_plans() -> dict:
    fresh_scene()
    operators, plan = module("operators"), module("blockout_plan")
    scene = bpy.context.scene
    reasons = {}
    for label, (reply, expected) in INVALID_PLANS.items():
        before = len(bpy.data.objects)
        message, failed = operators.apply_plan(plan.parse_plan(reply), scene)
        assert failed and expected in message, f"{label}: {message}"
        assert len(bpy.data.objects) == before, f"{label}: built {len(bpy.data.objects) - before} objects"
        reasons[label] = message
    message, failed = operators.apply_plan(plan.parse_plan(f"Here you go:\n```json\n{VALID_PLAN}\n```"), scene)
    assert not failed, message
    built = {o.name: o for o in bpy.data.collections["ArtForge Block-out"].objects}
    assert sorted(built) == ["Camera", "Ground", "House", "Light", "Roof", "Wreath"], sorted(built)
    house = built["House"]
    assert house.type == "MESH" and tuple(round(v, 3) for v in house.dimensions) == (4, 3, 3), tuple(house.dimensions)
    assert tuple(house.location) == (0, 0, 1.5)
    assert round(max(built["Wreath"].dimensions), 3) == 0.6, tuple(built["Wreath"].dimensions)
    colour = house.active_material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value
    srgb_aa = 0xAA / 255
    assert abs(colour[0] - ((srgb_aa + 0.055) / 1.055) ** 2.4) < 1e-4, tuple(colour)  # sRGB hex -> linear
    assert scene.camera == built["Camera"] and built["Camera"].data.lens == 35  # the scene had no camera
    assert built["Light"].data.type == "SUN"
    return {"invalid": reasons, "valid": message}


def blockout_operator() -> dict:
    """The real operator end to end: the small model's plan is built, or nothing is and it says why."""
    fresh_scene()
    bpy.context.scene.artforge.blockout_description = "a red cube on a green plane, lit by the sun"
    before = len(bpy.data.objects)
    assert bpy.ops.artforge.blockout() == {"FINISHED"}
    job = drive("blockout", timeout=240)
    attempts = len(job.stream.replies)
    built = len(bpy.data.objects) - before
    assert job.state.snapshot().phase.value == "succeeded", outcome(job)  # the server answered; the plan may still be invalid
    if job.failed:
        assert built == 0, f"a failed plan built {built} objects"
        assert job.done_message.startswith("No block-out built"), job.done_message
    else:
        assert built > 0 and "ArtForge Block-out" in bpy.data.collections, job.done_message
    return {**outcome(job), "attempts": attempts, "built": built, "replies": [r[:400] for r in job.stream.replies]}


def _blockouts() -> dict[str, list[str]]:
    """The scene's block-out collections and the names of their objects."""
    return {c.name: sorted(o.name for o in c.objects) for c in module("scene_io").blockouts(bpy.context.scene)}


def _artists_camera() -> bpy.types.Object:
    cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    bpy.context.scene.collection.objects.link(cam)
    bpy.context.scene.camera = cam
    return cam


def blockout_replace_and_add() -> dict:
    """Second runs with a fixed plan: Replace removes exactly what the previous block-out made, Add
    builds beside it; the artist's camera and objects are kept; the message counts what was built."""
    fresh_scene()
    operators, plan = module("operators"), module("blockout_plan")
    scene = bpy.context.scene
    cam = _artists_camera()
    house = bpy.data.objects.new("House", bpy.data.meshes.new("House"))  # the artist's, with a name the plan uses
    scene.collection.objects.link(house)
    messages = {}

    def build(key: str, reply: str = VALID_PLAN, **options) -> dict[str, list[str]]:
        message, failed = operators.apply_plan(plan.parse_plan(reply), scene, **options)
        assert not failed, message
        messages[key] = message
        return _blockouts()

    first = build("first")
    assert first == {"ArtForge Block-out": ["Ground", "House.001", "Light", "Roof", "Wreath"]}, first
    assert scene.camera == cam and not [o for o in bpy.data.objects if o.type == "CAMERA" and o != cam]
    tree = bpy.data.objects.new("Tree", bpy.data.meshes.new("Tree"))  # the artist's, put into the block-out
    bpy.data.collections["ArtForge Block-out"].objects.link(tree)
    data = (sorted(bpy.data.meshes.keys()), sorted(bpy.data.materials.keys()), sorted(bpy.data.lights.keys()))
    assert build("replace") == first, _blockouts()
    assert (sorted(bpy.data.meshes.keys()), sorted(bpy.data.materials.keys()), sorted(bpy.data.lights.keys())) == data
    assert list(tree.users_collection) == [scene.collection] and house.data.name == "House" and scene.camera == cam
    added = build("add", replace=False)
    assert added == first | {"ArtForge Block-out.001": ["Ground.001", "House.002", "Light.001", "Roof.001", "Wreath.001"]}, added
    framed = build("use camera", use_camera=True)  # replaces the latest, the .001
    assert framed["ArtForge Block-out"] == first["ArtForge Block-out"] and len(framed) == 2, framed
    assert scene.camera.name in framed["ArtForge Block-out.001"] and cam.name in bpy.data.objects, scene.camera
    again = build("replace its camera")  # the scene camera was the replaced block-out's: the new one's takes over
    assert scene.camera.name in again["ArtForge Block-out.001"] and scene.camera != cam, again
    assert len([o for o in bpy.data.objects if o.type == "CAMERA"]) == 2, [o.name for o in bpy.data.objects]
    one = json.dumps({"objects": [{"type": "cube", "name": "Crate"}], "lights": [{"type": "point", "energy": 500}]})
    build("one", one, replace=False)
    return {"messages": messages, "collections": _blockouts()}


def blockout_second_run() -> dict:
    """The real operator twice (Replace, the default): one block-out with the plan's own names, the
    artist's camera still the scene camera, and a message that counts what is there."""
    fresh_scene()
    scene = bpy.context.scene
    cam = _artists_camera()
    scene.artforge.blockout_description = "a wooden table with two chairs"
    runs = []
    for _ in range(2):
        assert bpy.ops.artforge.blockout() == {"FINISHED"}
        job = drive("blockout", timeout=240)
        assert not job.failed, outcome(job)
        plan = job.stream.result.plan
        names = [o.name for o in plan.objects + plan.lights]
        runs.append({"message": job.done_message, "collections": _blockouts(), "plan": names, "objects": len(plan.objects)})
    found = runs[-1]["collections"]
    assert list(found) == ["ArtForge Block-out"], found
    assert found["ArtForge Block-out"] == sorted(runs[-1]["plan"]), f"names Blender numbered: {found}"
    assert sorted(o.name for o in bpy.data.objects) == sorted(["Cam", *runs[-1]["plan"]]), "the first block-out left objects"
    assert scene.camera == cam, scene.camera
    return {"runs": runs}


def cancel_stops_the_job() -> dict:
    scene_to_describe()
    bpy.context.scene.artforge.describe_max_tokens = 1500
    assert bpy.ops.artforge.describe_scene() == {"FINISHED"}
    drive("describe", until=lambda s: s.phase.value == "running")
    job_id = module("jobs").get("describe").state.snapshot().job_id
    assert bpy.ops.artforge.cancel(kind="describe") == {"FINISHED"}
    job = drive("describe", timeout=30)
    assert job.state.snapshot().phase.value == "cancelled", outcome(job)
    from artforge_client import Client
    from artforge_client.v1 import jobs_pb2

    with Client(CONFIG["address"], token=CONFIG["token"]) as client:
        deadline = time.monotonic() + 20
        while (state := client.get_job(job_id).state) in (
            jobs_pb2.JOB_STATE_QUEUED,
            jobs_pb2.JOB_STATE_RUNNING,
        ) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert state == jobs_pb2.JOB_STATE_CANCELLED, jobs_pb2.JobState.Name(state)
    return {**outcome(job), "server_state": jobs_pb2.JobState.Name(state)}


# A reply that cannot end before max_tokens (end-of-sequence stays forbidden): the one worker of
# the test server stays busy until the job is cancelled.
ENDLESS = json.dumps({"type": "object", "properties": {"story": {"type": "string", "minLength": 100_000}}, "required": ["story"]})


def busy_server(client) -> Submitted:
    """A job that runs until it is stopped, once it has started on the server's one device."""
    running = Submitted(client.generate_text("Write a long story about a lighthouse.", json_schema=ENDLESS, max_tokens=2048))
    running.wait("started")
    return running


def a_queued_job_shows_its_place_and_wait() -> dict:
    """The panel's job behind two others, one running and one waiting (the test server has one
    device): its progress bar says it has 1 job ahead, and about how long until it starts (the
    server has measured a job like those: the short description first)."""
    from artforge_client import Client

    scene_to_describe()
    bpy.context.scene.artforge.describe_max_tokens = 16
    assert bpy.ops.artforge.describe_scene() == {"FINISHED"}
    job = drive("describe")
    assert not job.failed, outcome(job)
    with Client(CONFIG["address"], token=CONFIG["token"]) as client:
        running = busy_server(client)
        waiting = Submitted(client.generate_text("Name a colour.", max_tokens=8))
        try:
            waiting.wait("queued")
            assert bpy.ops.artforge.describe_scene() == {"FINISHED"}
            snapshot = drive("describe", timeout=60, until=lambda s: s.phase.value == "queued").state.snapshot()
            assert bpy.ops.artforge.cancel(kind="describe") == {"FINISHED"}
        finally:
            waiting.stop()
            running.stop()
    job = drive("describe", timeout=30)
    assert snapshot.queue_position == 1 and snapshot.message.startswith("Waiting in the queue: 1 job ahead"), snapshot
    assert job.state.snapshot().phase.value == "cancelled", outcome(job)
    return {"message": snapshot.message, "position": snapshot.queue_position, "estimated_wait_seconds": snapshot.estimated_wait_seconds}


def a_quota_refusal_shows_its_sentence() -> dict:
    """A user whose quota is one queued job has one waiting: the panel's next job for them is
    refused, and the panel shows the server's sentence, as the server wrote it."""
    from artforge_client import Client

    scene_to_describe()
    bpy.context.scene.artforge.describe_max_tokens = 16
    with Client(CONFIG["address"], token=CONFIG["token"]) as client, Client(CONFIG["address"], token=CONFIG["quota_token"]) as limited:
        running = busy_server(client)
        waiting = Submitted(limited.generate_text("Name a colour.", max_tokens=8))
        try:
            waiting.wait("queued")
            configure(token=CONFIG["quota_token"])
            assert bpy.ops.artforge.describe_scene() == {"FINISHED"}
            job = drive("describe", timeout=60, until=lambda s: s.phase.value == "queued")  # finished, unless the quota let it in
            assert job.failed and job.state.snapshot().phase.value == "failed", outcome(job)
            server_said = Submitted(limited.generate_text("Name a shape.", max_tokens=8)).refused(10)
        finally:
            module("jobs").cancel("describe")
            configure()
            waiting.stop()
            running.stop()
    return {**outcome(job), "server_code": server_said.code.name, "server_said": server_said.message}


def unreachable_server() -> dict:
    scene_to_describe()
    configure(address=CONFIG["dead_address"])
    found = {}
    for operator, kind in ((bpy.ops.artforge.describe_scene, "describe"), (bpy.ops.artforge.test_connection, "connection")):
        assert operator() == {"FINISHED"}
        job = drive(kind, timeout=60)
        assert job.failed and "Cannot reach the ArtForge server" in job.done_message, outcome(job)
        assert "Traceback" not in job.done_message
        found[kind] = job.done_message
    return found


def wrong_token() -> dict:
    scene_to_describe()
    configure(token="not-the-token")
    found = {}
    for operator, kind in ((bpy.ops.artforge.describe_scene, "describe"), (bpy.ops.artforge.test_connection, "connection")):
        assert operator() == {"FINISHED"}
        job = drive(kind, timeout=60)
        assert job.failed and "did not accept the token" in job.done_message, outcome(job)
        found[kind] = job.done_message
    return found


def online_access_respected() -> dict:
    scene_to_describe()
    assert not bpy.app.online_access, "the bpy module runs with online access off"
    configure(address="artforge.example.com:50051")
    try:
        bpy.ops.artforge.describe_scene()
    except RuntimeError as error:  # an operator's ERROR report raises in background mode
        message = str(error)
    else:
        raise AssertionError("a job started for a remote server with online access off")
    assert "online access is off" in message, message
    assert module("jobs").get("describe") is None
    return {"message": message}


def file_load_cancels_jobs() -> dict:
    scene_to_describe()
    bpy.context.scene.artforge.describe_max_tokens = 1500
    assert bpy.ops.artforge.describe_scene() == {"FINISHED"}
    state = module("jobs").get("describe").state
    bpy.ops.wm.read_homefile(use_empty=True)  # load_post handler
    assert module("jobs").get("describe") is None, "the job survived the file load"
    deadline = time.monotonic() + 20
    while not state.snapshot().phase.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.snapshot().phase.value == "cancelled", state.snapshot()
    return {"phase": state.snapshot().phase.value}


def disable_cancels_jobs() -> dict:
    scene_to_describe()
    bpy.context.scene.artforge.describe_max_tokens = 1500
    assert bpy.ops.artforge.describe_scene() == {"FINISHED"}
    jobs = module("jobs")
    state = jobs.get("describe").state
    bpy.ops.preferences.addon_disable(module=PACKAGE)  # unregister() cancels and joins the workers
    assert state.snapshot().phase.value == "cancelled", state.snapshot()
    assert not hasattr(bpy.types, "ARTFORGE_PT_view3d") and not bpy.app.timers.is_registered(jobs.tick)
    return {"phase": state.snapshot().phase.value}


for step in (
    install_from_zip,
    test_connection,
    texture_seamless_pbr,
    texture_plain,
    texture_keeps_the_artists_material_through_save_and_reopen,
    texture_on_a_linked_duplicate_changes_only_that_object,
    texture_again_replaces_its_own_material,
    texture_follows_its_object_not_its_name,
    texture_for_a_deleted_object_is_kept,
    a_mesh_without_uvs_gets_a_cube_projection,
    texture_is_one_undo_step,
    two_objects_get_textures_at_once,
    texture_on_the_faces_selected_in_edit_mode,
    concept_art,
    project_texture_from_view,
    projected_uvs_match_the_camera,
    project_and_bake,
    project_again_replaces_its_projection,
    projection_buttons_say_why,
    projection_queued_then_cancelled,
    disabled_buttons_say_why,
    a_very_wide_frame_is_padded_then_cropped,
    the_capture_leaves_the_render_result_alone,
    describe_an_empty_scene_without_the_model,
    a_cut_description_says_so,
    describe_reports_the_colours_materials_show,
    describe_scene,
    describe_goes_on_after_the_server_restarts,
    blockout_plans,
    blockout_operator,
    blockout_replace_and_add,
    blockout_second_run,
    cancel_stops_the_job,
    a_queued_job_shows_its_place_and_wait,
    a_quota_refusal_shows_its_sentence,
    unreachable_server,
    wrong_token,
    online_access_respected,
    file_load_cancels_jobs,
    disable_cancels_jobs,
):
    only = [name for name in CONFIG.get("only", "").split(",") if name]  # a few checks, while developing them
    if not only or step.__name__ in ("install_from_zip", *only):
        check(step)
