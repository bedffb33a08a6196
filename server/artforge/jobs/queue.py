"""Queue policies: which queued job runs next. The scheduler asks its policy and nothing else.

Two policies: `PriorityFifo` (priority, then arrival: one artist's own server) and
`FairShare` (a studio's shared server: users take turns by their share of device time).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from artforge.jobs.job import Job

Runnable = Callable[[Job], bool]  # may this job start now (its owner is under their running-jobs quota)?


def _always(job: Job) -> bool:
    return True


class QueuePolicy(Protocol):
    name: str

    def push(self, job: Job, ahead: bool = False) -> None:
        """Queue a job; `ahead`: before the jobs of its priority (it ran, and its worker was lost)."""

    def pop(self, runnable: Runnable = _always) -> Job | None:
        """The job to run next among those `runnable` allows; None when there is none."""

    def remove(self, job: Job) -> bool:
        """Take a job out (cancelled while queued); False when it was not queued."""

    def settle(self, job: Job, device_seconds: float) -> None:
        """A job that this policy started has finished after `device_seconds` on its device."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Job]:
        """The queued jobs in the order they would run: their announced positions."""


# Arrival numbers of jobs queued `ahead`: below every other, in the order they came back.
_AHEAD = -(1 << 62)


class _OrderedJobs:
    """Jobs by (-priority, arrival): higher priority first, then first come first served."""

    def __init__(self) -> None:
        self._jobs: list[tuple[int, int, Job]] = []

    def add(self, job: Job, arrival: int) -> None:
        bisect.insort(self._jobs, (-job.priority, arrival, job), key=lambda entry: entry[:2])

    def first(self, runnable: Runnable = _always) -> Job | None:
        return next((job for _, _, job in self._jobs if runnable(job)), None)

    def remove(self, job: Job) -> bool:
        for index, entry in enumerate(self._jobs):
            if entry[2] is job:
                del self._jobs[index]
                return True
        return False

    def copy(self) -> _OrderedJobs:
        other = _OrderedJobs()
        other._jobs = list(self._jobs)
        return other

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return (job for _, _, job in self._jobs)


class PriorityFifo:
    """Higher priority first; equal priorities in the order they were queued (jobs resumed after a
    restart are queued first, in their original order)."""

    name = "fifo"

    def __init__(self) -> None:
        self._jobs = _OrderedJobs()
        self._arrivals = itertools.count()

    def push(self, job: Job, ahead: bool = False) -> None:
        self._jobs.add(job, next(self._arrivals) + (_AHEAD if ahead else 0))

    def pop(self, runnable: Runnable = _always) -> Job | None:
        job = self._jobs.first(runnable)
        if job is not None:
            self._jobs.remove(job)
        return job

    def remove(self, job: Job) -> bool:
        return self._jobs.remove(job)

    def settle(self, job: Job, device_seconds: float) -> None:
        pass

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs)


# Device-seconds a user of weight 1 earns per turn. Small next to any job, so that a turn
# serves at most one job and the order is close to an exact weighted share; rounds in which
# nobody could start a job are skipped in one step, so it costs nothing to keep it small.
QUANTUM_SECONDS = 0.01


@dataclass
class _Band:
    """The jobs of one priority band: a ring of users taking turns, each user's own jobs in order."""

    ring: list[str] = field(default_factory=list)
    queues: dict[str, _OrderedJobs] = field(default_factory=dict)
    cursor: int = 0  # the user whose turn is next

    def copy(self) -> _Band:
        return _Band(list(self.ring), {user: jobs.copy() for user, jobs in self.queues.items()}, self.cursor)


class FairShare:
    """Weighted fair sharing of device time between users, by deficit round robin.

    Bands first: an admin's job with a priority above 0 is in band `priority`, which runs
    before lower bands; every other job is in band 0. Within a band, users take turns around a
    ring; each turn adds QUANTUM_SECONDS x weight to the user's deficit, and the user's next job
    starts once the deficit covers its estimated device-seconds, which are then taken from it
    (one job a turn).
    When the job finishes, the difference between the measured and the estimated time is taken
    too, so over time every user is charged what their jobs really used, and shares follow the
    weights. Within a user, jobs run by their own priority, then in order of arrival: a user's
    priority reorders only their own jobs. A user whose queue empties starts again from zero, as
    in classic DRR: nobody saves up turns by waiting, and an old debt is not held against them
    (only the correction of a job still running when they left carries over).
    """

    name = "fair"

    def __init__(self, weight: Callable[[str], float], estimate: Callable[[Job], float]) -> None:
        self._weight = weight
        self._estimate = estimate
        self._bands: dict[int, _Band] = {}
        self._deficit: dict[str, float] = {}
        self._arrivals = itertools.count()
        self._length = 0

    @staticmethod
    def band_of(job: Job) -> int:
        return max(job.priority, 0)  # only admins may give a priority above 0

    def push(self, job: Job, ahead: bool = False) -> None:
        band = self._bands.setdefault(self.band_of(job), _Band())
        user = job.owner
        if user not in band.queues:
            band.queues[user] = _OrderedJobs()
            # A user who joins goes last in the current round: just before the next turn.
            band.ring.insert(band.cursor, user)
            band.cursor += 1 if len(band.ring) > 1 else 0
        band.queues[user].add(job, next(self._arrivals) + (_AHEAD if ahead else 0))
        self._length += 1

    def pop(self, runnable: Runnable = _always) -> Job | None:
        for level in sorted(self._bands, reverse=True):
            job = self._take(self._bands[level], self._deficit, runnable)
            if job is not None:
                self.remove(job)
                return job
        return None

    def _take(self, band: _Band, deficit: dict[str, float], runnable: Runnable) -> Job | None:
        """The next job of a band by deficit round robin, its cost taken from its user's deficit."""
        heads = {user: band.queues[user].first(runnable) for user in band.ring}
        if not any(heads.values()):
            return None
        unserved = 0  # turns in a row in which nobody started a job
        while True:
            user = band.ring[band.cursor]
            head = heads[user]
            band.cursor = (band.cursor + 1) % len(band.ring)
            if head is not None:
                deficit[user] = deficit.get(user, 0.0) + QUANTUM_SECONDS * self._weight(user)
                cost = self._estimate(head)
                if deficit[user] >= cost:
                    # One job a turn: credit (a job that took less than its estimate) is spent on
                    # later turns, not in a burst that others wait behind.
                    deficit[user] -= cost
                    return head
            unserved += 1
            if unserved == len(band.ring):  # a whole round and nobody could start: skip the rounds to come
                self._skip_rounds(heads, deficit)
                unserved = 0

    def _skip_rounds(self, heads: dict[str, Job | None], deficit: dict[str, float]) -> None:
        """Add the quanta of the rounds in which no user could start a job, all at once."""
        rounds = {}
        for user, head in heads.items():
            if head is not None:
                quantum = QUANTUM_SECONDS * self._weight(user)
                rounds[user] = math.ceil((self._estimate(head) - deficit.get(user, 0.0)) / quantum)
        skip = min(rounds.values()) - 1
        if skip > 0:
            for user in rounds:
                deficit[user] = deficit.get(user, 0.0) + skip * QUANTUM_SECONDS * self._weight(user)

    @staticmethod
    def _take_out(band: _Band, job: Job, deficit: dict[str, float]) -> bool:
        """Take a job out of its band; a user left with none leaves the ring. False if not there."""
        user = job.owner
        if user not in band.queues or not band.queues[user].remove(job):
            return False
        if not band.queues[user]:
            index = band.ring.index(user)
            del band.ring[index]
            del band.queues[user]
            if index < band.cursor:
                band.cursor -= 1
            elif band.cursor == len(band.ring):  # the last of the round left: the next round begins
                band.cursor = 0
            deficit[user] = 0.0
        return True

    def remove(self, job: Job) -> bool:
        level = self.band_of(job)
        band = self._bands.get(level)
        if band is None or not self._take_out(band, job, self._deficit):
            return False
        self._length -= 1
        if not band.ring:
            del self._bands[level]
        return True

    def settle(self, job: Job, device_seconds: float) -> None:
        """Take the difference between the measured time and the estimate charged at the start."""
        self._deficit[job.owner] = self._deficit.get(job.owner, 0.0) - (device_seconds - job.charged)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Job]:
        """The order jobs would start in if every one could start: pops on a copy of the state."""
        deficit = dict(self._deficit)
        for level in sorted(self._bands, reverse=True):
            band = self._bands[level].copy()
            while band.ring:
                job = self._take(band, deficit, _always)
                self._take_out(band, job, deficit)
                yield job
