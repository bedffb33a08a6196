"""Checks that run inside real Blender (the bpy module in .venv-blender), driven by
tests/test_blender_extension.py:

    .venv-blender/bin/python tests/blender/run_checks.py CONFIG.json

CONFIG names the extension zip, the server (address, token), an address where nothing listens,
and an output folder. The extension is installed the way Edit > Preferences > Get Extensions >
Install from Disk does it (`extensions.package_install_files`: manifest checks, the zip's wheels
installed for this platform), with BLENDER_USER_RESOURCES pointing at a scratch folder. Each check
records {"ok", "detail", ...} in OUT/results.json; pytest asserts on them. Jobs run on worker
threads; the bpy module has no event loop, so `drive()` calls the add-on's timer function
(`jobs.tick`) itself until the job has finished and its result has been applied.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import bpy
import numpy as np

CONFIG = json.loads(Path(sys.argv[1]).read_text())
OUT = Path(CONFIG["out"])
PACKAGE = "bl_ext.user_default.artforge_blender"
results: dict[str, dict] = {}


def check(function: Callable[[], dict | None]) -> None:
    started = time.monotonic()
    try:
        record = {"ok": True, **(function() or {})}
    except Exception as error:
        record = {"ok": False, "detail": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    record["seconds"] = round(time.monotonic() - started, 2)
    results[function.__name__] = record
    (OUT / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"{function.__name__}: {'ok' if record['ok'] else 'FAILED ' + record['detail']} ({record['seconds']} s)", flush=True)


def module(name: str):
    return importlib.import_module(f"{PACKAGE}.{name}")


def prefs():
    return bpy.context.preferences.addons[PACKAGE].preferences


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
    operators = ["texture", "concept_art", "describe_scene", "blockout", "cancel", "test_connection"]
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
    job = drive("texture")
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
    assert scene.camera == built["Camera"] and built["Camera"].data.lens == 35
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


def cancel_stops_the_job() -> dict:
    fresh_scene()
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


def unreachable_server() -> dict:
    fresh_scene()
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
    fresh_scene()
    configure(token="not-the-token")
    found = {}
    for operator, kind in ((bpy.ops.artforge.describe_scene, "describe"), (bpy.ops.artforge.test_connection, "connection")):
        assert operator() == {"FINISHED"}
        job = drive(kind, timeout=60)
        assert job.failed and "did not accept the token" in job.done_message, outcome(job)
        found[kind] = job.done_message
    return found


def online_access_respected() -> dict:
    fresh_scene()
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
    fresh_scene()
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
    fresh_scene()
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
    concept_art,
    describe_scene,
    blockout_plans,
    blockout_operator,
    cancel_stops_the_job,
    unreachable_server,
    wrong_token,
    online_access_respected,
    file_load_cancels_jobs,
    disable_cancels_jobs,
):
    check(step)
