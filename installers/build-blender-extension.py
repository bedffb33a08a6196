"""Build the Blender extension zip: dist/artforge_blender-<version>.zip, ready for
Edit > Preferences > Get Extensions > Install from Disk.

    .venv/bin/python installers/build-blender-extension.py [--dest dist]

The zip holds plugins/blender/artforge_blender (the extension root, blender_manifest.toml at the
top of the zip), and under wheels/ the grpcio, protobuf and typing_extensions wheels for every
platform the manifest names, plus artforge_client as a pure-Python wheel built here, so that
Blender installs all of them into its extension site-packages the same way. Blender's own
`blender --command extension build` needs the Blender binary; this writes the same layout and
checks what Blender checks that can be checked without it (manifest keys, listed wheels present,
one grpcio per platform).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plugin_wheels import ROOT, Target, client_files, download

EXTENSION = ROOT / "plugins" / "blender" / "artforge_blender"
MANIFEST = "blender_manifest.toml"
PYTHON = "3.11"  # Blender 4.2 to 5.x
TARGETS = {
    "linux-x64": Target("linux-x64", ("manylinux_2_28_x86_64", "manylinux2014_x86_64", "manylinux_2_17_x86_64"), PYTHON),
    "windows-x64": Target("windows-x64", ("win_amd64",), PYTHON),
    "macos-arm64": Target("macos-arm64", ("macosx_11_0_arm64", "macosx_11_0_universal2", "macosx_10_9_universal2"), PYTHON),
}
REQUIRED_KEYS = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type", "blender_version_min", "license")


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def client_wheel(dest: Path) -> Path:
    """artforge_client as a py3-none-any wheel: it is not on PyPI, and a wheel is how an extension
    ships a top-level package without touching sys.path."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    dist_info = f"artforge_client-{version}.dist-info"
    files = [(arcname, path.read_bytes()) for path, arcname in client_files()]
    files.append((f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: artforge-client\nVersion: {version}\n".encode()))
    files.append((f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: artforge\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files]
    files.append((f"{dist_info}/RECORD", ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()))
    path = dest / f"artforge_client-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return path


def with_wheels(manifest_text: str, wheels: list[str]) -> str:
    """The manifest with its `wheels` list: a top-level key, so it goes before the first [table]."""
    listed = "wheels = [\n" + "".join(f'  "./wheels/{name}",\n' for name in wheels) + "]\n"
    match = re.search(r"^\[", manifest_text, re.MULTILINE)
    cut = match.start() if match else len(manifest_text)
    return manifest_text[:cut] + listed + "\n" + manifest_text[cut:]


def check(manifest: dict, wheels: list[str]) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    assert not missing, f"{MANIFEST} lacks {missing}"
    assert "bl_info" not in (EXTENSION / "__init__.py").read_text(), "an extension has no bl_info"
    assert set(manifest.get("platforms", ())) == set(TARGETS), f"platforms {manifest.get('platforms')} != {sorted(TARGETS)}"
    assert "network" in manifest.get("permissions", {}), "the network permission must be declared"
    assert not manifest["tagline"].endswith((".", "!", "?")) and len(manifest["tagline"]) <= 64, "Blender refuses this tagline"
    for platform, tags in (("linux-x64", "manylinux"), ("windows-x64", "win_amd64"), ("macos-arm64", "macosx")):
        found = [name for name in wheels if name.startswith("grpcio-") and tags in name]
        assert len(found) == 1, f"{platform}: expected one grpcio wheel, found {found}"


def build(dest: Path) -> Path:
    manifest_text = (EXTENSION / MANIFEST).read_text()
    manifest = tomllib.loads(manifest_text)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wheels: dict[str, Path] = {}  # by file name: pure wheels are the same file for every platform
        for target in TARGETS.values():
            wheels |= {path.name: path for path in download(target, folder)}
        client = client_wheel(folder)
        wheels[client.name] = client
        names = sorted(wheels)
        final_manifest = with_wheels(manifest_text, names)
        check(tomllib.loads(final_manifest), names)
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / f"{manifest['id']}-{manifest['version']}.zip"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, final_manifest)
            for path in sorted(EXTENSION.glob("*.py")):
                archive.write(path, path.name)
            for name in names:
                archive.write(wheels[name], f"wheels/{name}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=ROOT / "dist", help="folder for the zip (default: dist/)")
    print(build(parser.parse_args().dest))


if __name__ == "__main__":
    main()
