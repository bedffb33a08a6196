"""The Blender extension inside real Blender (the bpy 5.0.1 module in .venv-blender, made by
installers/setup-blender.sh), against a real server with the embedded text model, a tiny image
pipeline, and a user whose quota is one queued job. The zip is built by
installers/build-blender-extension.py and installed the way Blender's Install from Disk does it;
tests/blender/run_checks.py runs every check in one Blender process (start-up is the expensive
part) and writes results.json, which the tests below read. One check kills the server mid-job; it
comes back on the same port and folder (tests/restarting_server.py), and the checks after it use
the restarted server.
"""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image as PILImage

from artforge.models.embedded import STYLE_TRANSFER, fetch
from artforge_client.job_state import queue_message, status_sentence
from artforge_client.v1 import image_pb2, pixels_pb2
from tests.blender_host import passed, run_in_blender
from tests.conftest import REPO
from tests.restarting_server import RestartingServer
from tests.tiny_pipelines import build_all

TOKEN = "blender-test-token"
QUOTA_TOKEN = "blender-quota-token"  # a user who may have one job queued at once
SEED, SIZE, STEPS = 1234, 256, 2  # what run_checks.py asks for in the texture checks


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    tiny = build_all(REPO / ".cache" / "tiny-models")
    fetch(STYLE_TRANSFER, models_dir, progress=False)
    config = f"""
[limits]
max_tokens = 2048
max_queue = 8

[text]
batch_size = 1  # the checks hold the device with a text job to see queued jobs from Blender

[models]
preload = ["smollm2-135m-instruct", "tiny-sd15"]

[images]
default_model = "tiny-sd15"

[model.tiny-sd15]
path = "{tiny["tiny-sd15"]}"
backend = "torch"

[auth]
tokens = {{ artist = "{TOKEN}" }}

[users.limited]
token = "{QUOTA_TOKEN}"
role = "artist"
max_queued_jobs = 1
"""
    running = RestartingServer(models_dir, tmp_path_factory.mktemp("blender-server"), "--no-fetch", config=config)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def run(server, tmp_path_factory) -> dict:
    # discard port 9: nothing listens there
    config = {"address": server.address, "token": TOKEN, "quota_token": QUOTA_TOKEN, "dead_address": "127.0.0.1:9"}
    config["server_pid"] = str(server.pid)
    return run_in_blender("run_checks.py", tmp_path_factory.mktemp("blender"), 900, **config)


def direct(server, **fields) -> dict[str, bytes]:
    """The same texture, asked for by a direct client call: the server's PNGs by map."""
    request = image_pb2.GenerateImageRequest(prompt="mossy cobblestones", width=SIZE, height=SIZE, steps=STEPS, seed=SEED, **fields)
    with server.client(token=TOKEN) as client:
        stream = client.generate_image(request)
        stream.wait()
    names = {pixels_pb2.IMAGE_ROLE_COLOR: "albedo", pixels_pb2.IMAGE_ROLE_NORMAL: "normal", pixels_pb2.IMAGE_ROLE_ROUGHNESS: "roughness"}
    names[pixels_pb2.IMAGE_ROLE_HEIGHT] = "height"
    return {names[r.role]: r.data for r in stream.images}


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB"))


def test_registers_from_the_built_zip(run):
    record = passed(run, "install_from_zip")
    assert record["panels"] == ["ARTFORGE_PT_view3d", "ARTFORGE_PT_shader_editor"]


def test_test_connection(run):
    assert "Connected to ArtForge" in passed(run, "test_connection")["message"]


def test_texture_material_and_pixels_match_the_server(run, server):
    record = passed(run, "texture_seamless_pbr")
    assert set(record["links"]) == {
        "albedo.Color -> BSDF_PRINCIPLED.Base Color",
        "normal.Color -> NORMAL_MAP.Color",
        "roughness.Color -> BSDF_PRINCIPLED.Roughness",
        "Normal Map.Normal -> BSDF_PRINCIPLED.Normal",
        "Principled BSDF.BSDF -> OUTPUT_MATERIAL.Surface",
    }
    assert set(record["images"]) == {"albedo", "normal", "roughness", "height"} and record["height_images"], record
    assert record["images"]["albedo"]["colorspace"] == "sRGB" and record["images"]["normal"]["colorspace"] == "Non-Color"
    assert record["preview_size"], "no preview image was shown while the job ran"
    server_maps = direct(server, tiling=pixels_pb2.Tiling(x=True, y=True), pbr_maps=True)
    assert set(server_maps) == {"albedo", "height", "normal", "roughness"}
    for name, image in record["images"].items():
        assert image["size"] == [SIZE, SIZE] and image["packed"], image
        if name == "height":
            continue  # 16-bit: Blender's floats do not round back to the 8-bit PNG decoded here
        blender = np.load(run["_out"] / f"pbr-{name}.npy")[..., :3]
        assert np.array_equal(blender, decoded(server_maps[name])), f"{name}: Blender's pixels differ from the server's"


def test_seamless_and_pbr_flags_reach_the_request(run, server):
    pbr, plain = passed(run, "texture_seamless_pbr"), passed(run, "texture_plain")
    assert set(plain["images"]) == {"albedo"}, "PBR off must give the albedo only"
    assert "normal" not in str(plain["links"])
    seamless, flat = direct(server, tiling=pixels_pb2.Tiling(x=True, y=True))["albedo"], direct(server)["albedo"]
    assert not np.array_equal(decoded(seamless), decoded(flat)), "tiling changes the pixels, so the comparison below means something"
    assert np.array_equal(np.load(run["_out"] / "pbr-albedo.npy")[..., :3], decoded(seamless))
    assert np.array_equal(np.load(run["_out"] / "plain-albedo.npy")[..., :3], decoded(flat))
    assert pbr["images"]["albedo"]["sha256"] != plain["images"]["albedo"]["sha256"]


def test_concept_art_from_the_camera(run):
    record = passed(run, "concept_art")
    # The capture is 64 px on the long side of the scene's 2:1 frame; the server keeps the size.
    assert record["IMG2IMG"]["size"] == [64, 32] and record["STYLIZE"]["size"] == [64, 32]
    assert record["render_settings_restored"]


def test_describe_scene_fills_a_text_from_the_scene(run):
    record = passed(run, "describe_scene")
    for name in ("RedBarn", "OakTree", "WaterTrough", "KeyLight"):
        assert name in record["sent"]
    assert record["written"].strip()


def test_describe_goes_on_after_the_server_restarts(run, server):
    record = passed(run, "describe_goes_on_after_the_server_restarts")
    assert server.restarts == 1, server.restart_error
    messages = record["messages"]
    assert any(message.startswith("Reconnecting to the ArtForge server") for message in messages), messages
    assert any(message.endswith("(again: the server restarted)") for message in messages), messages
    assert record["attempts"] == [1, 2], record
    assert record["written"].strip()


def test_blockout_valid_and_invalid_plans(run):
    record = passed(run, "blockout_plans")
    assert set(record["invalid"]) == {"unknown type", "too many objects", "out of range", "not JSON"}
    made = "Blocked out 4 objects, 1 light and a camera in 'ArtForge Block-out'."
    assert record["valid"] == made + " Its camera 'Camera' is now the scene camera."  # the scene had none


def test_blockout_operator_end_to_end(run):
    record = passed(run, "blockout_operator")
    assert 1 <= record["attempts"] <= 2 and record["phase"] == "succeeded", record


def test_a_second_blockout_replaces_or_adds_and_keeps_the_camera(run):
    messages = passed(run, "blockout_replace_and_add")["messages"]
    kept = " Kept the scene camera 'Cam'. Names already taken, so numbered: House.001."
    assert messages["first"] == "Blocked out 4 objects and 1 light in 'ArtForge Block-out'." + kept
    assert messages["replace"] == "Blocked out 4 objects and 1 light in 'ArtForge Block-out', replacing the previous one." + kept
    assert messages["add"].startswith("Blocked out 4 objects and 1 light in 'ArtForge Block-out.001'. Kept the scene camera 'Cam'.")
    assert "Its camera 'Camera' is now the scene camera." in messages["use camera"]
    assert messages["one"].startswith("Blocked out 1 object and 1 light in 'ArtForge Block-out.002'.")
    runs = passed(run, "blockout_second_run")["runs"]
    for record in runs:  # the real model's plans: the message counts what was built
        objects = record["objects"]
        assert record["message"].startswith(f"Blocked out {objects} object{'s' if objects != 1 else ''}"), record
        assert " Kept the scene camera 'Cam'." in record["message"], record


def test_cancel_stops_the_job(run):
    record = passed(run, "cancel_stops_the_job")
    assert record["phase"] == "cancelled" and record["server_state"] == "JOB_STATE_CANCELLED"


def test_a_queued_job_shows_how_many_jobs_are_ahead(run):
    record = passed(run, "a_queued_job_shows_its_place_and_wait")
    assert record["position"] == 1 and record["message"].startswith("Waiting in the queue: 1 job ahead"), record


def test_a_queued_job_shows_about_how_long_it_waits(run):
    # The server estimates from the device time of jobs like those ahead, which it has measured
    # by then: "Waiting in the queue: 1 job ahead, about 20 s".
    record = passed(run, "a_queued_job_shows_its_place_and_wait")
    assert record["estimated_wait_seconds"] and record["estimated_wait_seconds"] > 0, record
    assert record["message"] == queue_message(1, record["estimated_wait_seconds"]) and ", about " in record["message"], record


def test_a_quota_refusal_shows_the_servers_sentence(run):
    record = passed(run, "a_quota_refusal_shows_its_sentence")
    assert record["server_code"] == "RESOURCE_EXHAUSTED" and record["server_said"].startswith("quota max_queued_jobs: "), record
    # The server's own sentence, not "too busy", "failed" or a traceback.
    assert record["message"] == status_sentence(grpc.StatusCode.RESOURCE_EXHAUSTED, record["server_said"], ""), record
    assert record["message"].startswith("Quota max_queued_jobs: ") and record["failed"], record


def test_unreachable_server_and_wrong_token_are_reported_clearly(run):
    for name, words in (("unreachable_server", "Cannot reach the ArtForge server"), ("wrong_token", "did not accept the token")):
        record = passed(run, name)
        for kind in ("describe", "connection"):
            assert words in record[kind], record


def test_online_access_is_respected(run):
    assert "online access is off" in passed(run, "online_access_respected")["message"]


def test_file_load_and_disabling_cancel_jobs(run):
    assert passed(run, "file_load_cancels_jobs")["phase"] == "cancelled"
    assert passed(run, "disable_cancels_jobs")["phase"] == "cancelled"


ARTISTS_WORK = [
    "texture_keeps_the_artists_material_through_save_and_reopen",
    "texture_on_a_linked_duplicate_changes_only_that_object",
    "texture_again_replaces_its_own_material",
    "texture_follows_its_object_not_its_name",
    "texture_for_a_deleted_object_is_kept",
    "a_mesh_without_uvs_gets_a_cube_projection",
    "texture_is_one_undo_step",
    "two_objects_get_textures_at_once",
    "texture_on_the_faces_selected_in_edit_mode",
    "disabled_buttons_say_why",
    "a_very_wide_frame_is_padded_then_cropped",
    "the_capture_leaves_the_render_result_alone",
    "describe_an_empty_scene_without_the_model",
    "a_cut_description_says_so",
    "describe_reports_the_colours_materials_show",
]


@pytest.mark.parametrize("name", ARTISTS_WORK)
def test_the_artists_work_is_never_lost(run, name):
    passed(run, name)
