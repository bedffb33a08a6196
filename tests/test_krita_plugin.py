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
    "cancel_stops_the_job",
    "closing_the_document_mid_job_keeps_the_result_in_history",
    "unreachable_server_gives_a_sentence",
    "wrong_token_gives_a_sentence",
    "help_me_write_this_keeps_the_idea",
    "prompt_help_reports_without_a_text_model",
    "docker_buttons_work_on_the_active_document",
    "a_stale_message_never_overwrites_a_newer_one",
    "a_seed_above_2_31_round_trips",
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
    "manual_in_the_plugin_manager",
]
GUI_CHECK = REPO / "tests" / "krita" / "gui_check"


@pytest.fixture(scope="module")
def krita_server(tmp_path_factory):
    if shutil.which("kritarunner") is None or shutil.which("xvfb-run") is None:
        pytest.fail("Krita is not installed: run installers/setup-krita.sh (installers/run-tests.sh does)")
    root = REPO / ".cache" / "tiny-models"
    build_all(root)
    fetch(STYLE_TRANSFER, root, progress=False)
    config = f"""
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


@pytest.mark.parametrize("name", GENERATED)
def test_generated_layer_holds_the_servers_pixels(krita_run, krita_server, name):
    """Replay the plugin's request with this process's client: the layer must be the server's PNG, cropped, in BGRA."""
    results, out = krita_run
    assert results[name]["ok"], results[name]["message"]
    request = image_pb2.GenerateImageRequest.FromString((out / f"{name}.request").read_bytes())
    meta = json.loads((out / f"{name}.json").read_text())
    x, y, width, height = meta["region"]
    assert meta["bounds"] == meta["region"], f"layer bounds {meta['bounds']} != region {meta['region']}"
    assert request.width % 8 == 0 and request.height % 8 == 0 and request.width >= width and request.height >= height
    assert request.output_format == pixels_pb2.OUTPUT_FORMAT_PNG8
    with Client(krita_server.address, token=TOKEN) as client:
        stream = client.generate_image(request)
        stream.wait()
    colour = next(image for image in stream.images if image.role == pixels_pb2.IMAGE_ROLE_COLOR)
    png_width, png_height, rows, info = png.Reader(bytes=colour.data).read()
    server = np.vstack([np.asarray(row, np.uint8) for row in rows]).reshape(png_height, png_width, info["planes"])
    server = server[:height, :width]
    expected = np.empty((height, width, 4), np.uint8)
    expected[..., 0], expected[..., 1], expected[..., 2] = server[..., 2], server[..., 1], server[..., 0]
    expected[..., 3] = server[..., 3] if info["planes"] == 4 else 255
    layer = np.frombuffer((out / f"{name}.pixels").read_bytes(), np.uint8).reshape(height, width, 4)
    assert (x, y) == tuple(meta["bounds"][:2])
    differing = int((layer != expected).any(axis=-1).sum())
    assert differing == 0, f"{differing} of {width * height} pixels differ from the server's result"
