"""Which runtime serves a model: PyTorch or its ONNX export, and why.

`backend = "torch"` always means PyTorch. `"onnx"` means the ONNX export or an error that
says why there is none. `"auto"` (the default) uses ONNX when an export exists or can be made
and falls back to PyTorch otherwise; the reason is logged and shown by ListModels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from artforge.errors import ArtForgeError, ErrorCode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "torch" or "onnx"
    reason: str
    export: Path | None = None  # the ONNX export folder, when backend is "onnx"


def choose_backend(requested: str, model: str, unavailable: str | None, export: Callable[[], Path]) -> BackendChoice:
    """The backend for `model`: `unavailable` says why ONNX cannot serve it at all (or None);
    `export` finds or makes its export, raising ArtForgeError when that fails."""
    if requested == "torch":
        return BackendChoice("torch", "the config asks for PyTorch")
    try:
        if unavailable:
            raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, unavailable)
        folder = export()
    except ArtForgeError as exc:
        if requested == "onnx":
            raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, f"model {model} asks for backend onnx, but {exc.message}") from exc
        choice = BackendChoice("torch", f"PyTorch, because {exc.message}")
        log.warning("%s: %s", model, choice.reason)
        return choice
    choice = BackendChoice("onnx", f"ONNX Runtime, from the export in {folder}", folder)
    log.info("%s: %s", model, choice.reason)
    return choice


def known_backend(requested: str, loaded: BackendChoice | None, unavailable: str | None) -> tuple[str, str] | None:
    """What ListModels can say without the engine: the choice of a loaded model, or why an
    unloaded one will run on PyTorch; None when the engine must say what will be tried."""
    if loaded is not None:
        return loaded.backend, loaded.reason
    if requested == "torch":
        return "", "the config asks for PyTorch"
    if unavailable:
        return "", f"{requested}: {unavailable}"
    return None


def fallback(requested: str, model: str, exc: Exception) -> BackendChoice:
    """After the ONNX export failed to load: PyTorch with the reason, or an error for backend "onnx"."""
    reason = f"the ONNX export failed to load: {type(exc).__name__}: {exc}"
    if requested == "onnx":
        raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, f"model {model} asks for backend onnx, but {reason}") from exc
    choice = BackendChoice("torch", f"PyTorch, because {reason}")
    log.warning("%s: %s", model, choice.reason)
    return choice
