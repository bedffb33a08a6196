"""ArtForge for Blender: textures, concept art, projections from the camera, scene descriptions and
block-outs from an ArtForge server.

The extension's root (blender_manifest.toml; installers/build-blender-extension.py builds the zip).
Plain Python that runs without Blender, with unit tests: `scene_context` (the scene as text for the
`scene_description` task), `blockout_plan` (the model's JSON plan, parsed and validated),
`blockout_job` (the plan request with one retry), `image_jobs` (image requests and results),
`projection` (Project Texture from View: depth to a control image, the camera projection of the
UVs), `connection` (server settings, online access). Shared with the Krita plugin: `artforge_client`
(the client, `job_state`, `colors`), installed from the zip's wheels.

The thin bpy layer: `preferences`, `properties`, `operators`, `panels`, `jobs` (worker threads and
the bpy.app.timers callback) and `scene_io` (reads and writes bpy data). It is imported inside
register(), so the plain modules stay importable where there is no bpy.
"""

from __future__ import annotations


def _modules() -> tuple:
    from . import jobs, operators, panels, preferences, properties

    return (properties, preferences, operators, panels, jobs)


def register() -> None:
    import bpy

    for module in _modules():
        for cls in getattr(module, "CLASSES", ()):
            bpy.utils.register_class(cls)
        if hasattr(module, "register"):
            module.register()


def unregister() -> None:
    import bpy

    for module in reversed(_modules()):
        if hasattr(module, "unregister"):
            module.unregister()
        for cls in reversed(getattr(module, "CLASSES", ())):
            bpy.utils.unregister_class(cls)
