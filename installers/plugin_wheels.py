"""The grpcio and protobuf wheels the plugins bundle, fetched per platform and Python version.

Blender and Krita run their own Python, which has neither package, so each plugin zip carries
binary wheels for every platform it supports. `pip download --only-binary` fetches them for a
platform other than this one; the versions are the client's requirements in pyproject.toml, so
a plugin never bundles a protobuf older than the one its generated code was made with.

    from plugin_wheels import Target, download
    wheels = download(Target("linux-x64", ("manylinux_2_28_x86_64", "manylinux2014_x86_64"), "3.11"), dest)
    for path, name in client_files(): ...  # the artforge_client package, to put in the zip
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT_PACKAGES = ("grpcio", "protobuf")


@dataclass(frozen=True)
class Target:
    """One platform a plugin supports: its name in the plugin's terms, pip's platform tags (any
    of them may match, as pip accepts several), and the host's Python version ("3.11")."""

    name: str
    platforms: tuple[str, ...]
    python: str


def client_requirements() -> list[str]:
    """The requirement lines of grpcio and protobuf in pyproject.toml, e.g. "grpcio>=1.85.1,<2"."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = [line for line in dependencies if re.match(r"([A-Za-z0-9_.-]+)", line).group(1) in CLIENT_PACKAGES]
    assert len(found) == len(CLIENT_PACKAGES), f"pyproject.toml must list {CLIENT_PACKAGES}: found {found}"
    return found


def download(target: Target, dest: Path, requirements: list[str] | None = None) -> list[Path]:
    """Fetch the wheels (with their dependencies) for `target` into `dest/<target.name>`, emptied
    first so that no wheel of an older pin stays behind; returns their paths. pip's own cache
    makes a rebuild cheap."""
    folder = dest / target.name
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", target.python]
    for platform in target.platforms:
        command += ["--platform", platform]
    command += ["--dest", str(folder), *(requirements or client_requirements())]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip could not fetch wheels for {target.name} (Python {target.python}): {result.stderr.strip()[-2000:]}")
    return sorted(folder.glob("*.whl"))


def client_files() -> list[tuple[Path, str]]:
    """The `artforge_client` package as (file, path inside a plugin zip) pairs, without caches."""
    package = ROOT / "plugins" / "client" / "artforge_client"
    return [(path, path.relative_to(package.parent).as_posix()) for path in sorted(package.rglob("*.py"))]
