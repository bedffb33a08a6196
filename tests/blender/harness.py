"""What every check script run inside Blender shares (tests/blender_host.py starts them): the
CONFIG.json named on the command line, the output folder, and check(), which records each check's
outcome in OUT/results.json as it goes, so a crash loses only the check that crashed."""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import bpy

CONFIG = json.loads(Path(sys.argv[1]).read_text())
OUT = Path(CONFIG["out"])
PACKAGE = "bl_ext.user_default.artforge_blender"
results: dict[str, dict] = {}


def check(function: Callable[[], dict | None]) -> None:
    started = time.monotonic()
    try:
        record = {"ok": True, **(function() or {})}
    except Exception as error:
        record = {"ok": False, "detail": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    record["seconds"] = round(time.monotonic() - started, 3)
    results[function.__name__] = record
    (OUT / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"{function.__name__}: {'ok' if record['ok'] else 'FAILED ' + record['detail']} ({record['seconds']} s)", flush=True)


def module(name: str):
    """A module of the installed extension."""
    return importlib.import_module(f"{PACKAGE}.{name}")


def prefs():
    return bpy.context.preferences.addons[PACKAGE].preferences
