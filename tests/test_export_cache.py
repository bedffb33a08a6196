"""The ONNX export cache: keyed by the weights' content, atomic, and remembering failures."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time

import pytest

from artforge.errors import ArtForgeError, ErrorCode
from artforge.runtimes.backend import choose_backend
from artforge.runtimes.export_cache import ExportCache, ExportKey, export_lock, weights_digest


def test_digest_follows_content_and_remembers_file_hashes(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"A" * 1000)
    first = weights_digest([weights], tmp_path / "cache")
    memo = json.loads((tmp_path / "cache" / "file-hashes.json").read_text())
    assert memo[str(weights.resolve())]["size"] == 1000

    assert weights_digest([weights], tmp_path / "cache") == first
    weights.write_bytes(b"B" * 1000)  # same size, new content (and mtime)
    os.utime(weights, ns=(1, 1))
    assert weights_digest([weights], tmp_path / "cache") != first


def test_build_is_atomic_remembers_failures_and_removes_stale_exports(tmp_path):
    cache = ExportCache(tmp_path)
    calls = []

    def export(folder):
        calls.append(folder)
        (folder / "model.onnx").write_text("graph")

    old = cache.build(ExportKey("m", "unet-v1", "a" * 24), export)
    assert (old / "model.onnx").read_text() == "graph"
    assert cache.build(ExportKey("m", "unet-v1", "a" * 24), export) == old and len(calls) == 1

    def broken(folder):
        (folder / "half.onnx").write_text("half")
        raise RuntimeError("out of memory")

    key = ExportKey("m", "unet-v1", "b" * 24)
    with pytest.raises(ArtForgeError) as error:
        cache.build(key, broken)
    assert error.value.code is ErrorCode.FAILED_PRECONDITION and "out of memory" in error.value.message
    assert cache.find(key) is None, "a failed export leaves nothing half-written"
    assert not list((tmp_path / "onnx" / "m").glob(".export-*"))
    # Remembered: the next start fails at once, without exporting again ...
    with pytest.raises(ArtForgeError):
        cache.build(key, export)
    assert len(calls) == 1
    # ... until forced.
    new = cache.build(key, export, force=True)
    assert cache.failure(key) is None and (new / "model.onnx").is_file()
    assert not old.exists(), "the export of the previous weights is gone"
    # A new export format: the older format's exports and failures go; another kind's, a newer format's stay.
    kept = ["unet-v2-fp32-" + "c" * 24, "unet-v3-" + "d" * 24, "text-v1-" + "e" * 24]
    for name in kept:
        (tmp_path / "onnx" / "m" / name).mkdir()
    (tmp_path / "onnx" / "m" / ("unet-v1-" + "f" * 24 + ".failed")).write_text("out of memory")
    newer_format = cache.build(ExportKey("m", "unet-v2", "b" * 24), export)
    assert sorted(path.name for path in (tmp_path / "onnx" / "m").iterdir()) == sorted([".export.lock", newer_format.name, *kept])


def test_backend_choice_names_its_reason(tmp_path):
    def fails():
        raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, "the exporter ran out of memory")

    assert choose_backend("torch", "m", None, fails).backend == "torch"
    auto = choose_backend("auto", "m", None, fails)
    assert auto.backend == "torch" and "ran out of memory" in auto.reason
    missing = choose_backend("auto", "m", "onnxruntime-genai is not installed", fails)
    assert missing.backend == "torch" and "not installed" in missing.reason
    with pytest.raises(ArtForgeError) as error:
        choose_backend("onnx", "m", None, fails)
    assert "m asks for backend onnx, but the exporter ran out of memory" in error.value.message
    chosen = choose_backend("auto", "m", None, lambda: tmp_path)
    assert chosen.backend == "onnx" and chosen.export == tmp_path


def test_force_exports_again_and_uses_an_export_made_while_it_waited(tmp_path, caplog):
    cache = ExportCache(tmp_path)
    key = ExportKey("m", "unet-v1", "a" * 24)
    made = []

    def export(folder):
        made.append(folder)
        (folder / "model.onnx").write_text(f"graph {len(made)}")

    folder = cache.build(key, export)
    assert cache.build(key, export, force=True) == folder and (folder / "model.onnx").read_text() == "graph 2"
    assert not list(folder.parent.glob(".replaced-*")), "the replaced export is gone"

    # Another exporter holds the lock; a forced export waits for it, then uses what it made.
    forced = []
    with caplog.at_level(logging.INFO, logger="artforge.runtimes.export_cache"), export_lock(folder.parent, "m"):
        waiting = threading.Thread(target=lambda: forced.append(cache.build(key, export, force=True)))
        waiting.start()
        deadline = time.monotonic() + 60
        while "waiting for another export of m" not in caplog.text:
            assert time.monotonic() < deadline and waiting.is_alive(), caplog.text
            time.sleep(0.01)
        theirs = folder.parent / ".export-theirs"
        theirs.mkdir()
        (theirs / "model.onnx").write_text("graph by another")
        shutil.rmtree(folder)
        theirs.rename(folder)
    waiting.join()
    assert forced == [folder] and (folder / "model.onnx").read_text() == "graph by another" and len(made) == 2
