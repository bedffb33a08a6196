"""Running a check script inside real Blender (the bpy module in .venv-blender) from pytest.

The extension zip is built as users get it, the script gets a CONFIG.json naming it, a scratch
BLENDER_USER_RESOURCES folder, a scratch TMPDIR and an output folder (plus whatever the caller adds), and writes
OUT/results.json: one {"ok", "detail", ...} per check (tests/blender/harness.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BLENDER_PYTHON = REPO / ".venv-blender" / "bin" / "python"


def run_in_blender(script: str, work: Path, timeout: float, **config: str) -> dict:
    """Build the zip into `work`, run tests/blender/`script` on it; the results by check name, with
    "_out" (the output folder) and "_log" (the end of Blender's output)."""
    if not BLENDER_PYTHON.is_file():
        pytest.fail("no .venv-blender: run `bash installers/setup-blender.sh` first")
    build = subprocess.run(
        [sys.executable, REPO / "installers" / "build-blender-extension.py", "--dest", work], capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, build.stderr
    out = work / "out"
    out.mkdir()
    settings = {"zip": build.stdout.strip().splitlines()[-1], "user_resources": str(work / "user"), "out": str(out), **config}
    (work / "config.json").write_text(json.dumps(settings))
    (work / "tmp").mkdir()
    env = {"BLENDER_USER_RESOURCES": settings["user_resources"], "PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work / "tmp")}
    command = [BLENDER_PYTHON, REPO / "tests" / "blender" / script, work / "config.json"]
    process = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    results_file = out / "results.json"
    assert results_file.is_file(), (
        f"Blender wrote no results (exit {process.returncode}):\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}"
    )
    results = json.loads(results_file.read_text())
    results["_out"] = out
    results["_log"] = f"(exit {process.returncode})\n" + process.stdout[-3000:] + process.stderr[-3000:]
    return results


def passed(run: dict, name: str) -> dict:
    assert name in run, f"check {name} did not run; Blender's output:\n{run['_log']}"
    record = run[name]
    assert record["ok"], f"{name}: {record['detail']}\n{record.get('traceback', '')}"
    return record
