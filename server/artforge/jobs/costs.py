"""Device-seconds a job will take, learned from the jobs that succeeded: for each kind and
model, a fixed cost per job (loading inputs, encoding results, a cold cache) plus a cost per
unit of work (engines say what a unit is: tokens, pixel-steps), fitted by least squares over
recent jobs. The fair queue charges users with these estimates and corrects them to the
measured time; queued events show waits from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from artforge.jobs.job import Job

# Before a kind and model has run once: an estimate only for ordering the fair queue (it is
# corrected at the finish); waits built on it are not shown.
UNMEASURED_SECONDS = 1.0
# Each finished job weighs this much less than the one after it: recent jobs count most, and a
# change (a model moved to a faster backend) shows within a few dozen jobs.
DECAY = 0.9
# Job sizes must differ by this much (standard deviation over mean) before a fixed cost is
# told apart from a per-unit one; below it, the estimate scales the mean time by size.
MIN_SIZE_SPREAD = 0.1


@dataclass
class _Fit:
    """Decayed sums for a least-squares line seconds = fixed + per_unit x units."""

    n: float = 0.0
    units: float = 0.0
    seconds: float = 0.0
    units_squared: float = 0.0
    units_seconds: float = 0.0

    def add(self, units: float, seconds: float) -> None:
        for name, value in (("n", 1.0), ("units", units), ("seconds", seconds), ("units_squared", units * units)):
            setattr(self, name, getattr(self, name) * DECAY + value)
        self.units_seconds = self.units_seconds * DECAY + units * seconds

    def predict(self, units: float) -> float:
        mean_units, mean_seconds = self.units / self.n, self.seconds / self.n
        if mean_units <= 0:
            return mean_seconds
        spread = self.units_squared / self.n - mean_units**2
        if spread < (MIN_SIZE_SPREAD * mean_units) ** 2:  # sizes too alike to tell a fixed cost from a per-unit one
            return mean_seconds * units / mean_units
        per_unit = (self.units_seconds / self.n - mean_units * mean_seconds) / spread
        fixed = mean_seconds - per_unit * mean_units
        if per_unit < 0:  # larger jobs were not slower: noise, not a cost
            return mean_seconds
        if fixed < 0:  # no fixed cost: a line through zero
            return self.units_seconds / self.units_squared * units
        return fixed + per_unit * units


class CostModel:
    def __init__(self) -> None:
        self._fits: dict[tuple[str, str], _Fit] = {}

    def measured(self, job: Job) -> bool:
        return (job.kind, job.model) in self._fits

    def estimate(self, job: Job) -> float:
        fit = self._fits.get((job.kind, job.model))
        return UNMEASURED_SECONDS if fit is None else fit.predict(job.work.units)

    def learn(self, job: Job, device_seconds: float) -> None:
        """A job that succeeded (so all its work was done) took `device_seconds`."""
        if device_seconds > 0:
            self._fits.setdefault((job.kind, job.model), _Fit()).add(job.work.units, device_seconds)
