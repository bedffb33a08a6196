"""Build dist/artforge_krita-<version>.zip for Krita's Tools > Scripts > Import Python Plugin from File.

The zip's root holds artforge_krita.desktop and artforge_krita/, which carries artforge_client in
vendor/common/ and the grpcio + protobuf wheels unpacked into vendor/<platform>-cp<XY>/ for each
Python that Krita embeds (bundled.py picks the matching folder at import):
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


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def build(out: Path, targets: list[str], wheel_cache: Path) -> Path:
    zip_path = out / f"artforge_krita-{version()}.zip"
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        archive.write(PLUGIN / "artforge_krita.desktop", "artforge_krita.desktop")
        for path in sorted((PLUGIN / "artforge_krita").rglob("*.py")):
            archive.write(path, path.relative_to(PLUGIN).as_posix())
        for path, name in client_files():
            archive.write(path, f"artforge_krita/vendor/common/{name}")
        for name in targets:
            for wheel in download(TARGETS[name], wheel_cache):
                # Wheels are zips; unpacked, because native modules cannot import from inside one.
                with zipfile.ZipFile(wheel) as source:
                    for member in source.infolist():
                        if not member.is_dir():
                            archive.writestr(f"artforge_krita/vendor/{name}/{member.filename}", source.read(member))
    return zip_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS), help="default: all")
    parser.add_argument("--wheel-cache", type=Path, default=ROOT / "build" / "krita-wheels")
    args = parser.parse_args()
    print(build(args.out, args.targets, args.wheel_cache))


if __name__ == "__main__":
    main()
