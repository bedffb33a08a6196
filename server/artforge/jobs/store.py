"""The job store: every accepted job and its event log in SQLite, image results as files.

    <data>/jobs.sqlite3        jobs (request, owner, priority, deadline, state, attempts) and events
    <data>/results/<job>/<n>   result n of a job, as it is sent (PNG or raw pixels)
    <data>/lock                held by the one server using this folder

A job is committed before any of its events is sent, and every event before a watcher sees
it, so what a client has seen survives a crash with the same sequence numbers. SQLite runs in
WAL mode with synchronous=FULL: a commit is on disk when it returns. Events appended in one
turn of the event loop are committed together at its end (a group commit), then shown.

Only the event loop's thread touches the database. Result files are written on the device
threads (before their header event is appended) and read a chunk at a time as they are sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from artforge.engines.base import Provenance, Usage
from artforge.errors import ArtForgeError, ErrorCode
from artforge.filelock import lock_file
from artforge.images import EncodedImage
from artforge.jobs.events import Event, Finished, ImageChunk, ImageHeader, JobState, Progress, Queued, Started, TextDelta

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    label TEXT NOT NULL,
    owner TEXT NOT NULL,
    priority INTEGER NOT NULL,
    output_format TEXT NOT NULL,
    request BLOB,                           -- as the api received it; dropped at finish
    submitted_at REAL NOT NULL,             -- unix time
    deadline REAL,                          -- unix time
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,    -- times it started running
    events INTEGER NOT NULL DEFAULT 0,
    results INTEGER NOT NULL DEFAULT 0,     -- result files written
    result_bytes INTEGER NOT NULL DEFAULT 0,
    finished_at REAL,                       -- unix time
    dropped TEXT                            -- why its events and results were dropped early
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, finished_at);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    elapsed REAL NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    blob BLOB,
    PRIMARY KEY (job_id, sequence)
) WITHOUT ROWID;
"""


@dataclass
class StoredJob:
    """A job's row: what a restart needs to queue it again, and what GetJob shows of it."""

    id: str
    kind: str
    model: str
    label: str
    owner: str
    priority: int
    output_format: str
    request: bytes | None
    submitted_at: float
    deadline: float | None
    state: JobState
    attempts: int
    events: int
    results: int
    result_bytes: int
    finished_at: float | None
    dropped: str | None


class DataFolderInUse(ArtForgeError):
    def __init__(self, folder: Path) -> None:
        message = f"another ArtForge server uses the data folder {folder}; give this one its own (--data-dir)"
        super().__init__(ErrorCode.FAILED_PRECONDITION, message)


class JobStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.results_dir = folder / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._lock: BinaryIO = open(folder / "lock", "ab")  # held for the store's life
        if not lock_file(self._lock, wait=False):
            self._lock.close()
            raise DataFolderInUse(folder)
        self._db = sqlite3.connect(folder / "jobs.sqlite3")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ArtForgeError(
                ErrorCode.FAILED_PRECONDITION, f"{folder}: the job store is from a newer ArtForge (format {version}); use a new data folder"
            )
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db.commit()
        self._after_commit: list[Callable[[], None]] = []
        self._commit_scheduled = False

    def close(self) -> None:
        self.commit()
        self._db.close()
        self._lock.close()

    # -- writing (event-loop thread) ---------------------------------------------------------

    def add(self, stored: StoredJob) -> None:
        fields = dataclasses.asdict(stored)
        fields["state"] = stored.state.value
        names = ", ".join(fields)
        self._db.execute(f"INSERT INTO jobs ({names}) VALUES ({', '.join(':' + n for n in fields)})", fields)

    def append(self, job_id: str, sequence: int, elapsed: float, event: Event, on_commit: Callable[[], None]) -> None:
        """Add an event; `on_commit` runs once it is on disk (by the end of this loop turn)."""
        kind, body, blob = _encode(event)
        self._db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", (job_id, sequence, elapsed, kind, body, blob))
        self._db.execute("UPDATE jobs SET events = ? WHERE id = ?", (sequence + 1, job_id))
        if isinstance(event, ImageHeader):
            self._db.execute(
                "UPDATE jobs SET results = ?, result_bytes = result_bytes + ? WHERE id = ?",
                (event.result_index + 1, event.total_bytes, job_id),
            )
        if isinstance(event, Finished):
            self._db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, request = NULL WHERE id = ?", (event.state.value, time.time(), job_id)
            )
        self.after_commit(on_commit)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once what was written so far is on disk (by the end of this loop turn)."""
        self._after_commit.append(callback)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self.commit)

    def set_state(self, job_id: str, state: JobState, attempts: int | None = None) -> None:
        """Record that a job started (with its attempt count) or was queued again; on disk at return,
        so a crash while it runs is counted against it."""
        if attempts is None:
            self._db.execute("UPDATE jobs SET state = ? WHERE id = ?", (state.value, job_id))
        else:
            self._db.execute("UPDATE jobs SET state = ?, attempts = ? WHERE id = ?", (state.value, attempts, job_id))
        self.commit()

    def commit(self) -> None:
        self._db.commit()
        callbacks, self._after_commit, self._commit_scheduled = self._after_commit, [], False
        for callback in callbacks:
            callback()

    # -- result files (any thread) -----------------------------------------------------------

    def result_path(self, job_id: str, index: int) -> Path:
        return self.results_dir / job_id / str(index)

    def write_result(self, job_id: str, index: int, data: bytes) -> None:
        """Write a result whole and durably before its header event is appended."""
        path = self.result_path(job_id, index)
        path.parent.mkdir(exist_ok=True)
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)

    def read_chunk(self, job_id: str, chunk: ImageChunk) -> bytes:
        with open(self.result_path(job_id, chunk.result_index), "rb") as file:
            file.seek(chunk.offset)
            return file.read(chunk.length)

    # -- reading (event-loop thread) ---------------------------------------------------------

    def job(self, job_id: str) -> StoredJob | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _stored(row) if row else None

    def unfinished(self) -> list[StoredJob]:
        """Jobs queued or running when the server stopped, in submission order."""
        states = (JobState.QUEUED.value, JobState.RUNNING.value)
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY seq", states).fetchall()
        return [_stored(row) for row in rows]

    def finished(self, limit: int, owner: str | None = None) -> list[StoredJob]:
        """Finished jobs still kept (not dropped), newest first; only `owner`'s when given."""
        where = "state NOT IN (?, ?) AND dropped IS NULL" + (" AND owner = ?" if owner is not None else "")
        states = (JobState.QUEUED.value, JobState.RUNNING.value, *([owner] if owner is not None else []))
        query = f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY finished_at DESC LIMIT ?"
        return [_stored(row) for row in self._db.execute(query, (*states, limit)).fetchall()]

    def events(self, job_id: str, from_sequence: int = 0, limit: int = -1) -> list[tuple[int, float, Event]]:
        rows = self._db.execute(
            "SELECT sequence, elapsed, kind, body, blob FROM events WHERE job_id = ? AND sequence >= ? ORDER BY sequence LIMIT ?",
            (job_id, from_sequence, limit),
        ).fetchall()
        return [(sequence, elapsed, _decode(kind, body, blob)) for sequence, elapsed, kind, body, blob in rows]

    def last_event(self, job_id: str) -> Event | None:
        row = self._db.execute("SELECT kind, body, blob FROM events WHERE job_id = ? ORDER BY sequence DESC LIMIT 1", (job_id,)).fetchone()
        return _decode(*row) if row else None

    # -- retention ---------------------------------------------------------------------------

    def expire(self, finished_before: float, keep: Iterable[str]) -> list[str]:
        """Forget jobs that finished before a time (their TTL passed), but those in `keep` (being
        read); their ids."""
        keep = set(keep)
        rows = self._db.execute("SELECT id FROM jobs WHERE finished_at < ? ORDER BY seq", (finished_before,))
        ids = [job_id for (job_id,) in rows if job_id not in keep]
        self._forget(ids, None)
        return ids

    def drop_over(self, max_bytes: int, keep: Iterable[str], reason: str) -> list[str]:
        """Drop the results and events of the oldest finished jobs until the kept results fit in
        `max_bytes`; the jobs' rows stay, with `reason`, until their TTL. Jobs in `keep` (being
        read) are passed over. The dropped jobs' ids."""
        total = self._db.execute("SELECT COALESCE(SUM(result_bytes), 0) FROM jobs WHERE dropped IS NULL").fetchone()[0]
        if total <= max_bytes:
            return []
        rows = self._db.execute(
            "SELECT id, result_bytes FROM jobs WHERE finished_at IS NOT NULL AND dropped IS NULL AND result_bytes > 0 ORDER BY finished_at"
        ).fetchall()
        keep, dropped = set(keep), []
        for job_id, size in rows:
            if total <= max_bytes:
                break
            if job_id not in keep:
                dropped.append(job_id)
                total -= size
        self._forget(dropped, reason)
        return dropped

    def result_bytes(self) -> int:
        return self._db.execute("SELECT COALESCE(SUM(result_bytes), 0) FROM jobs WHERE dropped IS NULL").fetchone()[0]

    def _forget(self, ids: list[str], reason: str | None) -> None:
        """Delete jobs' events and files; their rows too, unless a `reason` keeps them as tombstones."""
        for job_id in ids:
            self._db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            if reason is None:
                self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            else:
                self._db.execute("UPDATE jobs SET dropped = ?, events = 0, result_bytes = 0 WHERE id = ?", (reason, job_id))
        self.commit()
        for job_id in ids:
            shutil.rmtree(self.results_dir / job_id, ignore_errors=True)


_COLUMNS = ", ".join(field.name for field in dataclasses.fields(StoredJob))


def _stored(row: tuple) -> StoredJob:
    stored = StoredJob(*row)
    stored.state = JobState(stored.state)
    return stored


# -- events as rows: a JSON body, and a blob for a preview's PNG -----------------------------------


def _shape(image: EncodedImage) -> dict[str, Any]:
    return {"encoding": image.encoding, "dtype": image.dtype, "width": image.width, "height": image.height, "channels": image.channels}


def _image(shape: dict[str, Any], data: bytes = b"") -> EncodedImage:
    return EncodedImage(data, **shape)


def _encode(event: Event) -> tuple[str, str, bytes | None]:
    blob = None
    match event:
        case Progress(preview=EncodedImage() as preview):
            body = {**dataclasses.asdict(event), "preview": _shape(preview)}
            blob = preview.data
        case ImageHeader():
            body = {**dataclasses.asdict(event), "image": _shape(event.image)}
        case ImageChunk():
            body = {"result_index": event.result_index, "offset": event.offset, "length": event.length}
        case Finished():
            code = event.error_code.name if event.error_code else None
            body = {**dataclasses.asdict(event), "state": event.state.name, "error_code": code}
        case _:
            body = dataclasses.asdict(event)
    return type(event).__name__, json.dumps(body), blob


def _decode(kind: str, body: str, blob: bytes | None) -> Event:
    fields = json.loads(body)
    match kind:
        case "Queued":
            return Queued(**fields)
        case "Started":
            return Started(**fields)
        case "Progress":
            preview = fields.pop("preview")
            return Progress(**fields, preview=_image(preview, blob or b"") if preview else None)
        case "TextDelta":
            return TextDelta(**fields)
        case "ImageHeader":
            provenance = fields.pop("provenance")
            provenance["loras"] = [tuple(lora) for lora in provenance["loras"]]
            provenance["controls"] = [tuple(control) for control in provenance.get("controls", [])]  # none in events stored before controls
            return ImageHeader(**{**fields, "image": _image(fields["image"]), "provenance": Provenance(**provenance)})
        case "ImageChunk":
            return ImageChunk(**fields)
        case "Finished":
            code = fields.pop("error_code")
            return Finished(
                **{**fields, "state": JobState[fields["state"]], "usage": Usage(**fields["usage"])},
                error_code=ErrorCode[code] if code else None,
            )
    raise ValueError(f"unknown event kind {kind!r} in the job store")
