"""The Krita plugin inside real Krita (Debian's 5.1.5, `installers/setup-krita.sh`) against a real server.

One kritarunner launch runs every check in tests/krita/krita_checks.py on the plugin as users get
it (built into a zip by installers/build-krita-plugin.py and unpacked), against an `artforge serve`
with the tiny image pipeline, the real style models and a token. Each check becomes one test
here; the layers the plugin made are compared with what this process's own client gets for the
very same requests, decoded by pypng.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import png
import pytest

from artforge.models.embedded import STYLE_TRANSFER, fetch
from artforge_client import Client
from artforge_client.v1 import image_pb2, pixels_pb2
from tests.conftest import REPO, start_server, stop_server
from tests.tiny_pipelines import build_all

TOKEN = "krita-token"
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
    "prompt_help_reports_without_a_text_model",
    "docker_buttons_work_on_the_active_document",
]
GENERATED = ["generate_whole_canvas", "generate_in_selection"]


@pytest.fixture(scope="module")
def krita_server(tmp_path_factory):
    if shutil.which("kritarunner") is None or shutil.which("xvfb-run") is None:
        pytest.fail("Krita is not installed: run installers/setup-krita.sh (installers/run-tests.sh does)")
    root = REPO / ".cache" / "tiny-models"
    build_all(root)
    fetch(STYLE_TRANSFER, root, progress=False)
    config = """
[models]
default_text = "none"
preload = ["tiny-sd15"]
backend = "torch"

[images]
default_model = "tiny-sd15"

[limits]
max_steps = 60
"""
    server = start_server(root, tmp_path_factory.mktemp("krita-server"), "--no-fetch", "--token", TOKEN, config=config)
    yield server
    stop_server(server)


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # closed again: nothing listens there


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """The zip as users install it, unpacked; only this machine's wheels, to keep the build quick."""
    work = tmp_path_factory.mktemp("krita-plugin")
    target = f"linux-x86_64-cp{sys.version_info.major}{sys.version_info.minor}"
    built = subprocess.run(
        [sys.executable, str(REPO / "installers" / "build-krita-plugin.py"), "--out", str(work / "dist"), "--targets", target],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    zip_path = Path(built.stdout.strip().splitlines()[-1])
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert "artforge_krita.desktop" in names and "artforge_krita/__init__.py" in names, names[:10]
        archive.extractall(work / "plugin")
    return work / "plugin"


@pytest.fixture(scope="module")
def krita_run(krita_server, plugin, tmp_path_factory) -> tuple[dict[str, dict], Path]:
    out = tmp_path_factory.mktemp("krita-out")
    home = tmp_path_factory.mktemp("krita-home")  # Krita writes its config and resource database here
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_RUNTIME_DIR": str(home / "runtime"),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "krita"), str(plugin)]),
        "ARTFORGE_ADDRESS": krita_server.address,
        "ARTFORGE_TOKEN": TOKEN,
        "ARTFORGE_UNREACHABLE": free_address(),
        "ARTFORGE_OUT": str(out),
    }
    (home / "runtime").mkdir(mode=0o700)
    # Krita's own Python must not see the test venv's packages: the plugin has to bring its own.
    env.pop("VIRTUAL_ENV", None)
    command = ["xvfb-run", "-a", "kritarunner", "-s", "krita_checks", "-f", "run"]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=KRITA_TIMEOUT, check=False)
    results_file = out / "results.json"
    assert results_file.is_file(), (
        f"kritarunner wrote no results (exit {finished.returncode}):\n{finished.stdout[-4000:]}\n{finished.stderr[-4000:]}"
    )
    return {result["name"]: result for result in json.loads(results_file.read_text())}, out


def test_every_check_ran(krita_run):
    results, _ = krita_run
    assert sorted(results) == sorted(CHECKS)


@pytest.mark.parametrize("name", CHECKS)
def test_inside_krita(krita_run, name):
    results, _ = krita_run
    result = results.get(name)
    assert result is not None, f"{name} did not run inside Krita"
    assert result["ok"], result["message"]


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
