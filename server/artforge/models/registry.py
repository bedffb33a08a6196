"""The model registry: which models exist, where their files are and what kind they are.

Models come from two places: the models folder (scanned on start and on `refresh`) and named
entries in the config. In the folder:
- a sub-folder holding one `.gguf` file is a GGUF text model named after the folder;
- a sub-folder holding `config.json` of a causal language model is a Hugging Face text model;
- a loose `name.gguf` is a GGUF text model called `name`.
Folders starting with "." (caches) are skipped.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from artforge.config import ModelEntry
from artforge.errors import ArtForgeError, ErrorCode

log = logging.getLogger(__name__)

KINDS = ("text", "image", "style", "safety", "lora")
BACKENDS = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    format: str  # "gguf" or "hf" for text models
    path: Path  # the folder (hf) or the file (gguf)
    backend: str = "auto"
    description: str = ""


def _spec_for_path(name: str, path: Path, kind: str = "text", backend: str = "auto", description: str = "") -> ModelSpec | None:
    if path.is_file() and path.suffix == ".gguf":
        return ModelSpec(name, kind, "gguf", path, backend, description)
    if not path.is_dir():
        return None
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSpec(name, kind, "gguf", ggufs[0], backend, description)
    config = path / "config.json"
    if config.is_file():
        try:
            architectures = json.loads(config.read_text()).get("architectures") or []
        except (OSError, json.JSONDecodeError):
            architectures = []
        if any(a.endswith("ForCausalLM") for a in architectures):
            return ModelSpec(name, "text", "hf", path, backend, description)
    return None


class ModelRegistry:
    def __init__(self, models_dir: Path, entries: list[ModelEntry], defaults: dict[str, str]) -> None:
        self.models_dir = Path(models_dir)
        self._entries = entries
        self._defaults = defaults  # kind -> default model name
        self._models: dict[str, ModelSpec] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        found: dict[str, ModelSpec] = {}
        if self.models_dir.is_dir():
            for child in sorted(self.models_dir.iterdir()):
                if child.name.startswith("."):
                    continue
                name = child.stem if child.is_file() else child.name
                spec = _spec_for_path(name, child)
                if spec is not None:
                    found[name] = spec
        for entry in self._entries:
            if entry.kind not in KINDS:
                raise ArtForgeError(
                    ErrorCode.INVALID_ARGUMENT, f"config [model.{entry.name}] kind: {entry.kind!r} is not one of {', '.join(KINDS)}"
                )
            if entry.backend not in BACKENDS:
                raise ArtForgeError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"config [model.{entry.name}] backend: {entry.backend!r} is not one of {', '.join(BACKENDS)}",
                )
            path = Path(entry.path).expanduser()
            spec = _spec_for_path(entry.name, path, entry.kind, entry.backend, entry.description)
            if spec is None:
                log.warning("model %s: nothing loadable at %s; skipped", entry.name, path)
                continue
            found[entry.name] = spec
        with self._lock:
            self._models = found
        log.info("models: %s", ", ".join(f"{s.name} ({s.kind}, {s.format})" for s in found.values()) or "none")

    def default_name(self, kind: str) -> str:
        return self._defaults.get(kind, "")

    def get(self, name: str, kind: str) -> ModelSpec:
        """The model called `name` (the kind's default if empty), or NOT_FOUND naming the choices."""
        name = name or self.default_name(kind)
        with self._lock:
            spec = self._models.get(name)
            choices = sorted(n for n, s in self._models.items() if s.kind == kind)
        if spec is None or spec.kind != kind:
            known = ", ".join(choices) or "none; run `artforge models fetch`"
            raise ArtForgeError(ErrorCode.NOT_FOUND, f"model: no {kind} model named {name!r}; available: {known}")
        return spec

    def list(self, kind: str | None = None) -> list[ModelSpec]:
        with self._lock:
            return [s for s in self._models.values() if kind is None or s.kind == kind]
