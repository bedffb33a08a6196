"""Checks that run inside real Krita: `kritarunner -s krita_checks -f run`, driven by tests/test_krita_plugin.py.

PYTHONPATH holds this folder and the installed plugin. The environment names the server
(ARTFORGE_ADDRESS, ARTFORGE_TOKEN, and ARTFORGE_SERVER_PID, which the last check kills mid-job
for pytest to start it again), the token of a user with a quota of one queued job on it
(ARTFORGE_QUOTA_TOKEN), a server with the embedded text model (ARTFORGE_TEXT_ADDRESS),
an address where nothing listens (ARTFORGE_UNREACHABLE) and the output folder (ARTFORGE_OUT):
results.json gets one {"name", "ok", "message"} per check, and each generated layer is dumped
with the request that made it, so pytest can replay the request with its own client and compare
pixels decoded by an independent PNG reader.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import time
import traceback
from array import array
from pathlib import Path

import artforge_krita
from host_jobs import Submitted  # tests/, on PYTHONPATH with this folder
from krita import Krita, Selection

OUT = Path(os.environ.get("ARTFORGE_OUT", "."))
RESULTS: list[dict] = []
CHECKS: list = []
TIMEOUT = 120.0


def check(function):
    def run() -> None:
        try:
            message = function() or ""
            RESULTS.append({"name": function.__name__, "ok": True, "message": message})
        except Exception as error:
            RESULTS.append({"name": function.__name__, "ok": False, "message": f"{error!r}\n{traceback.format_exc()}"})

    run.__name__ = function.__name__
    CHECKS.append(run)
    return run


def settings(**changes):
    from artforge_client.server import ServerSettings

    values = {"address": os.environ["ARTFORGE_ADDRESS"], "token": os.environ.get("ARTFORGE_TOKEN", "")}
    return ServerSettings(**{**values, **changes})


def params(**changes):
    from artforge_krita.jobs import Params

    return Params(**{"prompt": "a lighthouse in fog", "steps": 2, "seed": 7, "strength": 0.6, **changes})


def wait(controller):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        snapshot = controller.poll()
        if snapshot.phase.finished:
            controller.poll()  # the result is pasted on the poll that sees the finish
            return snapshot
        time.sleep(0.02)
    raise AssertionError(f"job did not finish in {TIMEOUT} s: {controller.poll()}")


def wait_job(job):
    deadline = time.monotonic() + TIMEOUT
    while not job.state.snapshot().phase.finished:
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.02)
    return job.state.snapshot()


def new_document(width: int, height: int, depth: str = "U8", profile: str = "", model: str = "RGBA"):
    document = Krita.instance().createDocument(width, height, "artforge-test", model, depth, profile, 72.0)
    layer = document.createNode("paint", "paintlayer")
    document.rootNode().addChildNode(layer, None)
    return document, layer


def pattern(width: int, height: int, depth: str) -> bytes:
    """A gradient covering the whole range in every channel, alpha opaque, in Krita's layout for `depth`."""
    values = []
    for y in range(height):
        for x in range(width):
            r = x / max(width - 1, 1)
            g = y / max(height - 1, 1)
            b = ((x * 7 + y * 3) % 64) / 63
            values.extend((b, g, r, 1.0) if depth in ("U8", "U16") else (r, g, b, 1.0))
    if depth == "U8":
        return bytes(round(v * 255) for v in values)
    if depth == "U16":
        return array("H", [round(v * 65535) for v in values]).tobytes()
    return struct.pack(f"<{len(values)}{'e' if depth == 'F16' else 'f'}", *values)


def controller(**setting_changes):
    from artforge_krita.krita_adapter import Controller

    return Controller(settings(**setting_changes))


def dump(name: str, node, region, request) -> None:
    """The layer's pixels in its bounds and the request that made them, for pytest to compare."""
    data = bytes(node.pixelData(region.x, region.y, region.width, region.height))
    (OUT / f"{name}.pixels").write_bytes(data)
    (OUT / f"{name}.request").write_bytes(request.SerializeToString())
    bounds = node.bounds()
    meta = {
        "region": [region.x, region.y, region.width, region.height],
        "bounds": [bounds.x(), bounds.y(), bounds.width(), bounds.height()],
    }
    (OUT / f"{name}.json").write_text(json.dumps(meta))


def assert_layer_at(node, region) -> None:
    bounds = node.bounds()
    got = (bounds.x(), bounds.y(), bounds.width(), bounds.height())
    assert got == (region.x, region.y, region.width, region.height), f"layer bounds {got}, expected {region}"


# -- checks ----------------------------------------------------------------------------------------


@check
def bundled_libraries_load():
    import grpc

    assert artforge_krita.PROBLEM is None, artforge_krita.PROBLEM
    assert "/vendor/linux-x86_64-cp311/" in grpc.__file__.replace("\\", "/"), f"grpc came from {grpc.__file__}"
    return grpc.__file__


def settle(docker, done, timeout: float = TIMEOUT) -> None:
    """Poll the docker as its timer would until done() holds (no Qt event loop runs during a check)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out; status: {docker.status.text()}"
        docker.poll()
        time.sleep(0.02)
    docker.poll()


def new_docker():
    from artforge_krita.docker import ArtForgeDocker
    from artforge_krita.krita_adapter import save_settings

    save_settings(settings())
    docker = ArtForgeDocker()
    settle(docker, lambda: "connection" not in docker.side_jobs, 30)  # it tests the connection as it starts
    return docker


@check
def docker_builds_and_connects():
    docker = new_docker()
    # No Test Connection pressed: the docker asked the server for its lists as it started.
    assert docker.style.count() >= 20, f"{docker.style.count()} styles; status: {docker.status.text()}"
    assert docker.status.text().startswith("Connected to ArtForge"), docker.status.text()
    assert docker.model.itemText(0) == "Server default" and docker.model.itemData(0) == "", docker.model.itemText(0)
    docker.open_server_settings()
    assert docker.server.address.text() == os.environ["ARTFORGE_ADDRESS"], "the Server dialog did not show the saved settings"
    docker.server.reject()
    return docker.status.text()


@check
def settings_persist():
    from artforge_krita.krita_adapter import load_settings, save_settings

    wanted = settings(address="studio-gpu:50051", token="t0ken", tls=True, certificate="/tmp/ca.pem")
    save_settings(wanted)
    assert load_settings() == wanted, load_settings()
    save_settings(settings())


@check
def generate_whole_canvas():
    document, layer = new_document(70, 42)
    run = controller()
    job = run.start("generate", params(), document, layer)
    snapshot = wait(run)
    assert snapshot.phase.value == "succeeded", snapshot.message
    node = run.result_node
    assert node is not None and node.name() == "ArtForge"
    assert_layer_at(node, job.target.region)
    assert job.target.region.width == 70 and job.target.region.height == 42
    assert not any(n.name() == "ArtForge preview" for n in document.rootNode().childNodes()), "preview layer left behind"
    dump("generate_whole_canvas", node, job.target.region, job.request)
    document.close()


@check
def generate_in_selection():
    document, layer = new_document(96, 64)
    selection = Selection()
    selection.select(13, 9, 37, 21, 255)
    document.setSelection(selection)
    run = controller()
    job = run.start("generate", params(seed=11), document, layer)
    snapshot = wait(run)
    assert snapshot.phase.value == "succeeded", snapshot.message
    region = job.target.region
    assert (region.x, region.y, region.width, region.height) == (13, 9, 37, 21), region
    assert_layer_at(run.result_node, region)
    dump("generate_in_selection", run.result_node, region, job.request)
    # The history pastes the same pixels again as a new layer.
    again = run.paste(run.history[0], document)
    assert bytes(again.pixelData(13, 9, 37, 21)) == bytes(run.result_node.pixelData(13, 9, 37, 21))
    document.close()


@check
def fill_changes_only_the_selection():
    document, layer = new_document(64, 48)
    layer.setPixelData(pattern(64, 48, "U8"), 0, 0, 64, 48)
    # Coverage: a fully selected block, a feathered (half) band above it, nothing elsewhere.
    coverage = bytearray(40 * 24)
    for y in range(24):
        for x in range(40):
            coverage[y * 40 + x] = 255 if 8 <= x < 32 and 6 <= y < 18 else 128 if 4 <= x < 36 and 3 <= y < 6 else 0
    selection = Selection()
    selection.setPixelData(bytes(coverage), 12, 10, 40, 24)
    document.setSelection(selection)
    run = controller()
    job = run.start("fill", params(strength=1.0, seed=3), document, layer)
    snapshot = wait(run)
    assert snapshot.phase.value == "succeeded", snapshot.message
    region = job.target.region
    # The selection's bounds are the non-empty part of the coverage: columns 4-35, rows 3-17.
    assert (region.x, region.y, region.width, region.height) == (16, 13, 32, 15), region
    before = bytes(layer.pixelData(16, 13, 32, 15))
    after = bytes(run.result_node.pixelData(16, 13, 32, 15))
    kept = changed = full = 0
    for index, value in enumerate(job.target.coverage):
        pixel_before, pixel_after = before[index * 4 : index * 4 + 4], after[index * 4 : index * 4 + 4]
        if value == 0:
            assert pixel_after == pixel_before, f"unselected pixel {index} changed: {pixel_before.hex()} -> {pixel_after.hex()}"
            kept += 1
        elif value == 255:
            full += 1
            changed += pixel_after != pixel_before
    assert kept > 0 and changed > full * 0.9, f"{changed} of {full} selected pixels changed"
    return f"{kept} unselected pixels kept, {changed}/{full} selected changed"


@check
def stylize_with_a_real_style_model():
    document, layer = new_document(64, 64)
    layer.setPixelData(pattern(64, 64, "U8"), 0, 0, 64, 64)
    run = controller()
    job = run.start("stylize", params(style_index=3, strength=1.0), document, layer)
    snapshot = wait(run)
    assert snapshot.phase.value == "succeeded", snapshot.message
    assert_layer_at(run.result_node, job.target.region)
    before, after = bytes(layer.pixelData(0, 0, 64, 64)), bytes(run.result_node.pixelData(0, 0, 64, 64))
    difference = sum(abs(a - b) for a, b in zip(before, after, strict=True)) / len(before)
    assert difference > 10, f"stylized layer differs by only {difference:.2f} levels on average"
    return f"mean difference {difference:.1f} levels"


def refine_round_trip(depth: str, profile: str, tolerance: float) -> str:
    width, height = 60, 36
    document, layer = new_document(width, height, depth, profile)
    source = pattern(width, height, depth)
    layer.setPixelData(source, 0, 0, width, height)
    layer.move(5, 3)  # a layer offset: the plugin must read the pixels where they are
    run = controller()
    run.start("refine", params(strength=0.0), document, layer)
    snapshot = wait(run)
    assert snapshot.phase.value == "succeeded", snapshot.message
    before = bytes(layer.pixelData(0, 0, width, height))
    after = bytes(run.result_node.pixelData(0, 0, width, height))
    code = {"U8": "B", "U16": "H", "F16": "e", "F32": "f"}[depth]
    a, b = (
        struct.unpack(f"<{len(before) // struct.calcsize(code)}{code}", before),
        struct.unpack(f"<{len(after) // struct.calcsize(code)}{code}", after),
    )
    worst = max(abs(x - y) for x, y in zip(a, b, strict=True))
    assert worst <= tolerance, f"{depth} {profile or 'default profile'}: worst difference {worst} > {tolerance}"
    assert len(set(b)) >= len(set(a)) * 0.95, f"banding: {len(set(a))} distinct values became {len(set(b))}"
    document.close()
    return f"worst difference {worst}, {len(set(b))} distinct values"


@check
def refine_at_strength_zero_keeps_8_bit():
    return refine_round_trip("U8", "", 0)


@check
def refine_round_trips_16_bit_srgb():
    return refine_round_trip("U16", "sRGB-elle-V2-srgbtrc.icc", 0)


@check
def refine_round_trips_16_bit_linear():
    return refine_round_trip("U16", "", 2)  # linear <-> sRGB in float32: within a couple of 16-bit steps


@check
def refine_round_trips_16_bit_float():
    return refine_round_trip("F16", "", 0.002)  # half precision near 1.0 is 2^-11


@check
def refine_round_trips_32_bit_float():
    return refine_round_trip("F32", "", 2e-6)


@check
def a_gray_document_is_refused_clearly():
    from artforge_krita.pixels import Refused

    document, layer = new_document(32, 32, "U8", "", model="GRAYA")
    try:
        controller().start("generate", params(), document, layer)
    except Refused as refusal:
        assert "RGBA" in str(refusal), str(refusal)
        return str(refusal)
    finally:
        document.close()
    raise AssertionError("a GRAYA document was not refused")


def strokes(width: int, height: int) -> bytes:
    """A drawing on transparency, 8-bit BGRA: opaque black lines, a half-transparent red diagonal, nothing elsewhere."""
    data = bytearray(width * height * 4)
    for y in range(height):
        for x in range(width):
            if x % 16 in (3, 4) or y % 12 in (5, 6):
                data[(y * width + x) * 4 : (y * width + x + 1) * 4] = bytes((0, 0, 0, 255))
            elif abs(x - y) <= 1:
                data[(y * width + x) * 4 : (y * width + x + 1) * 4] = bytes((0, 0, 200, 128))
    return bytes(data)


def blocks(width: int, height: int) -> bytes:
    """An opaque 8-bit BGRA picture with hard edges for canny: white, with a black block, a gray one and a blue stripe."""
    data = bytearray(b"\xff" * (width * height * 4))
    for y in range(height):
        for x in range(width):
            colour = None
            if 8 <= x < 30 and 6 <= y < 24:
                colour = (0, 0, 0, 255)
            elif 36 <= x < 60 and 14 <= y < 34:
                colour = (90, 90, 90, 255)
            elif 20 <= x + y // 2 < 26:
                colour = (200, 40, 10, 255)
            if colour is not None:
                data[(y * width + x) * 4 : (y * width + x + 1) * 4] = bytes(colour)
    return bytes(data)


@check
def a_scribble_layer_steers_generate_as_its_pixels():
    """A drawn layer on transparency, chosen as a scribble control (made from the layer on the
    server), over a selection whose bounds are not multiples of 8: pytest compares the control
    image sent with the layer's pixels, and replays the request for the result's pixels."""
    from artforge_krita.controls import ControlChoice, Use
    from artforge_krita.krita_adapter import control_layers, node_id

    document, background = new_document(64, 48)
    background.setPixelData(pattern(64, 48, "U8"), 0, 0, 64, 48)
    sketch = document.createNode("sketch", "paintlayer")
    document.rootNode().addChildNode(sketch, None)
    sketch.setPixelData(strokes(64, 48), 0, 0, 64, 48)
    assert (node_id(sketch), "sketch") in control_layers(document), control_layers(document)
    selection = Selection()
    selection.select(5, 3, 45, 37, 255)
    document.setSelection(selection)
    run = controller()
    choice = ControlChoice(node_id(sketch), "sketch", Use("scribble", "scribble"), strength=1.0, start=0.0, end=1.0)
    job = run.start("generate", params(seed=13), document, background, control_choices=[choice])
    snapshot = wait(run)
    assert snapshot.phase.value == "succeeded", snapshot.message
    region = job.target.region
    assert (region.x, region.y, region.width, region.height) == (5, 3, 45, 37), region
    assert_layer_at(run.result_node, region)
    dump("a_scribble_layer_steers_generate_as_its_pixels", run.result_node, region, job.request)
    (OUT / "a_scribble_layer_steers_generate_as_its_pixels.control").write_bytes(bytes(sketch.pixelData(5, 3, 45, 37)))
    document.close()
    control = job.request.controls[0]
    return f"{control.type}/{control.preprocessor} {control.image.width}x{control.image.height}: {snapshot.message}"


@check
def a_missing_control_layer_is_refused_clearly():
    from artforge_krita.controls import ControlChoice, Use
    from artforge_krita.pixels import Refused

    document, layer = new_document(32, 32)
    gone = ControlChoice("{00000000-0000-0000-0000-000000000001}", "old sketch", Use("scribble", "scribble"))
    try:
        controller().start("generate", params(), document, layer, control_choices=[gone])
    except Refused as refusal:
        assert str(refusal) == "Control 1: the layer 'old sketch' is not in this document; pick its layer again.", str(refusal)
        return str(refusal)
    finally:
        document.close()
    raise AssertionError("a control row whose layer is gone was not refused")


@check
def from_canvas_canny_makes_a_control_layer():
    """From canvas (canny) over a selection: a hidden layer "Control: canny" on top holding the
    server's edges; pytest makes the same Preprocess call from the canvas pixels dumped here."""
    document, layer = new_document(72, 40)
    layer.setPixelData(blocks(72, 40), 0, 0, 72, 40)
    layer.setOpacity(230)  # the canvas, not the layer: what Preprocess gets is the projection
    document.refreshProjection()
    document.waitForDone()
    selection = Selection()
    selection.select(6, 4, 61, 33, 255)
    document.setSelection(selection)
    canvas = bytes(document.pixelData(6, 4, 61, 33))
    run = controller()
    job = run.start_preprocess("canny", document)
    snapshot = wait(run)
    assert snapshot.phase.value == "succeeded", snapshot.message
    node = run.result_node
    assert node is not None and node.name() == "Control: canny" and not node.visible(), (node and node.name(), node and node.visible())
    assert document.rootNode().childNodes()[-1].name() == "Control: canny", layer_names(document)
    assert run.made_control is not None and run.made_control[1] == "canny", run.made_control
    region = job.target.region
    assert (region.x, region.y, region.width, region.height) == (6, 4, 61, 33), region
    assert_layer_at(node, region)
    dump("from_canvas_canny_makes_a_control_layer", node, region, job.request)
    (OUT / "from_canvas_canny_makes_a_control_layer.canvas").write_bytes(canvas)
    document.close()
    return snapshot.message


@check
def cancel_stops_the_job():
    document, layer = new_document(256, 256)
    run = controller()
    run.start("generate", params(steps=50), document, layer)
    deadline = time.monotonic() + 60
    preview = None
    while preview is None and time.monotonic() < deadline:
        run.poll()
        preview = next((n for n in document.rootNode().childNodes() if n.name() == "ArtForge preview"), None)
        time.sleep(0.01)
    assert preview is not None, "no preview layer appeared while the job ran"
    assert preview.locked(), "the preview layer is not locked"
    assert run.cancel(), "nothing to cancel"
    snapshot = wait(run)
    assert snapshot.phase.value == "cancelled", f"{snapshot.phase}: {snapshot.message}"
    assert run.result_node is None, "a cancelled job made a layer"
    names = [n.name() for n in document.rootNode().childNodes()]
    assert "ArtForge preview" not in names and "ArtForge" not in names, names
    document.close()
    return snapshot.message


@check
def closing_the_document_mid_job_keeps_the_result_in_history():
    document, layer = new_document(64, 64)
    run = controller()
    run.start("generate", params(steps=8), document, layer)
    document.close()
    from artforge_krita.jobs import Refused

    try:
        wait(run)
    except Refused as refusal:
        message = str(refusal)
    else:
        raise AssertionError("the result of a closed document's job was pasted somewhere")
    assert "document was closed" in message and len(run.history) == 1, message
    assert run.result_node is None
    return message


@check
def unreachable_server_gives_a_sentence():
    document, layer = new_document(32, 32)
    run = controller(address=os.environ["ARTFORGE_UNREACHABLE"])
    run.start("generate", params(), document, layer)
    snapshot = wait(run)
    document.close()
    assert snapshot.phase.value == "failed", snapshot.phase
    assert snapshot.message.startswith("Cannot reach the ArtForge server at"), snapshot.message
    return snapshot.message


@check
def wrong_token_gives_a_sentence():
    document, layer = new_document(32, 32)
    run = controller(token="not-the-token")
    run.start("generate", params(), document, layer)
    snapshot = wait(run)
    document.close()
    assert snapshot.phase.value == "failed", snapshot.phase
    assert "did not accept the token" in snapshot.message, snapshot.message
    return snapshot.message


@check
def help_me_write_this_keeps_the_idea():
    """Against the suite's server with the embedded text model (ARTFORGE_TEXT_ADDRESS, no token)."""
    from artforge_krita.docker import ArtForgeDocker
    from artforge_krita.krita_adapter import save_settings

    save_settings(settings(address=os.environ["ARTFORGE_TEXT_ADDRESS"], token=""))
    docker = ArtForgeDocker()
    idea = "a cozy cabin in snow"
    docker.prompt.setPlainText(idea)
    prompts = []
    for _ in range(2):  # pressed again on its own answer, it answers the idea again
        docker.help_button.click()
        settle(docker, lambda: "prompt" not in docker.side_jobs)
        prompts.append(docker.prompt.toPlainText())
    for prompt in prompts:
        assert prompt.startswith(idea + ", ") and prompt.count(",") == 4, f"{prompts}; status: {docker.status.text()}"
    save_settings(settings())
    return " / ".join(prompts)


@check
def prompt_help_reports_without_a_text_model():
    from artforge_krita.jobs import start_prompt_expand

    snapshot = wait_job(start_prompt_expand(settings(), "cozy cabin"))
    # This test server has no text model (keeping Krita's tests fast): the answer must be a sentence.
    assert snapshot.phase.value == "failed", snapshot
    assert "Traceback" not in snapshot.message and snapshot.message.endswith((".", "?")), snapshot.message
    return snapshot.message


WINDOW = {}


def docker_on_a_document(width: int = 48, height: int = 40):
    """A docker and an active document shown in a real window with a view, as the docker's buttons need."""
    if not WINDOW:
        WINDOW["window"] = Krita.instance().openWindow()
    document = Krita.instance().createDocument(width, height, "artforge-docker", "RGBA", "U8", "", 72.0)
    WINDOW["window"].addView(document)
    assert Krita.instance().activeDocument() == document, "no active document with a view"
    docker = new_docker()
    docker.prompt.setPlainText("a red barn")
    docker.steps.setValue(2)
    return docker, document


def layer_names(document) -> list[str]:
    return [node.name() for node in document.rootNode().childNodes()]


@check
def docker_buttons_work_on_the_active_document():
    """Through the docker's own buttons (these checks come last: they leave their windows open)."""
    docker, document = docker_on_a_document()
    docker.seed.setText("5")
    docker.action_buttons["generate"].click()
    settle(docker, lambda: not docker.controller.busy and docker.history.count() == 1)
    assert layer_names(document).count("ArtForge") == 1, f"layers {layer_names(document)}; status: {docker.status.text()}"
    assert docker.progress.value() == 100 and docker.status.text() == "Done", (docker.progress.value(), docker.status.text())
    docker.apply_button.click()
    assert layer_names(document).count("ArtForge") == 2, f"Apply again did not paste: {layer_names(document)}"
    return f"{docker.status.text()} history: {docker.history.itemText(0)}"


@check
def a_stale_message_never_overwrites_a_newer_one():
    docker, document = docker_on_a_document()
    docker.action_buttons["generate"].click()
    settle(docker, lambda: not docker.controller.busy)
    assert docker.status.text() == "Done", docker.status.text()
    seen = []
    # Fill without a selection is refused at once; the finished job's "Done" must not come back.
    docker.action_buttons["fill"].click()
    for _ in range(10):
        docker.poll()
        seen.append(docker.status.text())
        time.sleep(0.02)
    assert set(seen) == {"Fill repaints the selection: select the area to fill first."}, seen
    # Test Connection to a dead address after that finished job, then to the right one.
    docker.open_server_settings()
    docker.server.address.setText(os.environ["ARTFORGE_UNREACHABLE"])
    docker.server.test_button.click()
    settle(docker, lambda: "connection" not in docker.side_jobs, 30)
    dead = docker.status.text()
    assert dead.startswith("Cannot reach the ArtForge server at"), dead
    assert docker.server.result.text() == dead, docker.server.result.text()
    docker.server.address.setText(os.environ["ARTFORGE_ADDRESS"])
    docker.server.test_button.click()
    settle(docker, lambda: "connection" not in docker.side_jobs, 30)
    docker.server.accept()
    assert docker.status.text().startswith("Connected to ArtForge"), docker.status.text()
    # An empty prompt for Help: the hint, not the connection's message.
    docker.prompt.setPlainText("")
    docker.help_button.click()
    docker.poll()
    assert docker.status.text().startswith("Write a few words first"), docker.status.text()
    document.close()
    return f"{seen[0]} / {dead}"


@check
def a_seed_above_2_31_round_trips():
    seed = 2**63 + 12345  # above the old Seed box's 2147483647, and above the server's own picks (2^63)
    docker, document = docker_on_a_document()
    docker.seed.setText(str(seed))
    docker.action_buttons["generate"].click()
    settle(docker, lambda: not docker.controller.busy)
    assert docker.controller.job.request.seed == seed, docker.controller.job.request.seed
    assert docker.controller.history[0].seed == seed, f"the server made seed {docker.controller.history[0].seed}"
    assert str(seed) in docker.history.itemText(0), docker.history.itemText(0)
    docker.seed.setText("")
    docker.history.setCurrentIndex(0)
    docker.seed_button.click()
    assert docker.seed.text() == str(seed), docker.seed.text()
    docker.seed.setText(str(2**64))
    docker.action_buttons["generate"].click()
    assert "above the largest seed" in docker.status.text() and not docker.controller.busy, docker.status.text()
    document.close()
    return docker.history.itemText(0)


@check
def docker_controls_from_canvas_and_generate():
    """Through the docker: From canvas (scribble) adds its layer as a control row, rows stop at
    the server's limit, and Generate sends the row's layer as it is."""
    from artforge_krita.controls import Use

    docker, document = docker_on_a_document(64, 48)
    options = docker.control_options
    assert options.known and options.types == ("scribble", "depth") and options.max_controls == 4, options
    painted = document.createNode("picture", "paintlayer")
    document.rootNode().addChildNode(painted, None)
    document.setActiveNode(painted)
    painted.setPixelData(blocks(64, 48), 0, 0, 64, 48)
    document.refreshProjection()
    document.waitForDone()
    docker.preprocessor.setCurrentText("scribble")
    docker.from_canvas_button.click()
    settle(docker, lambda: not docker.controller.busy and docker.control_rows)
    assert "Control: scribble" in layer_names(document), f"{layer_names(document)}; status: {docker.status.text()}"
    row = docker.control_rows[0]
    assert row.layer.currentText() == "Control: scribble" and row.use.currentData() == Use("scribble"), row.use.currentText()
    labels = [row.use.itemText(i) for i in range(row.use.count())]
    assert labels == ["scribble", "depth", "scribble from layer", "depth from layer"], labels
    for _ in range(3):
        docker.add_control_button.click()
    assert len(docker.control_rows) == 4 and not docker.add_control_button.isEnabled(), len(docker.control_rows)
    assert docker.add_control() is None and "at most 4 controls" in docker.status.text(), docker.status.text()
    added = docker.control_rows[1]
    active = document.activeNode().name()
    assert added.layer.currentText() == active and added.use.currentData() == Use("scribble", "scribble"), (active, added.use.currentText())
    for extra in docker.control_rows[1:]:
        extra.remove_button.click()
    assert docker.control_rows == [row] and docker.add_control_button.isEnabled()
    row.strength.setValue(0.75)
    row.end.setValue(80)
    docker.seed.setText("3")
    docker.action_buttons["generate"].click()
    settle(docker, lambda: not docker.controller.busy)
    assert docker.status.text() == "Done" and layer_names(document).count("ArtForge") == 1, (docker.status.text(), layer_names(document))
    (control,) = docker.controller.job.request.controls
    assert (control.type, control.preprocessor) == ("scribble", ""), control
    assert abs(control.strength - 0.75) < 1e-6 and control.start == 0 and abs(control.end - 0.8) < 1e-6, control
    made = next(node for node in document.rootNode().childNodes() if node.name() == "Control: scribble")
    bgra = bytearray(made.pixelData(0, 0, 64, 48))
    bgra[0::4], bgra[2::4] = bgra[2::4], bgra[0::4]
    assert control.image.data == bytes(bgra), "the control image is not the control layer's pixels"
    white = sum(value == 255 for value in bgra[0::4])
    assert 0 < white < 64 * 48, f"{white} white pixels in the scribble layer"
    document.close()
    return f"types {labels}; {white} stroke pixels"


@check
def progress_resets_on_cancel():
    # The largest job this server allows (60 steps, 256 px, as cancel_stops_the_job): Cancel
    # comes right after the first step, long before the last one on any machine.
    docker, document = docker_on_a_document(256, 256)
    docker.steps.setValue(60)
    docker.action_buttons["generate"].click()
    settle(docker, lambda: docker.progress.value() > 0)
    assert "%" in docker.status.text(), docker.status.text()
    docker.cancel_button.click()
    settle(docker, lambda: not docker.controller.busy)
    assert docker.controller.job.state.snapshot().phase.value == "cancelled", docker.status.text()
    assert docker.progress.value() == 0, f"the progress bar stayed at {docker.progress.value()}%"
    assert docker.status.text() == "Cancelled", docker.status.text()
    document.close()
    return docker.status.text()


def image_job(client, size: int, steps: int) -> Submitted:
    from artforge_client.v1 import image_pb2

    return Submitted(client.generate_image(image_pb2.GenerateImageRequest(prompt="a storm at sea", width=size, height=size, steps=steps)))


def busy_server(client) -> Submitted:
    """A job of the most steps this server allows, once it has started on its one device: at 512
    px it runs for minutes here, far longer than the checks need the server busy, and each step
    is short enough (about 2 s) for their cancel to free the device soon after."""
    running = image_job(client, 512, 60)
    running.wait("started")
    return running


def docker_job_phase(docker) -> str:
    job = docker.controller.job
    return job.state.snapshot().phase.value if job is not None else "none"


@check
def a_queued_job_shows_its_place_and_wait():
    """The docker's job behind two others, one running and one waiting (the test server has one
    device): its status line says it has 1 job ahead, and about how long until it starts (the
    server has measured jobs like those in the checks above)."""
    from artforge_client import Client

    docker, document = docker_on_a_document()
    with Client(os.environ["ARTFORGE_ADDRESS"], token=os.environ["ARTFORGE_TOKEN"]) as client:
        running = busy_server(client)
        waiting = image_job(client, 64, 2)
        try:
            waiting.wait("queued")
            docker.action_buttons["generate"].click()
            settle(docker, lambda: docker_job_phase(docker) != "submitting", 60)
            status, snapshot = docker.status.text(), docker.controller.job.state.snapshot()
        finally:
            docker.cancel()
            waiting.stop()
            running.stop()
    settle(docker, lambda: not docker.controller.busy, 30)
    document.close()
    assert snapshot.phase.value == "queued" and snapshot.queue_position == 1, (snapshot, status)
    assert status == snapshot.message and status.startswith("Waiting in the queue: 1 job ahead"), status
    return status


@check
def a_quota_refusal_shows_its_sentence():
    """A user whose quota is one queued job has one waiting: the docker's next job for them is
    refused, and its status line shows the server's sentence, as the server wrote it."""
    from grpc import StatusCode

    from artforge_client import Client
    from artforge_client.job_state import status_sentence

    docker, document = docker_on_a_document()
    address, quota_token = os.environ["ARTFORGE_ADDRESS"], os.environ["ARTFORGE_QUOTA_TOKEN"]
    docker.apply_settings(settings(token=quota_token))
    with Client(address, token=os.environ["ARTFORGE_TOKEN"]) as client, Client(address, token=quota_token) as limited:
        running = busy_server(client)
        waiting = image_job(limited, 64, 2)
        try:
            waiting.wait("queued")
            docker.action_buttons["generate"].click()
            settle(docker, lambda: docker_job_phase(docker) not in ("submitting", "none"), 60)  # finished, unless the quota let it in
            status, snapshot = docker.status.text(), docker.controller.job.state.snapshot()
            assert snapshot.phase.value == "failed", (snapshot, status)
            server_said = image_job(limited, 64, 2).refused()
        finally:
            docker.cancel()
            docker.apply_settings(settings())
            waiting.stop()
            running.stop()
    settle(docker, lambda: not docker.controller.busy, 30)
    document.close()
    assert server_said.code is StatusCode.RESOURCE_EXHAUSTED, server_said
    assert status == status_sentence(StatusCode.RESOURCE_EXHAUSTED, server_said.message, address), (status, server_said.message)
    return status


@check
def a_job_goes_on_after_the_server_restarts():
    """SIGKILL to the server mid-job; pytest starts it again on the same port and folder
    (tests/restarting_server.py). The docker says it is reconnecting, the job runs again from
    the start, and its layer comes. Last: the server's restart must not slow the checks above."""
    docker, document = docker_on_a_document(256, 256)
    docker.steps.setValue(60)  # as progress_resets_on_cancel: the kill comes long before the last step
    docker.seed.setText("21")
    docker.action_buttons["generate"].click()
    settle(docker, lambda: docker.progress.value() > 0)
    os.kill(int(os.environ["ARTFORGE_SERVER_PID"]), signal.SIGKILL)
    statuses: list[str] = []  # what the status line said, in order

    def finished() -> bool:
        if not statuses or statuses[-1] != docker.status.text():
            statuses.append(docker.status.text())
        return not docker.controller.busy

    settle(docker, finished, 240)
    assert any(status.startswith("Reconnecting to the ArtForge server") for status in statuses), statuses
    assert any(status.endswith("(again: the server restarted)") for status in statuses), statuses
    assert docker.status.text() == "Done" and layer_names(document).count("ArtForge") == 1, (statuses, layer_names(document))
    assert "ArtForge preview" not in layer_names(document), layer_names(document)
    document.close()
    return " / ".join(statuses[:6]) + f" ... ({len(statuses)} statuses)"


def run(*_args: object) -> None:
    """kritarunner passes its leftover command-line arguments."""
    OUT.mkdir(parents=True, exist_ok=True)
    for each in CHECKS:
        each()
    (OUT / "results.json").write_text(json.dumps(RESULTS, indent=1))
