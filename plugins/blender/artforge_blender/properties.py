"""What the artist sets per scene: `scene.artforge`."""

from __future__ import annotations

import bpy

from .image_jobs import IMG2IMG, STYLIZE, TEXTURE_SIZES


class ArtForgeSettings(bpy.types.PropertyGroup):
    # Texture
    texture_prompt: bpy.props.StringProperty(name="Prompt", description="What the texture shows", default="weathered red brick wall")
    texture_size: bpy.props.EnumProperty(
        name="Resolution", items=[(str(s), f"{s} px", f"{s} x {s} pixels") for s in TEXTURE_SIZES], default="512"
    )
    seamless: bpy.props.BoolProperty(name="Seamless", description="Tiles without seams in both directions", default=True)
    pbr: bpy.props.BoolProperty(name="PBR maps", description="Also height, normal and roughness maps derived from the albedo", default=True)
    add_uvs: bpy.props.BoolProperty(
        name="Add UVs",
        description="Give a mesh without a UV map a cube projection, which keeps a seamless texture seamless; "
        "without UVs a texture shows as one colour",
        default=True,
    )
    model: bpy.props.StringProperty(name="Model", description="Image model on the server; empty: the server's default")
    steps: bpy.props.IntProperty(name="Steps", description="Denoising steps; 0: the model's default", default=0, min=0, max=150)
    seed: bpy.props.IntProperty(name="Seed", description="Same seed, same image; -1: random", default=-1, min=-1)

    # Concept art from the camera
    concept_prompt: bpy.props.StringProperty(name="Prompt", description="What the concept art should look like")
    concept_mode: bpy.props.EnumProperty(
        name="Mode",
        items=[(IMG2IMG, "Image to image", "Repaint the camera view guided by the prompt"), (STYLIZE, "Stylize", "A painting style")],
        default=IMG2IMG,
    )
    concept_strength: bpy.props.FloatProperty(name="Strength", description="How far to move from the view", default=0.6, min=0.0, max=1.0)
    concept_size: bpy.props.IntProperty(name="Size", description="Long side of the capture (pixels)", default=512, min=64, max=2048, step=8)
    style_index: bpy.props.IntProperty(name="Style", description="Built-in style number (see Test Connection)", default=0, min=0)
    capture_engine: bpy.props.EnumProperty(
        name="Capture",
        items=[("BLENDER_WORKBENCH", "Workbench", "Quick solid shading"), ("SCENE", "Scene engine", "The scene's own render engine")],
        default="BLENDER_WORKBENCH",
    )

    # Project a texture from the camera's view
    projection_prompt: bpy.props.StringProperty(name="Prompt", description="What the texture projected from the camera shows")
    projection_depth_strength: bpy.props.FloatProperty(
        name="Depth",
        description="How closely the picture follows the camera's depth (the depth ControlNet's strength)",
        default=1.0,
        min=0.0,
        max=2.0,
    )
    projection_size: bpy.props.IntProperty(
        name="Size",
        description="Long side of the picture at most (pixels); the camera's render resolution when that is smaller",
        default=768,
        min=64,
        max=2048,
        step=8,
    )
    projection_use_colours: bpy.props.BoolProperty(
        name="From the view's colours",
        description="Start from the camera view's colours (image-to-image, rendered as Concept Art's Capture says) instead of noise",
        default=False,
    )
    projection_init_strength: bpy.props.FloatProperty(
        name="Strength", description="How far to move from the view's colours", default=0.75, min=0.0, max=1.0
    )
    projection_bake: bpy.props.BoolProperty(
        name="Bake to UV map",
        description="Also bake the projection (Cycles) into a new image in the mesh's own UV map, as a material of its own",
        default=False,
    )
    projection_bake_size: bpy.props.EnumProperty(
        name="Bake resolution", items=[(str(s), f"{s} px", f"{s} x {s} pixels") for s in (*TEXTURE_SIZES, 2048)], default="1024"
    )

    # Describe and block out
    describe_max_tokens: bpy.props.IntProperty(name="Length", description="Most tokens to write", default=300, min=16, max=2048)
    blockout_description: bpy.props.StringProperty(name="Description", description="The scene to block out", default="a house on a lawn")
    blockout_mode: bpy.props.EnumProperty(
        name="Previous block-out",
        items=[
            ("REPLACE", "Replace", "Remove the previous ArtForge block-out (only what it made) and build the new one in its place"),
            ("ADD", "Add", "Keep the previous block-outs and build the new one beside them, in a collection of its own"),
        ],
        default="REPLACE",
    )
    blockout_use_camera: bpy.props.BoolProperty(
        name="Use the plan's camera",
        description="Make the block-out's camera, framed on its objects, the scene camera. Off: the scene camera is kept "
        "(a block-out camera is made only when the scene has none, or had the replaced block-out's)",
        default=False,
    )


CLASSES = (ArtForgeSettings,)


def register() -> None:
    bpy.types.Scene.artforge = bpy.props.PointerProperty(type=ArtForgeSettings)


def unregister() -> None:
    del bpy.types.Scene.artforge
