"""The Krita plugin inside real Krita (Debian's 5.1.5, `installers/setup-krita.sh`) against a real server.

The plugin is installed as users install it: the zip from installers/build-krita-plugin.py goes
through Krita's own importer (tests/krita/krita_install.py, in kritarunner) into a new user's
Krita folder. Then one kritarunner launch runs every check in tests/krita/krita_checks.py on that
installed plugin, against an `artforge serve` with the tiny image pipeline, the real style models,
a token and a user whose quota is one queued job; the layers the plugin made are compared with
what this process's own client gets for the very same requests, decoded by pypng. The last check kills that server mid-job; it comes
back on the same port and folder (tests/restarting_server.py). The Krita GUI starts on a virtual
screen with the importer's settings and tests/krita/gui_check reports what its window shows.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import png
import pytest

from artforge.models.embedded import STYLE_TRANSFER, fetch
from artforge_client import Client
from artforge_client.v1 import image_pb2, pixels_pb2
from tests.conftest import REPO
from tests.restarting_server import RestartingServer
from tests.tiny_pipelines import build_all

TOKEN = "krita-token"
QUOTA_TOKEN = "krita-quota-token"  # a user who may have one job queued at once
KRITA_TIMEOUT = 300
CHECKS = [
    "bundled_libraries_load",
    "docker_builds_and_connects",
    "settings_persist",
    "generate_whole_canvas",
    "generate_in_selection",
    "fill_changes_only_the_selection",
    "stylize_with_a_real_style_model",
    "refine_at_strength_zero_keeps_8_bit",
    "refine_round_trips_16_bit_srgb",
    "refine_round_trips_16_bit_linear",
    "refine_round_trips_16_bit_float",
    "refine_round_trips_32_bit_float",
    "a_gray_document_is_refused_clearly",
    "a_scribble_layer_steers_generate_as_its_pixels",
    "a_missing_control_layer_is_refused_clearly",
    "from_canvas_canny_makes_a_control_layer",
    "cancel_stops_the_job",
    "closing_the_document_mid_job_keeps_the_result_in_history",
    "unreachable_server_gives_a_sentence",
    "wrong_token_gives_a_sentence",
    "help_me_write_this_keeps_the_idea",
    "prompt_help_reports_without_a_text_model",
    "docker_buttons_work_on_the_active_document",
    "a_stale_message_never_overwrites_a_newer_one",
    "a_seed_above_2_31_round_trips",
    "docker_controls_from_canvas_and_generate",
    "progress_resets_on_cancel",
    "a_queued_job_shows_its_place_and_wait",
    "a_quota_refusal_shows_its_sentence",
    "a_job_goes_on_after_the_server_restarts",
]
GENERATED = ["generate_whole_canvas", "generate_in_selection"]
GUI_CHECKS = [
    "docker_in_the_default_layout",
    "every_control_inside_the_docked_area",
    "lists_filled_on_start",
    "plugin_loaded_from_the_plugin_managers_folder",
    "menus_named_as_the_readme_says",
    "a_menu_action_runs_in_the_docker",
    "fits_a_docked_height_of_400_px",
    "a_control_row_fits_the_dock_column",
    "manual_in_the_plugin_manager",
]
GUI_CHECK = REPO / "tests" / "krita" / "gui_check"


@pytest.fixture(scope="module")
def krita_server(tmp_path_factory):
    if shutil.which("kritarunner") is None or shutil.which("xvfb-run") is None:
        pytest.fail("Krita is not installed: run installers/setup-krita.sh (installers/run-tests.sh does)")
    root = REPO / ".cache" / "tiny-models"
    paths = build_all(root)
    fetch(STYLE_TRANSFER, root, progress=False)
    # The tiny SD 1.5 ControlNet (registered as tiny-sd15-depth from controlnets/) once more as a
    # scribble one, for the control layer checks: the server then lists the types scribble and depth.
    config = f"""
[model.tiny-scribble]
kind = "controlnet"
path = "{paths["tiny-sd15-controlnet"]}"
control = "scribble"

[models]
default_text = "none"
preload = ["tiny-sd15"]
backend = "torch"

[images]
default_model = "tiny-sd15"

[limits]
max_steps = 60

[users.limited]
token = "{QUOTA_TOKEN}"
role = "artist"
max_queued_jobs = 1
"""
    server = RestartingServer(root, tmp_path_factory.mktemp("krita-server"), "--no-fetch", "--token", TOKEN, config=config)
    yield server
    server.stop()


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # closed again: nothing listens there


@pytest.fixture(scope="module")
def krita_home(tmp_path_factory) -> Path:
    """A new user's home: Krita writes its configuration, resources and the installed plugin here."""
    home = tmp_path_factory.mktemp("krita-home")
    (home / "runtime").mkdir(mode=0o700)
    (home / ".config").mkdir()
    resources(home).mkdir(parents=True)  # Krita makes it at its first start; the importer expects it
    return home


def resources(home: Path) -> Path:
    """The Krita GUI's resources folder (getAppDataLocation) on Linux."""
    return home / ".local" / "share" / "krita"


def krita_env(home: Path, out: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_RUNTIME_DIR": str(home / "runtime"),
        "ARTFORGE_OUT": str(out),
        **extra,
    }
    # Krita's own Python must not see the test venv's packages: the plugin has to bring its own.
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


def run_krita(command: list[str], env: dict[str, str], result: Path) -> None:
    """Run Krita under xvfb-run until it exits; past KRITA_TIMEOUT, the whole process group goes,
    since a Krita left behind would take over the next start (Krita runs one instance per user)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=KRITA_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    output = f"{stdout[-4000:]}\n{stderr[-4000:]}"
    assert result.is_file(), f"Krita wrote no {result.name} (exit {process.returncode}):\n{output}"


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    """The zip as users get it; only this machine's wheels, to keep the build quick."""
    out = tmp_path_factory.mktemp("krita-dist")
    target = f"linux-x86_64-cp{sys.version_info.major}{sys.version_info.minor}"
    built = subprocess.run(
        [sys.executable, str(REPO / "installers" / "build-krita-plugin.py"), "--out", str(out), "--targets", target],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def installed(plugin_zip, krita_home, tmp_path_factory) -> dict:
    """Tools > Scripts > Import Python Plugin from File..., answered Yes: Krita's own importer, in kritarunner.

    kritarunner keeps its settings in kritarunnerrc; the [python] keys the importer's activation
    wrote there go into kritarc, where the Krita GUI (and its Python Plugin Manager) reads them."""
    out = tmp_path_factory.mktemp("krita-install")
    env = krita_env(krita_home, out, ARTFORGE_ZIP=str(plugin_zip), ARTFORGE_RESOURCES=str(resources(krita_home)))
    env["PYTHONPATH"] = str(REPO / "tests" / "krita")
    run_krita(["xvfb-run", "-a", "kritarunner", "-s", "krita_install", "-f", "run"], env, out / "install.json")
    report = json.loads((out / "install.json").read_text())
    runner = read_settings(krita_home / ".config" / "kritarunnerrc")
    kritarc = read_settings(krita_home / ".config" / "kritarc")
    kritarc["python"] = dict(runner["python"]) if runner.has_section("python") else {}
    write_settings(kritarc, krita_home / ".config" / "kritarc")
    return report


def read_settings(path: Path) -> configparser.ConfigParser:
    """A Qt settings file (kritarc), keys as they are written."""
    settings = configparser.ConfigParser(interpolation=None)
    settings.optionxform = str
    settings.read(path)
    return settings


def write_settings(settings: configparser.ConfigParser, path: Path) -> None:
    with path.open("w") as file:
        settings.write(file, space_around_delimiters=False)


def test_the_zip_imports_through_kritas_own_importer(installed, krita_home):
    assert "error" not in installed, installed.get("error")
    assert [plugin["ui_name"] for plugin in installed["imported"]] == ["ArtForge"]
    assert installed["enabled"] == {"artforge_krita": "true"}, installed["enabled"]
    pykrita = resources(krita_home) / "pykrita"
    for path in ("artforge_krita.desktop", "artforge_krita/__init__.py", "artforge_krita/Manual.html"):
        assert (pykrita / path).is_file(), f"{path} was not installed"
    assert (resources(krita_home) / "actions" / "artforge_krita.action").is_file()


@pytest.fixture(scope="module")
def krita_run(krita_server, server, installed, krita_home, tmp_path_factory) -> tuple[dict[str, dict], Path]:
    """Every check in krita_checks.py, in one kritarunner, on the plugin as the importer installed it;
    `server` is the suite's shared one, with the embedded text model for Help me write this."""
    assert "error" not in installed, installed.get("error")
    out = tmp_path_factory.mktemp("krita-out")
    env = krita_env(
        krita_home,
        out,
        ARTFORGE_ADDRESS=krita_server.address,
        ARTFORGE_TOKEN=TOKEN,
        ARTFORGE_QUOTA_TOKEN=QUOTA_TOKEN,
        ARTFORGE_SERVER_PID=str(krita_server.pid),
        ARTFORGE_TEXT_ADDRESS=server.address,
        ARTFORGE_UNREACHABLE=free_address(),
    )
    folders = [REPO / "tests" / "krita", REPO / "tests", resources(krita_home) / "pykrita"]
    env["PYTHONPATH"] = os.pathsep.join(str(folder) for folder in folders)
    run_krita(["xvfb-run", "-a", "kritarunner", "-s", "krita_checks", "-f", "run"], env, out / "results.json")
    return {result["name"]: result for result in json.loads((out / "results.json").read_text())}, out


@pytest.fixture(scope="module")
def krita_gui(krita_server, installed, krita_home, tmp_path_factory) -> tuple[dict[str, dict], Path]:
    """The Krita GUI on a 1600x1000 virtual screen, as a new user starts it after the import and a
    restart, with tests/krita/gui_check beside the plugin to report what the window shows."""
    assert "error" not in installed, installed.get("error")
    out = tmp_path_factory.mktemp("krita-gui")
    pykrita = resources(krita_home) / "pykrita"
    shutil.copytree(GUI_CHECK / "artforge_gui_check", pykrita / "artforge_gui_check", dirs_exist_ok=True)
    shutil.copy(GUI_CHECK / "artforge_gui_check.desktop", pykrita)
    kritarc = read_settings(krita_home / ".config" / "kritarc")
    kritarc["python"]["enable_artforge_gui_check"] = "true"
    kritarc["artforge"] = {"address": krita_server.address, "token": TOKEN}  # as the Server dialog saves them
    write_settings(kritarc, krita_home / ".config" / "kritarc")
    command = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "krita", "--nosplash"]
    run_krita(command, krita_env(krita_home, out), out / "gui.json")
    return {result["name"]: result for result in json.loads((out / "gui.json").read_text())}, out


def assert_passed(results: dict[str, dict], name: str) -> None:
    result = results.get(name)
    assert result is not None, f"{name} did not run in Krita; ran: {sorted(results)}"
    assert result["ok"], result["message"]


@pytest.mark.parametrize("name", GUI_CHECKS)
def test_in_the_krita_window(krita_gui, name):
    assert_passed(krita_gui[0], name)


def test_the_window_screenshot_shows_the_docker(krita_gui):
    _, out = krita_gui
    width, height, _, _ = png.Reader(filename=str(out / "krita-docker.png")).read()
    assert width >= 200 and height >= 600, (width, height)


def test_every_check_ran(krita_run):
    results, _ = krita_run
    assert sorted(results) == sorted(CHECKS)


@pytest.mark.parametrize("name", CHECKS)
def test_inside_krita(krita_run, name):
    assert_passed(krita_run[0], name)


def test_a_queued_job_shows_about_how_long_it_waits(krita_run):
    # The status line of a job with 1 job ahead (a_queued_job_shows_its_place_and_wait holds the
    # place); the server estimates from the device time of the jobs like those ahead it has run.
    status = krita_run[0]["a_queued_job_shows_its_place_and_wait"]["message"]
    assert re.fullmatch(r"Waiting in the queue: 1 job ahead, about (\d+ s|\d+ min|\d+ h|\d+ h \d+ min)", status), status


def test_a_quota_refusal_shows_the_servers_sentence(krita_run):
    # a_quota_refusal_shows_its_sentence checks it is the server's sentence word for word.
    result = krita_run[0]["a_quota_refusal_shows_its_sentence"]
    assert result["ok"] and result["message"].startswith("Quota max_queued_jobs: "), result["message"]


def test_the_server_came_back_after_the_kill(krita_run, krita_server):
    assert krita_server.restarts == 1, krita_server.restart_error


def server_bgra(address: str, request, width: int, height: int) -> np.ndarray:
    """Run `request` (GenerateImageRequest or PreprocessRequest) with this process's client; its
    8-bit PNG, decoded by pypng and cropped to width x height, as Krita's BGRA (gray as gray, opaque without alpha)."""
    with Client(address, token=TOKEN) as client:
        submit = client.preprocess if isinstance(request, image_pb2.PreprocessRequest) else client.generate_image
        stream = submit(request)
        stream.wait()
    colour = next(image for image in stream.images if image.role == pixels_pb2.IMAGE_ROLE_COLOR)
    png_width, png_height, rows, info = png.Reader(bytes=colour.data).read()
    planes = info["planes"]
    server = np.vstack([np.asarray(row, np.uint8) for row in rows]).reshape(png_height, png_width, planes)[:height, :width]
    rgb = server[..., :3] if planes >= 3 else np.repeat(server[..., :1], 3, axis=-1)
    expected = np.empty((height, width, 4), np.uint8)
    expected[..., 0], expected[..., 1], expected[..., 2] = rgb[..., 2], rgb[..., 1], rgb[..., 0]
    expected[..., 3] = server[..., -1] if planes in (2, 4) else 255
    return expected


def dumped(out: Path, name: str, message_type) -> tuple:
    """A check's dump: the request, the region and the layer's pixels there (8-bit BGRA)."""
    request = message_type.FromString((out / f"{name}.request").read_bytes())
    meta = json.loads((out / f"{name}.json").read_text())
    assert meta["bounds"] == meta["region"], f"layer bounds {meta['bounds']} != region {meta['region']}"
    _, _, width, height = meta["region"]
    layer = np.frombuffer((out / f"{name}.pixels").read_bytes(), np.uint8).reshape(height, width, 4)
    return request, meta["region"], layer


def differing(layer: np.ndarray, expected: np.ndarray) -> int:
    return int((layer != expected).any(axis=-1).sum())


@pytest.mark.parametrize("name", GENERATED)
def test_generated_layer_holds_the_servers_pixels(krita_run, krita_server, name):
    """Replay the plugin's request with this process's client: the layer must be the server's PNG, cropped, in BGRA."""
    results, out = krita_run
    assert results[name]["ok"], results[name]["message"]
    request, (_, _, width, height), layer = dumped(out, name, image_pb2.GenerateImageRequest)
    assert request.width % 8 == 0 and request.height % 8 == 0 and request.width >= width and request.height >= height
    assert request.output_format == pixels_pb2.OUTPUT_FORMAT_PNG8
    wrong = differing(layer, server_bgra(krita_server.address, request, width, height))
    assert wrong == 0, f"{wrong} of {width * height} pixels differ from the server's result"


def test_a_scribble_control_layer_reaches_the_server_as_its_pixels(krita_run, krita_server):
    """The drawn layer a_scribble_layer_steers_generate_as_its_pixels chose as a scribble control:
    the control image sent is that layer's pixels over the job's region (RGBA, alpha kept, padded
    with transparency to the job's size, as built here from the layer's own bytes). The request
    with the control image built here gives the very pixels of the plugin's layer; with an empty
    layer in its place, other pixels: the server painted from the layer's pixels."""
    name = "a_scribble_layer_steers_generate_as_its_pixels"
    results, out = krita_run
    assert results[name]["ok"], results[name]["message"]
    request, (_, _, width, height), layer = dumped(out, name, image_pb2.GenerateImageRequest)
    drawn = np.frombuffer((out / f"{name}.control").read_bytes(), np.uint8).reshape(height, width, 4)
    assert (drawn[..., 3] == 0).any() and (drawn[..., 3] == 255).any() and (drawn[..., 3] == 128).any(), "not the drawn layer"
    padded = np.zeros((request.height, request.width, 4), np.uint8)
    padded[:height, :width] = drawn[..., [2, 1, 0, 3]]
    mine = pixels_pb2.Image(
        encoding=pixels_pb2.IMAGE_ENCODING_RAW,
        width=request.width,
        height=request.height,
        channels=4,
        dtype=pixels_pb2.PIXEL_TYPE_UINT8,
        data=padded.tobytes(),
    )
    (control,) = request.controls
    assert (control.type, control.preprocessor, control.model) == ("scribble", "scribble", "")
    assert (control.strength, control.start, control.end) == (1.0, 0.0, 1.0)
    assert control.image == mine, "the control image sent is not the layer's pixels over the job's region"

    replay = image_pb2.GenerateImageRequest()
    replay.CopyFrom(request)
    replay.controls[0].image.CopyFrom(mine)
    wrong = differing(layer, server_bgra(krita_server.address, replay, width, height))
    assert wrong == 0, f"{wrong} of {width * height} pixels differ from the server's result for the layer's pixels"
    replay.controls[0].image.data = bytes(len(mine.data))  # the same layer, empty
    changed = differing(layer, server_bgra(krita_server.address, replay, width, height))
    assert changed > width * height // 4, f"an empty control layer changed only {changed} of {width * height} pixels"


def test_from_canvas_canny_layer_holds_the_servers_edges(krita_run, krita_server):
    """From canvas (canny): the layer it made holds what a Preprocess call of this process's client
    gives for the canvas pixels the check read (a gray PNG, as opaque gray); the request sent was
    those pixels at their size."""
    name = "from_canvas_canny_makes_a_control_layer"
    results, out = krita_run
    assert results[name]["ok"], results[name]["message"]
    request, (_, _, width, height), layer = dumped(out, name, image_pb2.PreprocessRequest)
    canvas = np.frombuffer((out / f"{name}.canvas").read_bytes(), np.uint8).reshape(height, width, 4)
    mine = image_pb2.PreprocessRequest(
        image=pixels_pb2.Image(
            encoding=pixels_pb2.IMAGE_ENCODING_RAW,
            width=width,
            height=height,
            channels=4,
            dtype=pixels_pb2.PIXEL_TYPE_UINT8,
            data=canvas[..., [2, 1, 0, 3]].tobytes(),
        ),
        preprocessor="canny",
        output_format=pixels_pb2.OUTPUT_FORMAT_PNG8,
    )
    assert request.image == mine.image and request.preprocessor == "canny" and request.output_format == mine.output_format
    expected = server_bgra(krita_server.address, mine, width, height)
    wrong = differing(layer, expected)
    assert wrong == 0, f"{wrong} of {width * height} pixels differ from the server's canny result"
    edges = int((layer[..., 0] == 255).sum())
    assert 0 < edges < width * height // 2 and (layer[..., 3] == 255).all(), f"{edges} edge pixels"
