"""Every Blender panel's and the add-on preferences' draw(), inside real Blender (the bpy module in
.venv-blender), against tests/blender/ui_recorder.py: a stand-in for the UILayout that the bpy
module cannot make, checked against Blender's own RNA, so a wrong call in a panel fails here
instead of in the artist's sidebar. tests/blender/draw_checks.py installs the built zip and draws
everything in one Blender process (a few seconds, no server); the tests below read its results.
"""

from __future__ import annotations

import pytest

from tests.blender_host import passed, run_in_blender

PANELS = {"ARTFORGE_PT_view3d", "ARTFORGE_PT_shader_editor"}
RECORDER_CHECKS = (
    "recorder_parses_like_blender",
    "recorder_misspelled_property",
    "recorder_python_attribute_is_no_property",
    "recorder_wrong_label_keyword",
    "recorder_optional_argument_given_positionally",
    "recorder_missing_required_argument",
    "recorder_unknown_icon",
    "recorder_unknown_operator",
    "recorder_unknown_operator_property",
    "recorder_operator_property_type",
    "recorder_unknown_method",
    "recorder_wrong_value_types",
    "recorder_read_only_attribute",
    "recorder_unknown_enum_value_menu_and_panel",
    "recorder_records_valid_calls",
)
STATES = (
    "no_job",
    "jobs_running",
    "jobs_waiting",
    "jobs_succeeded",
    "jobs_failed",
    "no_active_object",
    "object_takes_no_material",
    "no_camera",
    "mesh_without_uv_map",
    "shader_panel_outside_shader_editor",
    "stylize_mode",
    "preferences_with_tls",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    return run_in_blender("draw_checks.py", tmp_path_factory.mktemp("blender-draw"), 300)


def test_every_panel_draw_runs(run):
    installed = passed(run, "install_from_zip")
    assert PANELS <= set(installed["panels"]) and installed["preferences"] == ["ArtForgePreferences"], installed
    for state in STATES:
        passed(run, state)
    assert passed(run, "every_panel_drawn")["drawn"] == sorted({*installed["panels"], "preferences"})


@pytest.mark.parametrize("state", STATES)
def test_draws_in_state(run, state):
    passed(run, state)


@pytest.mark.parametrize("name", RECORDER_CHECKS)
def test_recorder_is_true_to_blender(run, name):
    passed(run, name)


def test_a_running_job_shows_progress_and_cancel_and_greys_its_button(run):
    jobs = passed(run, "jobs_running")["jobs"]
    running = {"button": False, "poll": True, "progress": [[0.4, "Generating 40%"]], "cancel": [True], "messages": []}
    assert jobs["ARTFORGE_PT_shader_editor"]["texture"] == running
    assert jobs["ARTFORGE_PT_view3d"]["blockout"] == running
    assert jobs["ARTFORGE_PT_view3d"]["projection"] == running
    assert jobs["preferences"]["connection"] == running


def test_the_projection_section_offers_its_settings(run):
    """Prompt, depth strength and size; the view's colours and the bake, each with its own setting
    greyed out until it is ticked."""
    view3d = passed(run, "no_job")["outline"]["ARTFORGE_PT_view3d"]
    shown = "\n".join(view3d)
    for name in ("projection_prompt", "projection_depth_strength", "projection_size", "projection_use_colours", "projection_bake"):
        assert f"property='{name}'" in shown, name
    for name in ("projection_init_strength", "projection_bake_size"):
        (line,) = [line for line in view3d if f"property='{name}'" in line]
        parent = view3d[view3d.index(line) - 1]
        assert "enabled=False" in parent, (name, parent)


def test_a_finished_job_shows_its_message(run):
    assert passed(run, "jobs_succeeded")["jobs"]["ARTFORGE_PT_view3d"]["texture"]["messages"] == [["Texture ready.", "INFO"]]
    failed = passed(run, "jobs_failed")["jobs"]
    assert failed["ARTFORGE_PT_shader_editor"]["texture"]["messages"] == [["Cannot reach the ArtForge server at 127.0.0.1:9.", "ERROR"]]
    assert failed["ARTFORGE_PT_view3d"]["describe"]["messages"] == [["Cancelled", "CANCEL"]]


def test_a_queued_job_shows_its_place_and_the_estimated_wait(run):
    jobs = passed(run, "jobs_waiting")["jobs"]["ARTFORGE_PT_view3d"]
    assert jobs["texture"]["progress"] == [[0.0, "Waiting in the queue: 2 jobs ahead, about 2 min"]], jobs["texture"]
    assert jobs["blockout"]["progress"] == [[0.0, "Next in the queue"]], jobs["blockout"]  # no estimate yet: none shown
    assert jobs["projection"]["progress"] == [[0.0, "Waiting in the queue: 1 job ahead, about 30 s"]], jobs["projection"]


def test_a_quota_refusal_shows_the_servers_sentence(run):
    concept = passed(run, "jobs_failed")["jobs"]["ARTFORGE_PT_view3d"]["concept"]
    sentence = "Quota max_queued_jobs: alice may have 2 jobs queued at once and has 2; one frees when a queued job starts or ends."
    assert concept["messages"] == [[sentence, "ERROR"]], concept


def test_failing_polls_grey_out_the_button(run):
    for state, kind in (
        ("no_active_object", "texture"),
        ("no_camera", "concept"),
        ("no_active_object", "projection"),
        ("no_camera", "projection"),
    ):
        button = passed(run, state)["jobs"]["ARTFORGE_PT_view3d"][kind]
        assert (button["button"], button["poll"]) == (False, False), (state, button)
    for obj in ("Camera", "Light"):
        assert passed(run, "object_takes_no_material")["jobs"][obj]["ARTFORGE_PT_shader_editor"]["texture"]["poll"] is False
        assert passed(run, "object_takes_no_material")["jobs"][obj]["ARTFORGE_PT_view3d"]["projection"]["poll"] is False
    assert passed(run, "shader_panel_outside_shader_editor")["outline"]["ARTFORGE_PT_shader_editor"] is None
