"""Put the plugin's bundled grpcio/protobuf and artforge_client on sys.path (plain Python).

The zip carries vendor/common/ (artforge_client, pure Python) and one vendor/<platform>-cp<XY>/
folder of unpacked wheels per platform and Python that Krita ships with: grpcio has native code,
so only the folder matching the running interpreter can work.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "vendor"


def platform_key(system: str | None = None, machine: str | None = None) -> str | None:
    """The vendor folder prefix for this machine, or None where no wheels are bundled."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if system == "Darwin":
        return "macos-universal2"  # one universal2 grpcio wheel serves arm64 and x86_64
    if machine in ("x86_64", "amd64"):
        return {"Linux": "linux-x86_64", "Windows": "windows-x86_64"}.get(system)
    return None


def folder_name(system: str | None = None, machine: str | None = None, version: tuple[int, int] | None = None) -> str | None:
    key = platform_key(system, machine)
    major, minor = version or sys.version_info[:2]
    return f"{key}-cp{major}{minor}" if key else None


def activate(vendor: Path = VENDOR) -> str | None:
    """Add the matching folders to sys.path; None when grpc and protobuf import, else one sentence for the docker."""
    name = folder_name()
    for folder in (vendor / "common", vendor / name if name else None):
        if folder is not None and folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    if all(importlib.util.find_spec(module) for module in ("grpc", "google.protobuf", "artforge_client")):
        return None
    shipped = sorted(p.name for p in vendor.iterdir() if p.is_dir() and p.name != "common") if vendor.is_dir() else []
    running = f"Python {sys.version_info.major}.{sys.version_info.minor} on {platform.system()} {platform.machine()}"
    return (
        f"ArtForge cannot load its network libraries (grpcio, protobuf) for {running}: "
        f"this plugin build bundles {', '.join(shipped) or 'none'}. Download the plugin zip that matches your Krita."
    )
