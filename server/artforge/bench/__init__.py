"""`artforge bench`: speed measured the way artists meet it, written as JSON."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from artforge import __version__

SOFTWARE = ("torch", "onnxruntime", "onnxruntime-gpu", "onnxruntime-genai", "onnxruntime-genai-cuda", "transformers", "diffusers")


def report(bench: str, **machine: Any) -> dict[str, Any]:
    """The head every bench report starts with: what ran, when, and on which machine."""
    return {
        "bench": bench,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "artforge": __version__,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            **machine,
        },
        "software": {name: _version(name) for name in SOFTWARE},
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
