"""A job another client submits while a host check runs (Blender's run_checks.py, Krita's
krita_checks.py): its events read on a thread as they come, so a check can keep the server busy
while the plugin's own job waits or is refused. Plain Python: both hosts import it."""

from __future__ import annotations

import threading
import time


class Submitted:
    """A job another client submitted, its events read on a thread as they come."""

    def __init__(self, stream) -> None:
        self.stream, self.events, self.error = stream, [], None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        from artforge_client import ArtForgeError

        try:
            for event in self.stream:
                self.events.append(event)
        except ArtForgeError as error:
            self.error = error

    def wait(self, kind: str, timeout: float = 60.0) -> None:
        """Until an event of this kind ("queued", "started") has come; the job's error if it failed."""
        deadline = time.monotonic() + timeout
        while not any(event.HasField(kind) for event in self.events):
            if self.error is not None:
                raise self.error
            assert time.monotonic() < deadline, f"no {kind} event in {timeout} s: {self.events}"
            time.sleep(0.02)

    def refused(self, timeout: float = 30.0):
        """The ArtForgeError of a submission the server refused."""
        self._reader.join(timeout)
        assert self.error is not None, f"the server took the job: {self.events}"
        return self.error

    def stop(self) -> None:
        self.stream.disconnect()  # the server cancels the job of a caller that left
        self._reader.join(10)
