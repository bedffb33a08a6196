"""Per-user quotas: checked when a job is submitted, each refusal a sentence naming the quota,
its value and when it frees. Device time is a token bucket of device-seconds: it holds up to
the user's burst, refills at their hourly rate, and pays for each job's measured device time
when the job finishes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from artforge.errors import ArtForgeError, ErrorCode
from artforge.users import User
from artforge_client.job_state import duration_words

HOUR = 3600.0


class QuotaExceeded(ArtForgeError):
    def __init__(self, quota: str, message: str) -> None:
        super().__init__(ErrorCode.RESOURCE_EXHAUSTED, f"quota {quota}: {message}")
        self.quota = quota


@dataclass
class _Account:
    bucket: float  # device-seconds left, as of `updated` (negative: in debt)
    updated: float
    finished: deque[tuple[float, float]] = field(default_factory=deque)  # (when, device-seconds), the last hour


class QuotaLedger:
    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}

    def _account(self, user: User, now: float) -> _Account:
        account = self._accounts.get(user.name)
        capacity = user.quota.bucket_seconds
        if account is None:
            account = self._accounts[user.name] = _Account(capacity, now)
        elif user.quota.device_seconds_per_hour:
            refill = (now - account.updated) * user.quota.device_seconds_per_hour / HOUR
            account.bucket = min(capacity, account.bucket + refill)
        account.updated = now
        while account.finished and account.finished[0][0] < now - HOUR:
            account.finished.popleft()
        return account

    def device_seconds_left(self, user: User, pending: float, now: float | None = None) -> float:
        """The bucket less `pending`, the estimates of the user's unfinished jobs."""
        return self._account(user, time.time() if now is None else now).bucket - pending

    def last_hour(self, user: User) -> float:
        return sum(seconds for _, seconds in self._account(user, time.time()).finished)

    def check(self, user: User, pixels: int, queued: int, pending: float, next_start: float | None) -> None:
        """Refuse a new job over one of the user's quotas (RESOURCE_EXHAUSTED). `queued`: their
        jobs waiting; `pending`: the estimated device-seconds of their unfinished jobs;
        `next_start`: seconds until their first queued job is expected to start, if known."""
        quota = user.quota
        if quota.max_image_pixels and pixels > quota.max_image_pixels:
            raise QuotaExceeded(
                "max_image_pixels",
                f"{user.name}'s image jobs may have {quota.max_image_pixels} pixels (width x height x batch); "
                f"this one has {pixels}. This quota does not free up: ask for a smaller size or batch, or ask an admin",
            )
        if quota.max_queued_jobs and queued >= quota.max_queued_jobs:
            when = f", in about {duration_words(next_start)}" if next_start else ""
            raise QuotaExceeded(
                "max_queued_jobs",
                f"{user.name} may have {quota.max_queued_jobs} {'job' if quota.max_queued_jobs == 1 else 'jobs'} queued at once "
                f"and has {queued}; "
                f"a place frees when one of them starts{when} (or is cancelled)",
            )
        if quota.device_seconds_per_hour:
            left = self.device_seconds_left(user, pending)
            if left <= 0:
                refill = -left * HOUR / quota.device_seconds_per_hour
                raise QuotaExceeded(
                    "device_seconds_per_hour",
                    f"{user.name} may use {quota.device_seconds_per_hour:g} device-seconds an hour "
                    f"(at most {quota.bucket_seconds:g} at once); their finished, running and queued jobs "
                    f"leave {left:.1f}; enough frees in about {duration_words(refill)}",
                )

    def charge(self, user: User, device_seconds: float) -> None:
        """A job of the user's finished after `device_seconds` on its device."""
        now = time.time()
        account = self._account(user, now)
        if user.quota.device_seconds_per_hour:
            account.bucket -= device_seconds
        account.finished.append((now, device_seconds))
