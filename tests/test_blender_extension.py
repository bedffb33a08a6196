"""The Blender extension inside real Blender (the bpy 5.0.1 module in .venv-blender, made by
installers/setup-blender.sh), against a real server with the embedded text model, a tiny image
pipeline, and a user whose quota is one queued job. The zip is built by
installers/build-blender-extension.py and installed the way Blender's Install from Disk does it;
tests/blender/run_checks.py runs every check in one Blender process (start-up is the expensive
part) and writes results.json, which the tests below read. One check kills the server mid-job; it
comes back on the same port and folder (tests/restarting_server.py), and the checks after it use
the restarted server. ARTFORGE_BLENDER_CHECKS=name,name runs only those checks (and the install),
for working on them; the tests of the others then fail as not run.
"""

from __future__ import annotations

import io
import os

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

[model.tiny-sd15-depth]  # the depth ControlNet Project Texture from View asks for (by type)
path = "{tiny["tiny-sd15-controlnet"]}"
kind = "controlnet"

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
    config["only"] = os.environ.get("ARTFORGE_BLENDER_CHECKS", "")  # comma-separated check names: run only those (developing)
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


# -- project texture from view ----------------------------------------------------------------------

PROJECTION_SIZE = (160, 96)  # the checks' camera resolution


def gray(png: bytes) -> np.ndarray:
    """A depth PNG's grays in 0..1 (16-bit gray, or 8-bit)."""
    image = PILImage.open(io.BytesIO(png))
    top = 65535.0 if image.mode.startswith("I") else 255.0
    return np.asarray(image, np.float64) / top


def test_the_depth_sent_follows_the_geometry(run):
    record = passed(run, "project_texture_from_view")
    depth = gray((run["_out"] / "projection-depth-sent.png").read_bytes())
    assert depth.shape == (PROJECTION_SIZE[1], PROJECTION_SIZE[0]), "the depth is not at the camera's resolution"
    assert [record["request"]["width"], record["request"]["height"]] == list(PROJECTION_SIZE), record["request"]
    assert record["request"]["controls"] == [{"type": "depth", "model": "", "strength": 1.0, "preprocessor": ""}], record["request"]
    assert record["request"]["mode"] != image_pb2.IMAGE_MODE_IMG2IMG  # txt2img, unless the view's colours are asked for
    pixels, distances = record["pixels"], record["distances"]

    def at(name: str) -> float:
        column, row = pixels[name]
        return depth[row, column]

    # Nearer is brighter: the cube's front before the ground behind it, the near ground before the far.
    order = sorted(pixels, key=lambda name: distances[name])
    assert order == ["cube_front", "ground_near", "ground_far", "ground_behind_cube"], distances
    values = [at(name) for name in order]
    assert values == sorted(values, reverse=True) and values[-1] > 0 and len(set(values)) == 4, dict(zip(order, values, strict=True))
    # Above the ground's far edge the camera sees nothing: black.
    assert (depth[0] == 0).all() and depth.max() == 1.0
    # Up a column of ground beside the cube, the ground goes away: darker row by row, then nothing.
    column = depth[:, pixels["ground_near"][0]]
    ground = column[column > 0]
    assert len(ground) > PROJECTION_SIZE[1] // 2 and (column[: -len(ground)] == 0).all(), column
    assert (np.diff(ground) > 0).all(), "the depth does not rise steadily towards the camera along the ground"
    # Nothing but the cube is brighter than the ground just in front of it.
    cube_column, cube_row = pixels["cube_front"]
    assert depth[cube_row, cube_column] > depth[pixels["ground_behind_cube"][1], cube_column]


def test_the_saved_depth_is_what_was_sent(run):
    record = passed(run, "project_texture_from_view")
    assert record["depth_file_is_sent"] and record["depth_image_is_sent"], record
    assert record["depth_path"] == str(run["_out"] / "projection depth Cam.png"), "not next to the .blend"
    assert record["depth_image_size"] == list(PROJECTION_SIZE), record
    assert f"Depth: {record['depth_path']}" in record["message"]


def test_the_projection_is_the_servers_picture_through_the_camera_uv_map(run, server):
    record = passed(run, "project_texture_from_view")
    assert record["uv_map"] == "ArtForge Projection" and "ArtForge Projection" in record["uv_maps"], record
    assert set(record["links"]) == {
        "UVMAP.UV -> TEX_IMAGE.Vector",
        "TEX_IMAGE.Color -> BSDF_PRINCIPLED.Base Color",
        "BSDF_PRINCIPLED.BSDF -> OUTPUT_MATERIAL.Surface",
    }, record["links"]
    assert record["image"]["size"] == list(PROJECTION_SIZE) and record["image"]["packed"], record["image"]
    # The request Blender sent, sent again: the same pixels, and the depth control is what makes them.
    request = image_pb2.GenerateImageRequest.FromString((run["_out"] / "projection-request.bin").read_bytes())
    with server.client(token=TOKEN) as client:
        again = client.generate_image(request)
        again.wait()
        request.ClearField("controls")
        plain = client.generate_image(request)
        plain.wait()
    blender = np.load(run["_out"] / "projection-result.npy")[..., :3]
    assert np.array_equal(blender, decoded(again.images[0].data)), "Blender's projected picture differs from the server's"
    assert np.abs(blender.astype(int) - decoded(plain.images[0].data)).mean() > 1, "the depth control made no difference"


def test_the_artists_material_and_uv_maps_are_kept(run):
    record = passed(run, "project_texture_from_view")
    assert record["slots"][0] == "Hand Made" and record["slots"][1].startswith("AF Projection"), record["slots"]
    assert record["faces_use"] == [record["projection_slot"]] == [1], record
    assert record["hand_made_intact"] and record["earlier_uvs_intact"], record
    assert record["active_uv"] == ["UVMap", "UVMap"] and record["render_uv"] == ["UVMap", "UVMap"], record
    assert record["ground_untouched"], "the object not selected changed"
    assert record["render_settings"][0] == record["render_settings"][1], "the depth render left the scene's settings changed"


def test_projected_uvs_put_each_vertex_where_the_camera_sees_it(run):
    record = passed(run, "projected_uvs_match_the_camera")
    for name in ("Ground", "Box", "again"):
        assert record[name]["loops_in_view"] > 0 and record[name]["worst_pixels"] < 1.0, (name, record[name])
    assert record["Ground"]["in_view"] < record["Ground"]["vertices"], "the ground should run out of the frame"
    assert record["Box"]["in_view"] == record["Box"]["vertices"] == 8
    assert record["again"]["uv_maps"] == ["UVMap", "ArtForge Projection"] and record["again"]["active"] == "UVMap", record["again"]
    assert passed(run, "project_texture_from_view")["uv_errors"]["Box"]["worst_pixels"] < 1.0


def test_the_bake_fills_the_meshs_own_uv_map(run):
    record = passed(run, "project_and_bake")
    assert record["slots"][0] == "Hand Made" and record["slots"][1].startswith("AF Projection"), record["slots"]
    assert record["slots"][2].startswith("AF Baked") and record["faces_use"] == [1], record
    assert record["uv_node"] == "UVMap" and record["image"]["size"] == [256, 256] and record["image"]["packed"], record
    assert record["stand_in_gone"] and record["render_engine"][0] == record["render_engine"][1], record
    assert 0.25 < record["filled"] < 0.95, record["filled"]  # the cube's net, not the whole image
    assert sorted(record["faces"]) == ["-1,0,0", "0,-1,0", "0,0,-1", "0,0,1", "0,1,0", "1,0,0"], record["faces"]
    for key, face in record["faces"].items():
        own, seen = np.load(run["_out"] / f"bake-face-{key}.npy")
        assert face["texels"] > 500 and face["alpha"] == [255, 255], (key, face)  # filled, every texel
        # Every texel of the face holds the projection's colour at that point of the surface, give
        # or take the bake's sampling; the same texels against the projection elsewhere differ.
        assert np.abs(own - seen).mean() < 6, (key, np.abs(own - seen).mean())
        assert np.abs(own - np.roll(seen, 37, axis=0)).mean() > 4 * np.abs(own - seen).mean(), key


def test_projecting_again_replaces_only_its_own_projection(run):
    record = passed(run, "project_again_replaces_its_projection")
    first, second = record["first"], record["second"]
    assert first["uv_maps"] == ["UVMap", "ArtForge Projection", "ArtForge Projection 2"], first
    assert second["uv_maps"] == first["uv_maps"] and len(second["slots"]) == len(first["slots"]) == 1, second
    assert len(second["materials"]) == 1 and second["materials"] != first["materials"], record
    assert "in place of the earlier projection" in second["message"], second["message"]
    assert first["request"] == {"mode": image_pb2.IMAGE_MODE_UNSPECIFIED, "strength": 0, "init": 0}, first["request"]
    assert second["request"]["mode"] == image_pb2.IMAGE_MODE_IMG2IMG and second["request"]["init"] > 1000, second["request"]
    assert second["request"]["strength"] == pytest.approx(0.75), second["request"]


def test_projection_buttons_say_why(run):
    found = passed(run, "projection_buttons_say_why")
    assert "no camera" in found["nothing selected, no camera"] and "mesh to project onto" in found["nothing selected"], found
    assert "Lamp is a light" in found["a light"] and "perspective or orthographic" in found["a panoramic camera"], found
    assert "sees nothing" in found["the camera sees nothing"], found


def test_a_projection_waits_in_the_queue_and_cancels(run):
    record = passed(run, "projection_queued_then_cancelled")
    assert record["phase"] == "cancelled" and record["queued"], record


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
