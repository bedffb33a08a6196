"""ONNX exports cached under the models folder, keyed by a hash of the source weights.

    <models>/.cache/onnx/<model>/<variant>-<digest>/         a finished export
    <models>/.cache/onnx/<model>/<variant>-<digest>.failed   why exporting these weights failed
    <models>/.cache/onnx/<model>/.export.lock                held while one of the model's exports is made
    <models>/.cache/file-hashes.json                         SHA-256 of source files, by path, size and mtime

The digest covers every source file's content, so a changed checkpoint gets a new export
while an untouched one is found again without re-exporting. Hashing gigabytes on every start
would cost tens of seconds, so each file's hash is remembered with its size and mtime and
only recomputed when either changes. An export is written to a temporary folder and renamed
into place when complete: a crash mid-export never leaves a half export behind. A failed
export is remembered with its reason, so `backend = "auto"` falls back to PyTorch at once on
later starts instead of failing the same way again (`artforge onnx export --force` retries).
Once an export is made, those of the model's older weights and older export formats are removed.

Exports of one model are made one at a time, whoever makes them: a file lock (flock; on Windows
msvcrt.locking) serializes two devices of one server, two servers on one models folder, and
`artforge onnx export` next to a server. The second waits, then finds the first's export and
uses it; so no one exports twice or deletes an export another is loading.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from artforge.errors import ArtForgeError, ErrorCode
from artforge.filelock import lock_file
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
            tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")  # another process may be writing its own
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
        failure is raised again without retrying unless `force`. Under the model's export lock:
        an export that another thread or process made while this one waited is used, even
        with `force` (it is as new as a forced one would be).
        """
        if (found := self.find(key)) and not force:
            return found
        target = self.folder(key)
        asked_for = _identity(target)
        with export_lock(target.parent, key.model):
            if (found := self.find(key)) and (not force or _identity(found) != asked_for):
                return found
            marker = target.with_suffix(".failed")
            if not force and (reason := self.failure(key)):
                raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, reason)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
                try:
                    export(Path(tmp))
                except Exception as exc:
                    reason = f"exporting {key.model} to ONNX ({key.variant}) failed: {type(exc).__name__}: {exc}"
                    marker.write_text(reason)
                    log.warning("%s", reason)
                    raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, reason) from exc
                marker.unlink(missing_ok=True)
                Path(tmp).chmod(0o755)  # temporary folders are private; a shared server's users read it too
                if target.exists():
                    # Forced: the old export moves aside before the new one takes its place, so
                    # its path is missing for an instant, not for as long as deleting it takes.
                    replaced = Path(tempfile.mkdtemp(dir=target.parent, prefix=".replaced-"))
                    target.rename(replaced / target.name)
                    Path(tmp).rename(target)
                    shutil.rmtree(replaced)
                else:
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


def _identity(folder: Path) -> tuple[int, int] | None:
    """What tells one export in `folder` from the next made there: (inode, mtime)."""
    try:
        stat = folder.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


@contextmanager
def export_lock(folder: Path, model: str) -> Iterator[None]:
    """Held while one of `model`'s exports (in `folder`) is made, replaced or removed; released when the file closes."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".export.lock", "ab") as file:
        if not lock_file(file, wait=False):
            log.info("waiting for another export of %s to finish", model)
            lock_file(file, wait=True)
        yield


def _older_format(variant: str, current: str) -> bool:
    """Whether `variant` is the same kind of export as `current`, made the same way, in an earlier format."""
    old, new = _VARIANT.fullmatch(variant), _VARIANT.fullmatch(current)
    if not (old and new) or old.group("kind", "rest") != new.group("kind", "rest"):
        return False
    return int(old["format"]) < int(new["format"])
