"""ArtForge for Blender: textures, concept art, scene descriptions and block-outs from an ArtForge server.

This package will become the extension's root. Everything here so far is plain Python that runs
without Blender: `scene_context` (the scene as text for the `scene_description` task),
`blockout_plan` (the model's JSON block-out plan, parsed and validated). A running job as the UI
sees it (`artforge_client.job_state`) and colour conversions (`artforge_client.colors`) are shared
with the Krita plugin. Only the thin host layer, added later, imports `bpy`.
"""
