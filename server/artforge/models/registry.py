"""The model registry: which models exist, where their files are and what kind they are.

Models come from two places: the models folder (scanned on start and on `refresh`) and named
entries in the config. In the folder:
- a sub-folder holding one `.gguf` file is a GGUF text model named after the folder;
- a sub-folder holding `config.json` of a causal language model is a Hugging Face text model;
- a sub-folder holding `model_index.json` is a diffusers image pipeline;
- a loose `name.gguf` is a GGUF text model, a loose `name.safetensors` a single-file image
  checkpoint (SD 1.x / 2.x / SDXL), both called `name`;
- `loras/name.safetensors` is a LoRA adapter called `name`;
- a sub-folder holding `config.json` of a transformers depth-estimation model (DPT, Depth
  Anything) is a depth model, for depth controls made from a picture;
- `controlnets/name/` (a diffusers ControlNetModel folder) is a ControlNet called `name`; its
  control type (depth, canny ...) is the first of CONTROL_TYPES its name contains, or the
  config's `control = "..."`.
Folders starting with "." (caches) and packaged models (style, safety) are skipped here.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from artforge.config import ModelEntry
from artforge.errors import ArtForgeError, ErrorCode, shown

log = logging.getLogger(__name__)

KINDS = ("text", "image", "style", "safety", "lora", "controlnet", "depth")
CONTROL_TYPES = ("depth", "canny", "lineart", "scribble", "softedge", "normal", "tile", "inpaint")
_HOW_TO_ADD = {
    "text": "run `artforge models fetch`",
    "image": "put a diffusers folder or a .safetensors checkpoint in the models folder, or run `artforge models pull <hub id>`",
    "lora": "put LoRA .safetensors files in the models folder's loras/ sub-folder",
    "controlnet": "put diffusers ControlNet folders in the models folder's controlnets/ sub-folder",
    "depth": "pull a transformers depth-estimation repo (DPT, Depth Anything) with `artforge models pull`",
}
BACKENDS = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    format: str  # text and depth: "gguf" or "hf"; image and controlnet: "diffusers" or "single_file"; lora: "safetensors"
    path: Path  # the folder (hf, diffusers) or the file (gguf, single_file, safetensors)
    backend: str = "auto"
    description: str = ""
    # Single-file checkpoints: a diffusers folder whose configs describe the checkpoint, so it
    # loads offline (without it diffusers looks the configs up on the Hugging Face Hub).
    config: Path | None = None
    control_type: str = ""  # ControlNets: one of CONTROL_TYPES, or "" when neither name nor config says


def _spec_for_path(
    name: str, path: Path, kind: str = "", backend: str = "auto", description: str = "", config: Path | None = None
) -> ModelSpec | None:
    if path.is_file() and path.suffix == ".gguf":
        return ModelSpec(name, "text", "gguf", path, backend, description)
    if path.is_file() and path.suffix == ".safetensors":
        if kind == "lora":
            return ModelSpec(name, "lora", "safetensors", path, backend, description)
        return ModelSpec(name, "image", "single_file", path, backend, description, config)
    if not path.is_dir():
        return None
    if (path / "model_index.json").is_file():
        return ModelSpec(name, "image", "diffusers", path, backend, description)
    if _class_name(path / "config.json") == "ControlNetModel":
        return ModelSpec(name, "controlnet", "diffusers", path, backend, description, control_type=control_type_of(name))
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSpec(name, "text", "gguf", ggufs[0], backend, description)
    architectures = _read_config(path / "config.json").get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):  # GPT-2 and kin: LMHeadModel
        return ModelSpec(name, "text", "hf", path, backend, description)
    if any(a.endswith("ForDepthEstimation") for a in architectures):
        return ModelSpec(name, "depth", "hf", path, backend, description)
    return None


def _read_config(file: Path) -> dict:
    try:
        config = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


def _class_name(file: Path) -> str:
    return str(_read_config(file).get("_class_name", ""))


def control_type_of(name: str) -> str:
    """The control type a ControlNet's name says ("control_v11f1p_sd15_depth" -> "depth"), or ""."""
    lowered = name.lower()
    return next((kind for kind in CONTROL_TYPES if kind in lowered), "")


class ModelRegistry:
    def __init__(self, models_dir: Path, entries: list[ModelEntry], defaults: dict[str, str], backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"config [models] backend: {backend!r} is not one of {', '.join(BACKENDS)}")
        self.models_dir = Path(models_dir)
        self.backend = backend  # for models that do not name one
        self._entries = entries
        self._defaults = defaults  # kind -> default model name
        self._models: dict[str, ModelSpec] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        found: dict[str, ModelSpec] = {}
        if self.models_dir.is_dir():
            for child in sorted(self.models_dir.iterdir()):
                if child.name.startswith(".") or child.name in ("loras", "controlnets"):
                    continue
                name = child.stem if child.is_file() else child.name
                spec = _spec_for_path(name, child, backend=self.backend)
                if spec is not None:
                    found[name] = spec
            for lora in sorted((self.models_dir / "loras").glob("*.safetensors")):
                found[lora.stem] = ModelSpec(lora.stem, "lora", "safetensors", lora)
            for folder in sorted((self.models_dir / "controlnets").glob("*/")):
                if (spec := _spec_for_path(folder.name, folder, backend=self.backend)) is not None and spec.kind == "controlnet":
                    found[folder.name] = spec
        for entry in self._entries:
            if entry.kind and entry.kind not in KINDS:
                raise ArtForgeError(
                    ErrorCode.INVALID_ARGUMENT, f"config [model.{entry.name}] kind: {entry.kind!r} is not one of {', '.join(KINDS)}"
                )
            if entry.backend and entry.backend not in BACKENDS:
                raise ArtForgeError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"config [model.{entry.name}] backend: {entry.backend!r} is not one of {', '.join(BACKENDS)}",
                )
            path = Path(entry.path).expanduser()
            config = Path(entry.config).expanduser() if entry.config else None
            spec = _spec_for_path(entry.name, path, entry.kind, entry.backend or self.backend, entry.description, config)
            if spec is None:
                log.warning("model %s: nothing loadable at %s; skipped", entry.name, path)
                continue
            if entry.kind and entry.kind != spec.kind:
                log.warning("model %s: the config says %s, but %s holds a %s model; skipped", entry.name, entry.kind, path, spec.kind)
                continue
            if entry.control:
                if spec.kind != "controlnet" or entry.control not in CONTROL_TYPES:
                    raise ArtForgeError(
                        ErrorCode.INVALID_ARGUMENT,
                        f"config [model.{entry.name}] control: only ControlNets take one, one of {', '.join(CONTROL_TYPES)}",
                    )
                spec = replace(spec, control_type=entry.control)
            found[entry.name] = spec
        with self._lock:
            self._models = found
        log.info("models: %s", ", ".join(f"{s.name} ({s.kind}, {s.format})" for s in found.values()) or "none")

    def default_name(self, kind: str) -> str:
        """The configured default, or the only model of that kind when there is just one."""
        if configured := self._defaults.get(kind, ""):
            return configured
        names = [spec.name for spec in self.list(kind)]
        return names[0] if len(names) == 1 else ""

    def get(self, name: str, kind: str, field: str = "model") -> ModelSpec:
        """The model called `name` (the kind's default if empty), or NOT_FOUND naming `field` (the
        request's field that named it) and the choices."""
        name = name or self.default_name(kind)
        with self._lock:
            spec = self._models.get(name)
            choices = sorted(n for n, s in self._models.items() if s.kind == kind)
        if spec is None or spec.kind != kind:
            known = ", ".join(choices) or f"none; {_HOW_TO_ADD.get(kind, 'see `artforge models list`')}"
            raise ArtForgeError(ErrorCode.NOT_FOUND, f"{field}: no {kind} model named {shown(name)}; available: {known}")
        return spec

    def list(self, kind: str | None = None) -> list[ModelSpec]:
        with self._lock:
            return [s for s in self._models.values() if kind is None or s.kind == kind]
