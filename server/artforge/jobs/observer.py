"""What a job's lifecycle tells an observer (the Prometheus metrics), on the event loop.

The scheduler calls these as jobs move; an observer must be cheap and never raise.
"""

from __future__ import annotations

from typing import Protocol


class JobObserver(Protocol):
    def submitted(self, user: str, kind: str, model: str) -> None: ...

    def refused(self, user: str, quota: str) -> None:
        """A job refused for a quota ("max_queued_jobs", "device_seconds_per_hour",
        "max_image_pixels") or a full queue ("max_queue")."""

    def started(self, kind: str, model: str, device: str, queue_wait_seconds: float) -> None: ...

    def finished(
        self,
        user: str,
        kind: str,
        model: str,
        state: str,
        run_seconds: float,
        time_to_first_token_seconds: float,
        completion_tokens: int,
        images: int,
    ) -> None:
        """`state`: "succeeded", "failed", "cancelled" or "deadline_exceeded"; `run_seconds`:
        from its start to its end (0 for a job that never started)."""

    def device_busy(self, device: str, seconds: float) -> None:
        """`device` ran jobs for `seconds`, from its first job's start to its last one's end:
        jobs that shared it (a text batch) count once."""

    def queue_depths(self, depths: dict[str, int]) -> None:
        """Queued jobs per user: the whole picture (a user left out has none)."""


class NoObserver:
    def submitted(self, user: str, kind: str, model: str) -> None:
        pass

    def refused(self, user: str, quota: str) -> None:
        pass

    def started(self, kind: str, model: str, device: str, queue_wait_seconds: float) -> None:
        pass

    def finished(self, *args: object) -> None:
        pass

    def device_busy(self, device: str, seconds: float) -> None:
        pass

    def queue_depths(self, depths: dict[str, int]) -> None:
        pass
