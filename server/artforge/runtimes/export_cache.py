"""ONNX exports cached under the models folder, keyed by a hash of the source weights.

    <models>/.cache/onnx/<model>/<variant>-<digest>/         a finished export
    <models>/.cache/onnx/<model>/<variant>-<digest>.failed   why exporting these weights failed
    <models>/.cache/file-hashes.json                         SHA-256 of source files, by path, size and mtime

The digest covers every source file's content, so a changed checkpoint gets a new export
while an untouched one is found again without re-exporting. Hashing gigabytes on every start
would cost tens of seconds, so each file's hash is remembered with its size and mtime and
only recomputed when either changes. An export is written to a temporary folder and renamed
into place when complete: a crash mid-export never leaves a half export behind. A failed
export is remembered with its reason, so `backend = "auto"` falls back to PyTorch at once on
later starts instead of failing the same way again (`artforge onnx export --force` retries).
Once an export is made, those of the model's older weights and older export formats are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from artforge.errors import ArtForgeError, ErrorCode
from artforge.models.embedded import sha256_of

log = logging.getLogger(__name__)

_hash_lock = threading.Lock()


def weights_digest(files: Iterable[Path], cache_dir: Path) -> str:
    """One hash over the content of `files` (order-independent), with per-file hashes memoized."""
    memo_path = cache_dir / "file-hashes.json"
    with _hash_lock:
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        digest = hashlib.sha256()
        changed = False
        for path in sorted(Path(f).resolve() for f in files):
            stat = path.stat()
            key = str(path)
            entry = memo.get(key)
            if not entry or entry.get("size") != stat.st_size or entry.get("mtime_ns") != stat.st_mtime_ns:
                log.info("hashing %s (%.0f MB) to key its ONNX export", path.name, stat.st_size / 1e6)
                entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_of(path)}
                memo[key] = entry
                changed = True
            digest.update(f"{path.name}\0{entry['sha256']}\n".encode())
        if changed:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(memo, indent=1))
            tmp.replace(memo_path)
    return digest.hexdigest()[:24]


# A variant: what kind of export, its format version, and how it was made ("diffusion-v2-fp32-cpu").
_VARIANT = re.compile(r"(?P<kind>[a-z]+)-v(?P<format>\d+)(?P<rest>(-.+)?)")


@dataclass(frozen=True)
class ExportKey:
    """One export: a model, a variant (what was exported, how: "text-int4-cpu"), its source digest."""

    model: str
    variant: str
    digest: str

    @property
    def stem(self) -> str:
        return f"{self.variant}-{self.digest}"


class ExportCache:
    def __init__(self, cache_dir: Path) -> None:
        self.root = cache_dir / "onnx"

    def folder(self, key: ExportKey) -> Path:
        return self.root / key.model / key.stem

    def find(self, key: ExportKey) -> Path | None:
        folder = self.folder(key)
        return folder if folder.is_dir() else None

    def failure(self, key: ExportKey) -> str | None:
        marker = self.folder(key).with_suffix(".failed")
        return marker.read_text() if marker.is_file() else None

    def build(self, key: ExportKey, export: Callable[[Path], None], force: bool = False) -> Path:
        """The export for `key`, running `export(folder)` when it is missing.

        A failure is recorded and raised as FAILED_PRECONDITION with the reason; a recorded
        failure is raised again without retrying unless `force`.
        """
        if (found := self.find(key)) and not force:
            return found
        marker = self.folder(key).with_suffix(".failed")
        if not force and (reason := self.failure(key)):
            raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, reason)
        target = self.folder(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
            try:
                export(Path(tmp))
            except Exception as exc:
                reason = f"exporting {key.model} to ONNX ({key.variant}) failed: {type(exc).__name__}: {exc}"
                marker.write_text(reason)
                log.warning("%s", reason)
                raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, reason) from exc
            marker.unlink(missing_ok=True)
            if target.exists():
                shutil.rmtree(target)
            Path(tmp).chmod(0o755)  # temporary folders are private; a shared server's users read it too
            Path(tmp).rename(target)
        self._remove_stale(key)
        return target

    def _remove_stale(self, key: ExportKey) -> None:
        """Exports of the same model and variant from older weights, and those of an older export
        format ("diffusion-v1-fp32-cpu" once "diffusion-v2-fp32-cpu" is made): they will not be used
        again, and a full-size image model's export takes gigabytes."""
        for old in (self.root / key.model).iterdir():
            variant, _, digest = old.name.removesuffix(".failed").rpartition("-")
            if len(digest) != len(key.digest) or old.name.startswith("."):
                continue
            stale = digest != key.digest if variant == key.variant else _older_format(variant, key.variant)
            if stale:
                log.info("removing the stale export %s", old)
                shutil.rmtree(old) if old.is_dir() else old.unlink()


def _older_format(variant: str, current: str) -> bool:
    """Whether `variant` is the same kind of export as `current`, made the same way, in an earlier format."""
    old, new = _VARIANT.fullmatch(variant), _VARIANT.fullmatch(current)
    if not (old and new) or old.group("kind", "rest") != new.group("kind", "rest"):
        return False
    return int(old["format"]) < int(new["format"])
