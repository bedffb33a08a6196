"""Build dist/artforge_krita-<version>.zip for Krita's Tools > Scripts > Import Python Plugin from File.

The zip's root holds what Krita's importer looks for: artforge_krita.desktop, artforge_krita.action
(the menu actions, so Krita's shortcut settings list them) and artforge_krita/ with Manual.html
(shown by the Python Plugin Manager). The package carries artforge_client in vendor/common/ and
the grpcio + protobuf wheels unpacked into vendor/<platform>-cp<XY>/ for each Python that Krita
embeds (bundled.py picks the matching folder at import):
  - Debian/Ubuntu Krita 5.1: the system Python 3.11 (linux x86_64);
  - the official Krita 5.2 builds (Windows installer, macOS dmg, Linux AppImage): Python 3.10.

    .venv/bin/python installers/build-krita-plugin.py [--out dist] [--targets linux-x86_64-cp311 ...]
"""

from __future__ import annotations

import argparse
import sys
import tomllib
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plugin_wheels import ROOT, Target, client_files, download

LINUX = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
TARGETS = {
    target.name: target
    for target in (
        Target("linux-x86_64-cp311", LINUX, "3.11"),
        Target("linux-x86_64-cp310", LINUX, "3.10"),
        Target("windows-x86_64-cp310", ("win_amd64",), "3.10"),
        Target("macos-universal2-cp310", ("macosx_11_0_universal2", "macosx_10_9_universal2"), "3.10"),
    )
}
PLUGIN = ROOT / "plugins" / "krita"
PLUGIN_SUFFIXES = {".py", ".html"}  # the code and the manual the Plugin Manager shows


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def build(out: Path, targets: list[str], wheel_cache: Path) -> Path:
    zip_path = out / f"artforge_krita-{version()}.zip"
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        plugin = _PluginZip(archive)
        plugin.write(PLUGIN / "artforge_krita.desktop", "artforge_krita.desktop")
        plugin.write(PLUGIN / "artforge_krita.action", "artforge_krita.action")
        for path in sorted((PLUGIN / "artforge_krita").rglob("*")):
            if path.is_file() and path.suffix in PLUGIN_SUFFIXES:
                plugin.write(path, path.relative_to(PLUGIN).as_posix())
        for path, name in client_files():
            plugin.write(path, f"artforge_krita/vendor/common/{name}")
        for name in targets:
            for wheel in download(TARGETS[name], wheel_cache):
                # Wheels are zips; unpacked, because native modules cannot import from inside one.
                with zipfile.ZipFile(wheel) as source:
                    for member in source.infolist():
                        if not member.is_dir():
                            plugin.writestr(f"artforge_krita/vendor/{name}/{member.filename}", source.read(member))
    return zip_path


class _PluginZip:
    """Writes every folder's own entry before its first file: Krita's importer finds the package
    only by the entry "artforge_krita/", and most zip writers (Python's too) leave folders out."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.folders: set[str] = set()

    def _folders_of(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder not in self.folders:
                self.folders.add(folder)
                self.archive.mkdir(folder)

    def write(self, path: Path, name: str) -> None:
        self._folders_of(name)
        self.archive.write(path, name)

    def writestr(self, name: str, data: bytes) -> None:
        self._folders_of(name)
        self.archive.writestr(name, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS), help="default: all")
    parser.add_argument("--wheel-cache", type=Path, default=ROOT / "build" / "krita-wheels")
    args = parser.parse_args()
    print(build(args.out, args.targets, args.wheel_cache))


if __name__ == "__main__":
    main()
