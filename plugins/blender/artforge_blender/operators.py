"""The operators: each checks its inputs on the main thread, starts a job (jobs.py) and returns at
once; the job's `update` applies progress and the result from the timer."""

from __future__ import annotations

from collections.abc import Callable

import bpy

from artforge_client import Client, ImageResult, JobStream
from artforge_client.job_state import JobSnapshot, Phase, describe_error, run_stream
from artforge_client.server import ServerSettings

from . import jobs, scene_io
from .blockout_job import PlanAttempts
from .blockout_plan import PlanResult
from .image_jobs import (
    DATA_MAPS,
    STYLIZE,
    CaptureLayout,
    ProjectionSettings,
    TextureSettings,
    capture_layout,
    concept_request,
    maps_by_name,
    projection_request,
    short_label,
    texture_request,
)
from .preferences import start_job
from .projection import CameraView, depth_to_gray, gray_png, pad_to_canvas, projection_size
from .scene_context import scene_context

PREVIEW_IMAGE = "ArtForge Preview"
DESCRIPTION_TEXT = "ArtForge Scene Description"
CONTEXT_TEXT = "ArtForge Scene Context"  # what was sent, so the artist sees what the model saw
MATERIAL_OBJECT_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT"}


def _run_image_job(job: jobs.Job, settings: ServerSettings, submit: Callable[[Client], JobStream]) -> None:
    """Stream an image job; succeed() gets every result image."""
    with settings.client() as client:

        def start() -> JobStream:
            job.stream = submit(client)
            return job.stream

        run_stream(job.state, start, settings.address, result=lambda stream: list(stream.images))


def _show_preview(job: jobs.Job, seen: list[object]) -> None:
    """Put the job's latest step preview into the preview image (main thread)."""
    preview = getattr(job.stream, "preview", None)
    if preview is None or (seen and seen[0] is preview):
        return
    seen[:] = [preview]
    image = scene_io.set_png(bpy.data.images.get(PREVIEW_IMAGE), PREVIEW_IMAGE, preview.data)
    scene_io.show_in_image_editors(image)


# -- texture -----------------------------------------------------------------------------------


def apply_texture(results: list[ImageResult], label: str, target: int, faces: frozenset[int], add_uvs: bool) -> str:
    """Make the material and put it on the object the job was started on (by session_uid: a rename
    does not lose it, and another object that takes its name does not get it). Nothing the artist
    made is replaced, and everything made here has a user, so a save keeps it all. One undo step."""
    maps = maps_by_name(results)
    if "albedo" not in maps:
        raise ValueError("the server returned no colour image")
    images = {name: scene_io.set_png(None, f"AF {label} {name}", r.data, data=name in DATA_MAPS) for name, r in maps.items()}
    material = scene_io.texture_material(f"AF {label}", images)
    seed = maps["albedo"].header.provenance.seed
    obj = scene_io.object_by_uid(target)
    if obj is None:
        material.use_fake_user = True
        message = f"Texture ready, seed {seed}: its object was deleted, so '{material.name}' is kept in the file (with a fake user)."
    else:
        uvs = ""
        if scene_io.needs_uvs(obj):
            if add_uvs:
                scene_io.add_box_uvs(obj)
                uvs = f" {obj.name} had no UV map: it got a cube projection, '{scene_io.BOX_UV_MAP}'."
            else:
                uvs = f" {obj.name} has no UV map, so the texture shows as one colour until it gets one."
        message = f"Texture ready, seed {seed}: '{material.name}' {scene_io.place_texture(obj, material, faces)}.{uvs}"
    scene_io.show_in_image_editors(images["albedo"])
    scene_io.push_undo(f"ArtForge texture: {label}")
    return message


class ARTFORGE_OT_texture(bpy.types.Operator):
    bl_idname = "artforge.texture"
    bl_label = "Generate Texture"
    bl_description = (
        "Generate a texture (and PBR maps) from the prompt and add it to the active object as a new material "
        "(on the selected faces in Edit Mode); the object's materials are kept"
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        if obj is None:
            cls.poll_message_set("Select the object to texture first.")
            return False
        if obj.type not in MATERIAL_OBJECT_TYPES:
            cls.poll_message_set(f"{obj.name} is a {obj.type.lower()}, which takes no material: select a mesh, curve, surface or text.")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.artforge
        if not props.texture_prompt.strip():
            self.report({"ERROR"}, "Write a prompt for the texture first.")
            return {"CANCELLED"}
        request = texture_request(
            TextureSettings(
                props.texture_prompt, int(props.texture_size), props.seamless, props.pbr, props.model.strip(), props.steps, props.seed
            )
        )
        obj = context.active_object
        label, target, add_uvs, seen = short_label(props.texture_prompt), obj.session_uid, props.add_uvs, []
        faces = scene_io.selected_faces(obj)  # the Edit Mode selection as it is now, not when the result comes

        def update(job: jobs.Job, snapshot: JobSnapshot) -> str | None:
            _show_preview(job, seen)
            return apply_texture(snapshot.result, label, target, faces, add_uvs) if snapshot.phase is Phase.SUCCEEDED else None

        def work(job: jobs.Job, settings: ServerSettings) -> None:
            _run_image_job(job, settings, lambda client: client.generate_image(request))

        return start_job(self, context, jobs.texture_key(target), f"Texture: {label}", work, update)


# -- concept art ---------------------------------------------------------------------------------


class ARTFORGE_OT_concept_art(bpy.types.Operator):
    bl_idname = "artforge.concept_art"
    bl_label = "Concept Art from Camera"
    bl_description = "Render the active camera's view and send it to the server (image-to-image or stylize)"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if context.scene is None or context.scene.camera is None:
            cls.poll_message_set("The scene has no camera: add one, and make it the scene's camera (Ctrl+Numpad 0).")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        props, scene = context.scene.artforge, context.scene
        if props.concept_mode != STYLIZE and not props.concept_prompt.strip():
            self.report({"ERROR"}, "Write a prompt for the concept art first (or choose Stylize).")
            return {"CANCELLED"}
        engine = scene.render.engine if props.capture_engine == "SCENE" else props.capture_engine
        png, layout = scene_io.capture_camera(scene, props.concept_size, engine)  # a short render on the main thread
        request = concept_request(
            png,
            props.concept_prompt,
            mode=props.concept_mode,
            strength=props.concept_strength,
            model=props.model.strip(),
            steps=props.steps,
            seed=props.seed,
            style_index=props.style_index,
        )
        label, seen = short_label(props.concept_prompt or "stylized"), []

        def update(job: jobs.Job, snapshot: JobSnapshot) -> str | None:
            _show_preview(job, seen)
            if snapshot.phase is not Phase.SUCCEEDED:
                return None
            image = scene_io.crop_to_frame(scene_io.set_png(None, f"AF Concept {label}", snapshot.result[0].data), layout)
            image.use_fake_user = True  # nothing else uses it: without this, the next save would drop it
            scene_io.show_in_image_editors(image)
            padded = f" (the {layout.width}x{layout.height} frame was padded to {layout.canvas_width}x{layout.canvas_height})"
            return f"Concept art ready: image {image.name}{padded if layout.padded else ''}."

        stylize = props.concept_mode == STYLIZE

        def work(job: jobs.Job, settings: ServerSettings) -> None:
            _run_image_job(job, settings, (lambda c: c.stylize(request)) if stylize else (lambda c: c.generate_image(request)))

        return start_job(self, context, "concept", f"Concept: {label}", work, update)


# -- project a texture from the camera's view ---------------------------------------------------


def apply_projection(
    results: list[ImageResult], label: str, target: int, view: CameraView, layout: CaptureLayout, bake_size: int, scene_name: str
) -> str:
    """Put the picture made from the camera's view onto the object the job was started on (by
    session_uid): the projection UV map from the camera as it was when its depth was rendered, a
    new material through it, and with `bake_size` a bake onto the object's own UV map. Nothing the
    artist made is replaced. One undo step."""
    maps = maps_by_name(results)
    if "albedo" not in maps:
        raise ValueError("the server returned no image")
    seed = maps["albedo"].header.provenance.seed
    image = scene_io.crop_to_frame(scene_io.set_png(None, f"AF Projection {label}", maps["albedo"].data), layout)
    obj = scene_io.object_by_uid(target)
    if obj is None:
        image.use_fake_user = True
        message = (
            f"Projection ready, seed {seed}: its object was deleted, so the image '{image.name}' is kept in the file (with a fake user)."
        )
    else:
        uv_map, seen = scene_io.project_uvs(obj, view)
        material = scene_io.projection_material(label, image, uv_map)
        where = scene_io.place_projection(obj, material)
        count = len(obj.data.vertices)
        message = (
            f"Projection ready, seed {seed}: '{material.name}' {where}, through the UV map '{uv_map}' ({seen} of {count} vertices in view)."
        )
        if bake_size:
            message += " " + _bake(obj, material, bake_size, label, bpy.data.scenes.get(scene_name) or bpy.context.scene)
    scene_io.show_in_image_editors(image)
    scene_io.push_undo(f"ArtForge projection: {label}")
    return message


def _bake(obj: bpy.types.Object, material: bpy.types.Material, size: int, label: str, scene: bpy.types.Scene) -> str:
    """Bake the projection onto the object's own UV map; a sentence saying what came of it."""
    uv_map = scene_io.bake_uv_map(obj)
    if uv_map is None:
        return f"Not baked: {obj.name} has no UV map of its own to bake onto (unwrap it, then project again)."
    try:
        baked = scene_io.bake_projection(obj, material, uv_map, size, label, scene)
    except Exception as error:  # the projection stands; the bake says why it did not
        return f"The bake onto '{uv_map}' failed: {describe_error(error, '')}"
    kept = "kept with a fake user (the mesh is shared)" if baked.use_fake_user else "in a new slot, on no face yet"
    return f"Baked onto the UV map '{uv_map}' as '{baked.name}' ({size}x{size}), {kept}."


class ARTFORGE_OT_project_texture(bpy.types.Operator):
    bl_idname = "artforge.project_texture"
    bl_label = "Project Texture from View"
    bl_description = (
        "Render the scene camera's depth, generate a picture that follows it (a depth ControlNet) and project it onto the "
        "active mesh through a UV map from the camera, as a new material; optionally bake it onto the mesh's own UV map. "
        "The depth is also saved as a PNG"
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        scene = context.scene
        camera = scene.camera if scene is not None else None
        if camera is None:
            cls.poll_message_set("The scene has no camera: add one, and make it the scene's camera (Ctrl+Numpad 0).")
            return False
        if camera.type != "CAMERA" or camera.data.type == "PANO":
            cls.poll_message_set(f"The scene camera '{camera.name}' must be a perspective or orthographic camera to project from.")
            return False
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            what = f"{obj.name} is a {obj.type.lower()}: select" if obj is not None else "Select"
            cls.poll_message_set(f"{what} the mesh to project onto.")
            return False
        if not scene_io.can_render_depth():
            cls.poll_message_set("Projecting from the view needs Blender 5.0 or newer (it reads the depth through the compositor).")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        props, scene, obj = context.scene.artforge, context.scene, context.active_object
        if not props.projection_prompt.strip():
            self.report({"ERROR"}, "Write a prompt for the projected texture first.")
            return {"CANCELLED"}
        if jobs.active("projection"):  # before rendering anything
            self.report({"WARNING"}, "An ArtForge projection job is still running: wait for it or cancel it.")
            return {"CANCELLED"}
        render, camera = scene.render, scene.camera
        size = projection_size(render.resolution_x, render.resolution_y, render.resolution_percentage, props.projection_size)
        layout = capture_layout(render.resolution_x, render.resolution_y, size)
        context.view_layer.update()  # matrices as the artist sees them, also after a script moved things
        view = scene_io.camera_view(scene)  # the camera as it is now: it may move while the job runs
        gray = depth_to_gray(scene_io.render_depth(scene, context.view_layer, layout), camera.data.clip_end)
        if not gray.any():
            self.report({"ERROR"}, f"The camera '{camera.name}' sees nothing within its clip end: aim it at {obj.name}.")
            return {"CANCELLED"}
        depth_png = gray_png(pad_to_canvas(gray, layout))
        path, _ = scene_io.save_depth(depth_png, camera.name)
        colours = None
        if props.projection_use_colours:
            engine = scene.render.engine if props.capture_engine == "SCENE" else props.capture_engine
            colours, _ = scene_io.capture_camera(scene, size, engine)
        settings = ProjectionSettings(
            props.projection_prompt,
            props.projection_depth_strength,
            props.projection_init_strength if props.projection_use_colours else None,
            props.model.strip(),
            props.steps,
            props.seed,
        )
        request = projection_request(settings, depth_png, layout, colours)
        label, target, seen = short_label(props.projection_prompt), obj.session_uid, []
        bake_size, scene_name = int(props.projection_bake_size) if props.projection_bake else 0, scene.name

        def update(job: jobs.Job, snapshot: JobSnapshot) -> str | None:
            _show_preview(job, seen)
            if snapshot.phase is not Phase.SUCCEEDED:
                return None
            message = apply_projection(snapshot.result, label, target, view, layout, bake_size, scene_name)
            return f"{message} Depth: {path}"

        def work(job: jobs.Job, settings: ServerSettings) -> None:
            job.request = request
            _run_image_job(job, settings, lambda client: client.generate_image(request))

        return start_job(self, context, "projection", f"Projection: {label}", work, update)


# -- describe the scene ------------------------------------------------------------------------


def _text(name: str) -> bpy.types.Text:
    return bpy.data.texts.get(name) or bpy.data.texts.new(name)


class ARTFORGE_OT_describe_scene(bpy.types.Operator):
    bl_idname = "artforge.describe_scene"
    bl_label = "Describe Scene"
    bl_description = f"Describe the visible scene in words, streamed into the text '{DESCRIPTION_TEXT}'"

    def execute(self, context: bpy.types.Context) -> set[str]:
        info = scene_io.gather_scene(context.scene, context.view_layer)
        if not info.objects and not info.lights:  # a small model asked about nothing invents a scene
            self.report({"WARNING"}, "The scene has no visible objects or lights: there is nothing to describe.")
            return {"CANCELLED"}
        context_text = scene_context(info)
        _text(CONTEXT_TEXT).from_string(context_text)
        _text(DESCRIPTION_TEXT).clear()
        max_tokens = context.scene.artforge.describe_max_tokens

        def update(job: jobs.Job, snapshot: JobSnapshot) -> str | None:
            text = _text(DESCRIPTION_TEXT)
            written, restarted = job.state.take_new_text()
            if restarted:  # the server restarted and writes the description again from the start
                text.clear()
            text.write(written)
            if not snapshot.phase.finished:
                return None
            # A description that stopped early says so in the text itself, where it is read.
            why = "it reached the Length limit" if snapshot.result == "max_tokens" else snapshot.message
            if snapshot.phase is Phase.SUCCEEDED and snapshot.result != "max_tokens":
                return f"Scene description written to the text '{DESCRIPTION_TEXT}'."
            if not text.as_string().strip():
                return None
            text.write(f"\n\n[Unfinished: {why}]")
            return f"The description in '{DESCRIPTION_TEXT}' is unfinished: {why}"

        def work(job: jobs.Job, settings: ServerSettings) -> None:
            with settings.client() as client:
                run_stream(
                    job.state,
                    lambda: client.generate_text(context_text, task="scene_description", max_tokens=max_tokens),
                    settings.address,
                    result=lambda stream: stream.finished.finish_reason,
                )

        return start_job(self, context, "describe", "Describe scene", work, update)


# -- block out ------------------------------------------------------------------------------------


def apply_plan(result: PlanResult, scene: bpy.types.Scene, *, replace: bool = True, use_camera: bool = False) -> tuple[str, bool]:
    """Build a valid plan (see scene_io.build_plan for `replace` and `use_camera`), or build
    nothing and say why; (message, failed)."""
    if not result.ok:
        shown = "; ".join(str(error) for error in result.errors[:4])
        more = f" (+{len(result.errors) - 4} more)" if len(result.errors) > 4 else ""
        return f"No block-out built, the plan was invalid: {shown}{more}", True
    return scene_io.build_plan(result.plan, scene, replace=replace, use_camera=use_camera).message, False


class ARTFORGE_OT_blockout(bpy.types.Operator):
    bl_idname = "artforge.blockout"
    bl_label = "Block Out Scene"
    bl_description = (
        "Ask the text model for a block-out plan of the description, check it, and build it (one undo step), "
        "replacing the previous block-out or beside it"
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.artforge
        description = props.blockout_description.strip()
        if not description:
            self.report({"ERROR"}, "Describe the scene to block out first.")
            return {"CANCELLED"}
        scene_name = context.scene.name
        replace, use_camera = props.blockout_mode == "REPLACE", props.blockout_use_camera  # as they were when clicked

        def update(job: jobs.Job, snapshot: JobSnapshot) -> str | None:
            job.state.take_text()  # the plan's JSON is not shown; drop it
            scene = bpy.data.scenes.get(scene_name)
            if snapshot.phase is not Phase.SUCCEEDED or scene is None:
                return None
            message, job.failed = apply_plan(snapshot.result, scene, replace=replace, use_camera=use_camera)
            return message

        def work(job: jobs.Job, settings: ServerSettings) -> None:
            with settings.client() as client:
                job.stream = PlanAttempts(client, description)
                run_stream(job.state, lambda: job.stream, settings.address, result=lambda attempts: attempts.result)

        return start_job(self, context, "blockout", "Block out", work, update)


class ARTFORGE_OT_cancel(bpy.types.Operator):
    bl_idname = "artforge.cancel"
    bl_label = "Cancel"
    bl_description = "Stop this ArtForge job"

    kind: bpy.props.StringProperty()

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not jobs.cancel(self.kind):
            self.report({"INFO"}, "Nothing to cancel.")
        return {"FINISHED"}


CLASSES = (
    ARTFORGE_OT_texture,
    ARTFORGE_OT_concept_art,
    ARTFORGE_OT_project_texture,
    ARTFORGE_OT_describe_scene,
    ARTFORGE_OT_blockout,
    ARTFORGE_OT_cancel,
)
