"""Every panel's and the add-on preferences' draw() inside real Blender, driven by
tests/test_blender_draw.py:

    .venv-blender/bin/python tests/blender/draw_checks.py CONFIG.json

CONFIG names the extension zip, a scratch BLENDER_USER_RESOURCES folder and an output folder. The
extension is installed from the zip as tests/blender/run_checks.py does it
(`extensions.package_install_files`), so the panels drawn are the installed extension's. Each
draw() gets ui_recorder's stand-in as `self.layout` and the real bpy.context of its editor (an area
of the startup file's window, with the panel's region), in the states an artist meets: no job;
jobs submitting, queued, running, cancelling, finished or failed (made in the extension's `jobs`
module, no server); the polls that fail (no active object, one that takes no material, no camera,
the Shader Editor panel in the Compositor); a mesh without UVs. The recorder_* checks show the
stand-in parses like Blender and rejects wrong calls. Each check records {"ok", "detail", ...} in OUT/results.json; pytest asserts on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from operator import methodcaller
from pathlib import Path

import bpy
from harness import CONFIG, PACKAGE, check, module, prefs
from ui_recorder import BlenderWarning, DrawSelf, Node, UILayout, attribute_value, parse_arguments, tree

# Each job kind's button (operator, icon), and the panels that show it.
KINDS = {
    "texture": ("artforge.texture", "TEXTURE"),
    "concept": ("artforge.concept_art", "RENDER_STILL"),
    "projection": ("artforge.project_texture", "MOD_UVPROJECT"),
    "describe": ("artforge.describe_scene", "TEXT"),
    "blockout": ("artforge.blockout", "MESH_CUBE"),
    "connection": ("artforge.test_connection", "LINKED"),
}
SHOWN = {"ARTFORGE_PT_view3d": ("texture", "concept", "projection", "describe", "blockout"), "ARTFORGE_PT_shader_editor": ("texture",)}
SHOWN["preferences"] = ("connection",)
# The editor (area.ui_type) a panel of each space type is drawn in; a panel in another space needs one here.
EDITORS = {"VIEW_3D": "VIEW_3D", "NODE_EDITOR": "ShaderNodeTree", "PREFERENCES": "PREFERENCES"}
drawn: set[str] = set()  # panels whose draw() ran in some state


def extension_classes(base: type) -> list[type]:
    """The installed extension's registered subclasses of `base`."""
    found, stack = [], [base]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith(f"{PACKAGE}.") and sub.is_registered:
                found.append(sub)
    return sorted(found, key=lambda cls: cls.__name__)


def fresh_scene() -> None:
    """The startup file (a window; the Cube, active, a Camera and a Light), no jobs, TLS off."""
    bpy.ops.wm.read_homefile()
    module("jobs").cancel_all()
    prefs().use_tls = False


@contextmanager
def editor(space_type: str, region_type: str, ui_type: str | None = None) -> Iterator[bpy.types.Context]:
    """bpy.context as inside that editor's region: the window's area of that kind, else another
    area turned into it (the bpy module has a window but never draws it)."""
    window = bpy.context.window_manager.windows[0]
    ui_type = ui_type or EDITORS[space_type]
    area = next((a for a in window.screen.areas if a.ui_type == ui_type), None)
    if area is None:
        area = next(a for a in window.screen.areas if a.type != "VIEW_3D")
        area.ui_type = ui_type
    region = next(r for r in area.regions if r.type == region_type)
    with bpy.context.temp_override(window=window, area=area, region=region):
        yield bpy.context


def draw_panel(cls: type, context: bpy.types.Context) -> Node | None:
    """What Blender does with a panel: poll(), then draw(); None when poll() hides it."""
    if hasattr(cls, "poll") and not cls.poll(context):
        return None
    layout = UILayout.root(cls.bl_idname)
    cls.draw(DrawSelf(cls, layout), context)
    return tree(layout)


def draw_all(node_tree: str = "ShaderNodeTree") -> dict[str, Node | None]:
    """Every panel of the extension in its editor, and the preferences, by bl_idname."""
    roots: dict[str, Node | None] = {}
    for cls in extension_classes(bpy.types.Panel):
        with editor(cls.bl_space_type, cls.bl_region_type, node_tree if cls.bl_space_type == "NODE_EDITOR" else None) as context:
            roots[cls.bl_idname] = draw_panel(cls, context)
    with editor("PREFERENCES", "WINDOW") as context:
        layout = UILayout.root("preferences")
        type(prefs()).draw(DrawSelf(prefs(), layout), context)
        roots["preferences"] = tree(layout)
    drawn.update(name for name, root in roots.items() if root is not None)
    return roots


def outlines(roots: dict[str, Node | None]) -> dict[str, list[str] | None]:
    return {name: root.outline() if root else None for name, root in roots.items()}


def job_ui(root: Node, kind: str) -> dict:
    """What the artist sees of one job in a drawn panel: its button (usable?), progress, Cancel, messages."""
    operator, icon = KINDS[kind]
    buttons = root.find("operator", operator=operator)
    assert len(buttons) == 1, f"{root.call}: {len(buttons)} {operator} buttons"
    assert buttons[0].args.get("icon") == icon, f"{root.call}: the {operator} button shows {buttons[0].args.get('icon')}, not {icon}"
    block = buttons[0].parent  # the tool's box, or the whole panel
    while block.parent is not None and block.call != "box":
        block = block.parent
    cancels = [n for n in block.find("operator", operator="artforge.cancel") if n.properties.get("kind") == job_key(kind)]
    return {
        "button": buttons[0].enabled,
        "poll": buttons[0].poll,
        "progress": [[n.args.get("factor"), n.args.get("text")] for n in block.find("progress")],
        "cancel": [n.enabled for n in cancels],
        # draw_job() puts a finished job's outcome in a box of its own
        "messages": [[n.args.get("text"), n.args.get("icon")] for box in block.children if box.call == "box" for n in box.find("label")],
    }


def idle(usable: bool = True) -> dict:
    return {"button": usable, "poll": usable, "progress": [], "cancel": [], "messages": []}


def active(factor: float, text: str) -> dict:
    return {"button": False, "poll": True, "progress": [[factor, text]], "cancel": [True], "messages": []}


def done(text: str, icon: str) -> dict:
    return {"button": True, "poll": True, "progress": [], "cancel": [], "messages": [[text, icon]]}


def expect_jobs(roots: dict[str, Node | None], expected: dict[str, dict]) -> dict:
    seen = {}
    for panel, kinds in SHOWN.items():
        assert roots[panel] is not None, f"{panel} was not drawn"
        seen[panel] = {kind: job_ui(roots[panel], kind) for kind in kinds}
        for kind, ui in seen[panel].items():
            assert ui == expected[kind], f"{panel}, {kind}: {ui} != {expected[kind]}"
    return {"jobs": seen, "outline": outlines(roots)}


def job_key(kind: str) -> str:
    """The key the panels draw a job of `kind` under: texture jobs go by the active object."""
    obj = bpy.context.active_object
    return module("jobs").texture_key(obj.session_uid) if kind == "texture" and obj is not None else kind


def put_job(kind: str, *steps: Callable) -> None:
    """A job of `kind` as its worker would leave it: begun, then `steps` applied to its JobState."""
    jobs = module("jobs")
    job = jobs.Job(job_key(kind))
    job.state.begin(f"{kind} job")
    for step in steps:
        step(job.state)
    jobs._jobs[job_key(kind)] = job


def rejects(error: type[Exception], words: str, draw: Callable[[UILayout], object]) -> dict:
    """The stand-in refuses what Blender refuses: `draw(layout)` raises `error` saying `words`."""
    layout = UILayout.root("check")
    try:
        draw(layout)
    except error as caught:
        assert words in str(caught), f"{type(caught).__name__}: {caught}"
        return {"error": f"{type(caught).__name__}: {caught}"[:300]}
    raise AssertionError(f"the stand-in accepted it: {tree(layout).outline()}")


def install_from_zip() -> dict:
    result = bpy.ops.extensions.package_install_files(filepath=CONFIG["zip"], repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"}, result
    panels = module("panels")
    site = str(Path(CONFIG["user_resources"]).resolve())
    assert str(Path(panels.__file__).resolve()).startswith(site), f"panels imported from {panels.__file__}, not the installed extension"
    fresh_scene()
    return {
        "panels": [cls.bl_idname for cls in extension_classes(bpy.types.Panel)],
        "preferences": [cls.__name__ for cls in extension_classes(bpy.types.AddonPreferences)],
    }


# -- the stand-in is true to Blender -------------------------------------------------------------


def result_of(function: Callable, *args: object, **kwargs: object) -> str:
    try:
        function(*args, **kwargs)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return "accepted"


def recorder_parses_like_blender() -> dict:
    """The stand-in's argument parser and attribute checks against Blender's own, on RNA functions
    and attributes that exist without a UI: the same error word for word, or both accept."""
    scene, lights, images = bpy.context.scene, bpy.data.lights, bpy.data.images
    calls = [
        (lights, "new", ("L", "SUN"), {}),
        (lights, "new", ("L",), {}),
        (lights, "new", ("L", "SUNNY"), {}),
        (lights, "new", ("L", 3), {}),
        (lights, "new", (None, "SUN"), {}),
        (lights, "new", ("L",), {"type": "SUN", "typo": 1}),
        (images, "new", ("I", 4, 4), {"alphaa": True}),
        (images, "new", ("I", 4, 4), {"alpha": 2}),
        (images, "new", ("I", 4, 4), {"alpha": 1}),
        (scene, "frame_set", (1, 0.5), {}),
        (scene, "frame_set", ("1",), {}),
        (scene, "frame_set", (True,), {"subframe": "x"}),
        (bpy.data.objects, "new", ("O", "mesh"), {}),
        (bpy.data.objects, "new", ("O", None), {}),
        (bpy.types.UILayout, "icon", (None,), {}),
    ]
    assignments = [
        (scene, "use_gravity", 2),
        (scene, "use_gravity", 1),
        (scene, "name", None),
        (scene, "camera", bpy.data.meshes[0]),
        (scene, "gravity", (1, 2)),
        (scene, "rna_type", 1),
        (bpy.data.lights["Light"], "type", "NOPE"),
        (bpy.data.lights["Light"], "type", 3),
        (scene.render, "resolution_x", "x"),
        (scene.render, "nope", 1),
    ]
    compared = []
    for owner, name, args, kwargs in calls:
        where = f"{owner.bl_rna.identifier}.{name}()"
        compared.append(
            [
                result_of(getattr(owner, name), *args, **kwargs),
                result_of(parse_arguments, owner.bl_rna.functions[name], args, kwargs, where),
            ]
        )
    for owner, name, value in assignments:
        compared.append([result_of(setattr, owner, name, value), result_of(attribute_value, owner.bl_rna, name, value)])
    differ = [pair for pair in compared if pair[0] != pair[1]]
    assert not differ, f"Blender and the stand-in disagree: {differ}"
    return {"compared": [real for real, _ in compared]}


def recorder_misspelled_property() -> dict:
    return rejects(BlenderWarning, "ArtForgeSettings.texture_promt", lambda ui: ui.prop(bpy.context.scene.artforge, "texture_promt"))


def recorder_python_attribute_is_no_property() -> dict:
    return rejects(BlenderWarning, "property not found", lambda ui: ui.prop(bpy.context.scene.artforge, "keys"))


def recorder_wrong_label_keyword() -> dict:
    return rejects(TypeError, "invalid keyword argument(s) (txt)", lambda ui: ui.label(txt="Texture"))


def recorder_optional_argument_given_positionally() -> dict:
    return rejects(TypeError, 'required parameter "text" to be a keyword argument', lambda ui: ui.label("Texture"))


def recorder_missing_required_argument() -> dict:
    return rejects(TypeError, 'required parameter "property" not specified', lambda ui: ui.prop(bpy.context.scene.artforge))


def recorder_unknown_icon() -> dict:
    return rejects(TypeError, 'enum "TEXTURES" not found', lambda ui: ui.label(text="Texture", icon="TEXTURES"))


def recorder_unknown_operator() -> dict:
    return rejects(BlenderWarning, "unknown operator 'artforge.textures'", lambda ui: ui.row().operator("artforge.textures"))


def recorder_unknown_operator_property() -> dict:
    def draw(ui: UILayout) -> None:
        ui.operator("artforge.cancel", text="").kinds = "texture"

    return rejects(AttributeError, "'ARTFORGE_OT_cancel' object has no attribute 'kinds'", draw)


def recorder_operator_property_type() -> dict:
    def draw(ui: UILayout) -> None:
        ui.operator("artforge.cancel").kind = 3

    return rejects(TypeError, "ARTFORGE_OT_cancel.kind expected a string type, not int", draw)


def recorder_unknown_method() -> dict:
    return rejects(AttributeError, "no attribute 'rows'", lambda ui: ui.rows())


def recorder_wrong_value_types() -> dict:
    found = {}
    for name, words, draw in (
        ("enabled", "UILayout.enabled expected True/False or 0/1, not str", lambda ui: setattr(ui.row(), "enabled", "no")),
        ("factor", 'keyword argument "factor" -  Function.factor expected a float type, not str', lambda ui: ui.progress(factor="half")),
        ("data", 'argument 1, "data" -  Function.data expected a AnyType type, not str', lambda ui: ui.prop("artforge", "seed")),
        ("alignment", 'enum "MIDDLE" not found', lambda ui: setattr(ui, "alignment", "MIDDLE")),
    ):
        found[name] = rejects(TypeError, words, draw)["error"]
    return found


def recorder_read_only_attribute() -> dict:
    return rejects(AttributeError, "read-only", lambda ui: setattr(ui, "direction", "VERTICAL"))


def recorder_unknown_enum_value_menu_and_panel() -> dict:
    props = bpy.context.scene.artforge
    return {
        "prop_enum": rejects(BlenderWarning, "value not found: PAINT", lambda ui: ui.prop_enum(props, "concept_mode", "PAINT"))["error"],
        "menu": rejects(BlenderWarning, "Menu type not found 'ARTFORGE_MT_nope'", lambda ui: ui.menu("ARTFORGE_MT_nope"))["error"],
        "popover": rejects(BlenderWarning, "Panel type not found 'VIEW3D_MT_add'", lambda ui: ui.popover("VIEW3D_MT_add"))["error"],
        "operator_enum": rejects(BlenderWarning, "'actions'", lambda ui: ui.operator_enum("object.select_all", "actions"))["error"],
    }


def recorder_records_valid_calls() -> dict:
    """The other side: Blender's own API, used rightly, is taken and recorded as drawn."""
    scene, props = bpy.context.scene, bpy.context.scene.artforge
    layout = UILayout.root("check")
    layout.use_property_split = True
    column = layout.column(heading="Settings", align=True)
    column.alert = True
    column.prop(props, "concept_mode", expand=True, text="Mode", icon="RENDER_STILL")
    column.prop(props, "seamless", toggle=True)
    column.prop_enum(props, "concept_mode", "STYLIZE")
    split = column.split(factor=0.3)
    split.scale_x = 2
    split.label(text="Camera", icon_value=layout.icon(scene.camera))
    split.prop_search(scene, "camera", bpy.data, "objects", text="")
    header, body = layout.panel("ARTFORGE_check", default_closed=True)
    header.label(text="More")
    body.progress(factor=0.25, type="RING", text="Quarter")
    body.separator(factor=2.0, type="LINE")
    body.operator("ARTFORGE_OT_cancel", text="", icon="CANCEL").kind = "texture"
    grid = layout.grid_flow(row_major=True, columns=2, even_columns=True)
    grid.enabled = False
    grid.operator("artforge.concept_art", depress=True)
    grid.menu("VIEW3D_MT_add")
    grid.template_ID(scene, "camera")
    root = tree(layout)
    inherited = [column.alert, split.alert, split.use_property_split, grid.enabled, body.enabled, split.scale_x, body.scale_x]
    assert inherited == [True, True, True, False, True, 2.0, 1.0], inherited
    assert [n.enabled for n in root.find("operator")] == [True, False]
    assert root.outline() == [
        "check() [use_property_split=True]",
        "  column(align=True, heading='Settings') [alert=True]",
        "    prop(data=<ArtForgeSettings>, property='concept_mode', text='Mode', icon='RENDER_STILL', expand=True)",
        "    prop(data=<ArtForgeSettings>, property='seamless', toggle=1)",
        "    prop_enum(data=<ArtForgeSettings>, property='concept_mode', value='STYLIZE')",
        "    split(factor=0.3) [scale_x=2.0]",
        f"      label(text='Camera', icon_value={layout.icon(scene.camera)})",
        "      prop_search(data=<Scene>, property='camera', search_data=<BlendData>, search_property='objects', text='')",
        "  panel(idname='ARTFORGE_check', default_closed=True)",
        "    layout_header()",
        "      label(text='More')",
        "    layout_body()",
        "      progress(text='Quarter', factor=0.25, type='RING')",
        "      separator(factor=2.0, type='LINE')",
        "      operator(operator='ARTFORGE_OT_cancel', text='', icon='CANCEL') {kind='texture'}",
        "  grid_flow(row_major=True, columns=2, even_columns=True) [enabled=False]",
        "    operator(operator='artforge.concept_art', depress=True)",
        "    menu(menu='VIEW3D_MT_add')",
        "    template_ID(data=<Scene>, property='camera')",
    ], root.outline()
    return {"outline": root.outline()}


# -- the panels in the states that matter ------------------------------------------------------


def no_job() -> dict:
    fresh_scene()
    roots = draw_all()
    found = expect_jobs(roots, dict.fromkeys(KINDS, idle()))
    concept = roots["ARTFORGE_PT_view3d"]
    assert concept.find("prop", property="concept_prompt") and not concept.find("prop", property="style_index")
    (certificate,) = roots["preferences"].find("prop", property="certificate")
    assert not certificate.enabled, "the certificate field is usable with TLS off"
    return found


def jobs_running() -> dict:
    fresh_scene()
    for kind in KINDS:
        put_job(kind, methodcaller("started"), methodcaller("progressed", 0.4, "Generating 40%"))
    return expect_jobs(draw_all(), dict.fromkeys(KINDS, active(0.4, "Generating 40%")))


def jobs_waiting() -> dict:
    fresh_scene()
    put_job("texture", methodcaller("queued", 2, "job-1", 95.0))
    put_job("concept")  # submitting
    put_job("projection", methodcaller("queued", 1, "job-2", 30.0))
    put_job("describe", methodcaller("started"), methodcaller("request_cancel"))
    put_job("blockout", methodcaller("queued", 0))
    put_job("connection")
    expected = {
        "texture": active(0.0, "Waiting in the queue: 2 jobs ahead, about 2 min"),
        "concept": active(0.0, "Sending the request"),
        "projection": active(0.0, "Waiting in the queue: 1 job ahead, about 30 s"),
        "describe": active(0.0, "Cancelling"),
        "blockout": active(0.0, "Next in the queue"),
        "connection": active(0.0, "Sending the request"),
    }
    return expect_jobs(draw_all(), expected)


def jobs_succeeded() -> dict:
    fresh_scene()
    for kind in KINDS:
        put_job(kind, methodcaller("started"), methodcaller("succeed", message=f"{kind.capitalize()} ready."))
    module("jobs").tick()  # the timer turns a finished state into the panel's message
    return expect_jobs(draw_all(), {kind: done(f"{kind.capitalize()} ready.", "INFO") for kind in KINDS})


def jobs_failed() -> dict:
    from grpc import StatusCode

    from artforge_client import ArtForgeError
    from artforge_client.job_state import describe_error

    fresh_scene()
    unreachable = "Cannot reach the ArtForge server at 127.0.0.1:9."
    for kind in ("texture", "projection", "connection"):
        put_job(kind, methodcaller("fail", unreachable))
    # A quota refusal as the worker words it (run_stream): the server's sentence.
    quota = "quota max_queued_jobs: alice may have 2 jobs queued at once and has 2; one frees when a queued job starts or ends"
    refused = describe_error(ArtForgeError(StatusCode.RESOURCE_EXHAUSTED, quota), "127.0.0.1:50051")
    put_job("concept", methodcaller("fail", refused))
    for kind in ("describe", "blockout"):
        put_job(kind, methodcaller("started"), methodcaller("cancelled"))
    module("jobs").tick()
    expected = {kind: done(unreachable, "ERROR") for kind in KINDS} | {k: done("Cancelled", "CANCEL") for k in ("describe", "blockout")}
    expected["concept"] = done(refused, "ERROR")
    return expect_jobs(draw_all(), expected)


def no_active_object() -> dict:
    fresh_scene()
    bpy.context.view_layer.objects.active = None
    return expect_jobs(draw_all(), dict.fromkeys(KINDS, idle()) | dict.fromkeys(("texture", "projection"), idle(usable=False)))


def object_takes_no_material() -> dict:
    found = {}
    for name in ("Camera", "Light"):
        fresh_scene()
        bpy.context.view_layer.objects.active = bpy.data.objects[name]
        unusable = dict.fromkeys(("texture", "projection"), idle(usable=False))
        found[name] = expect_jobs(draw_all(), dict.fromkeys(KINDS, idle()) | unusable)["jobs"]
    return {"jobs": found}


def no_camera() -> dict:
    fresh_scene()
    bpy.context.scene.camera = None
    return expect_jobs(draw_all(), dict.fromkeys(KINDS, idle()) | dict.fromkeys(("concept", "projection"), idle(usable=False)))


def shader_panel_outside_shader_editor() -> dict:
    fresh_scene()
    roots = draw_all(node_tree="CompositorNodeTree")
    assert roots["ARTFORGE_PT_shader_editor"] is None, "the texture panel shows in the Compositor"
    assert roots["ARTFORGE_PT_view3d"] is not None
    return {"outline": outlines(roots)}


def mesh_without_uv_map() -> dict:
    """The texture section offers to add UVs (and says what happens without) only for such a mesh."""
    fresh_scene()
    found = {}
    for add_uvs, icon in ((True, "INFO"), (False, "ERROR")):
        cube = bpy.data.objects["Cube"].data
        while cube.uv_layers:
            cube.uv_layers.remove(cube.uv_layers[0])
        bpy.context.scene.artforge.add_uvs = add_uvs
        roots = draw_all()
        for panel in ("ARTFORGE_PT_view3d", "ARTFORGE_PT_shader_editor"):
            (prop,) = roots[panel].find("prop", property="add_uvs")
            labels = [[n.args.get("text"), n.args.get("icon")] for n in prop.parent.find("label")]
            assert len(labels) == 1 and labels[0][1] == icon, f"{panel}, add_uvs={add_uvs}: {labels}"
        found[f"add_uvs={add_uvs}"] = expect_jobs(roots, dict.fromkeys(KINDS, idle()))
    fresh_scene()
    roots = draw_all()
    assert not any(roots[panel].find("prop", property="add_uvs") for panel in SHOWN), "UVs offered for a mesh that has them"
    return found


def stylize_mode() -> dict:
    fresh_scene()
    bpy.context.scene.artforge.concept_mode = "STYLIZE"
    roots = draw_all()
    view3d = roots["ARTFORGE_PT_view3d"]
    assert view3d.find("prop", property="style_index") and not view3d.find("prop", property="concept_prompt"), view3d.outline()
    return expect_jobs(roots, dict.fromkeys(KINDS, idle()))


def preferences_with_tls() -> dict:
    fresh_scene()
    prefs().use_tls = True
    roots = draw_all()
    (certificate,) = roots["preferences"].find("prop", property="certificate")
    assert certificate.enabled, "the certificate field is greyed out with TLS on"
    return {"outline": outlines(roots)}


def every_panel_drawn() -> dict:
    expected = {cls.bl_idname for cls in extension_classes(bpy.types.Panel)} | {"preferences"}
    assert drawn == expected, f"drawn {sorted(drawn)}, expected {sorted(expected)}"
    return {"drawn": sorted(drawn)}


for step in (
    install_from_zip,
    recorder_parses_like_blender,
    recorder_misspelled_property,
    recorder_python_attribute_is_no_property,
    recorder_wrong_label_keyword,
    recorder_optional_argument_given_positionally,
    recorder_missing_required_argument,
    recorder_unknown_icon,
    recorder_unknown_operator,
    recorder_unknown_operator_property,
    recorder_operator_property_type,
    recorder_unknown_method,
    recorder_wrong_value_types,
    recorder_read_only_attribute,
    recorder_unknown_enum_value_menu_and_panel,
    recorder_records_valid_calls,
    no_job,
    jobs_running,
    jobs_waiting,
    jobs_succeeded,
    jobs_failed,
    no_active_object,
    object_takes_no_material,
    no_camera,
    mesh_without_uv_map,
    shader_panel_outside_shader_editor,
    stylize_mode,
    preferences_with_tls,
    every_panel_drawn,
):
    check(step)
