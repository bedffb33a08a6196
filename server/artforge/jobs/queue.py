"""Queue policies: which queued job runs next. The scheduler asks its policy and nothing else,
so a fair-share policy (next issue) is a new class here, not a change to the scheduler."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from typing import Protocol

from artforge.jobs.job import Job


class QueuePolicy(Protocol):
    def push(self, job: Job) -> None: ...

    def pop(self) -> Job:
        """The job to run next (the queue is not empty)."""

    def remove(self, job: Job) -> bool:
        """Take a job out (cancelled while queued); False when it was not queued."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Job]:
        """The queued jobs in the order they would run: their announced positions."""


class PriorityFifo:
    """Higher priority first; equal priorities in the order they were queued (jobs resumed after a
    restart are queued first, in their original order)."""

    def __init__(self) -> None:
        self._jobs: list[tuple[int, int, Job]] = []  # (-priority, arrival, job), sorted
        self._arrivals = itertools.count()

    def push(self, job: Job) -> None:
        bisect.insort(self._jobs, (-job.priority, next(self._arrivals), job), key=lambda entry: entry[:2])

    def pop(self) -> Job:
        return self._jobs.pop(0)[2]

    def remove(self, job: Job) -> bool:
        for index, entry in enumerate(self._jobs):
            if entry[2] is job:
                del self._jobs[index]
                return True
        return False

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return (job for _, _, job in self._jobs)
