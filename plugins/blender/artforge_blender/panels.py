"""Sidebar panels: the 3D View (all five tools) and the Shader Editor (textures)."""

from __future__ import annotations

import bpy

from artforge_client.job_state import Phase

from . import jobs
from .image_jobs import STYLIZE

CATEGORY = "ArtForge"


def draw_job(layout: bpy.types.UILayout, kind: str, operator: str, icon: str) -> None:
    """Progress bar and Cancel while a job of `kind` runs, else its last outcome; then the
    operator's button, greyed out while the job runs."""
    job = jobs.get(kind)
    running = False
    if job is not None:
        snapshot = job.state.snapshot()
        running = snapshot.phase.active
        if running:
            row = layout.row(align=True)
            row.progress(factor=snapshot.progress, type="BAR", text=snapshot.message or snapshot.phase.value.capitalize())
            row.operator("artforge.cancel", text="", icon="CANCEL").kind = kind
        elif job.done_message:
            outcome = "CANCEL" if snapshot.phase is Phase.CANCELLED else "ERROR" if job.failed else "INFO"
            layout.box().label(text=job.done_message, icon=outcome)
    row = layout.row()
    row.enabled = not running
    row.operator(operator, icon=icon)


def draw_texture(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    props = context.scene.artforge
    layout.prop(props, "texture_prompt", text="")
    row = layout.row(align=True)
    row.prop(props, "texture_size", text="")
    row.prop(props, "seamless", toggle=True)
    row.prop(props, "pbr", toggle=True)
    layout.prop(props, "model")
    row = layout.row(align=True)
    row.prop(props, "steps")
    row.prop(props, "seed")
    obj = context.active_object
    if obj is not None and obj.type == "MESH" and not obj.data.uv_layers:
        row = layout.row()
        row.prop(props, "add_uvs")
        row.label(text="no UV map", icon="INFO" if props.add_uvs else "ERROR")
    key = jobs.texture_key(obj.session_uid) if obj is not None else "texture"
    draw_job(layout, key, "artforge.texture", "TEXTURE")
    others = jobs.running_textures() - jobs.active(key)
    if others:
        layout.label(text=f"{others} more texture{'s' if others > 1 else ''} on other objects", icon="TIME")


class ARTFORGE_PT_view3d(bpy.types.Panel):
    bl_idname = "ARTFORGE_PT_view3d"
    bl_label = "ArtForge"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        props = context.scene.artforge

        layout.label(text="Texture", icon="TEXTURE")
        draw_texture(layout.box(), context)

        layout.label(text="Concept art from camera", icon="CAMERA_DATA")
        box = layout.box()
        box.prop(props, "concept_mode", text="")
        if props.concept_mode == STYLIZE:
            box.prop(props, "style_index")
        else:
            box.prop(props, "concept_prompt", text="")
        row = box.row(align=True)
        row.prop(props, "concept_strength")
        row.prop(props, "concept_size")
        box.prop(props, "capture_engine")
        draw_job(box, "concept", "artforge.concept_art", "RENDER_STILL")

        layout.label(text="Project texture from view", icon="MOD_UVPROJECT")
        box = layout.box()
        box.prop(props, "projection_prompt", text="")
        row = box.row(align=True)
        row.prop(props, "projection_depth_strength")
        row.prop(props, "projection_size")
        row = box.row(align=True)
        row.prop(props, "projection_use_colours")
        sub = row.row(align=True)
        sub.enabled = props.projection_use_colours
        sub.prop(props, "projection_init_strength")
        row = box.row(align=True)
        row.prop(props, "projection_bake")
        sub = row.row(align=True)
        sub.enabled = props.projection_bake
        sub.prop(props, "projection_bake_size", text="")
        draw_job(box, "projection", "artforge.project_texture", "MOD_UVPROJECT")

        layout.label(text="Describe the scene", icon="TEXT")
        box = layout.box()
        box.prop(props, "describe_max_tokens")
        draw_job(box, "describe", "artforge.describe_scene", "TEXT")

        layout.label(text="Block out a scene", icon="MESH_CUBE")
        box = layout.box()
        box.prop(props, "blockout_description", text="")
        box.row().prop(props, "blockout_mode", expand=True)
        box.prop(props, "blockout_use_camera")
        draw_job(box, "blockout", "artforge.blockout", "MESH_CUBE")


class ARTFORGE_PT_shader_editor(bpy.types.Panel):
    bl_idname = "ARTFORGE_PT_shader_editor"
    bl_label = "ArtForge Texture"
    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = CATEGORY

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return getattr(context.space_data, "tree_type", "") == "ShaderNodeTree"

    def draw(self, context: bpy.types.Context) -> None:
        draw_texture(self.layout, context)


CLASSES = (ARTFORGE_PT_view3d, ARTFORGE_PT_shader_editor)
