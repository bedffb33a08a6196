"""The device-time estimates the fair queue charges with and queued events show."""

from __future__ import annotations

import random

import pytest

from artforge.jobs.costs import _Fit


def test_a_fixed_cost_and_a_cost_per_unit_are_told_apart():
    fit, rng = _Fit(), random.Random(1)
    for _ in range(40):
        units = rng.choice([1, 2, 4])
        fit.add(units, 0.5 + 2 * units + rng.uniform(-0.05, 0.05))
    assert fit.predict(1) == pytest.approx(2.5, abs=0.1) and fit.predict(8) == pytest.approx(16.5, abs=0.5)


def test_jobs_of_nearly_one_size_never_extrapolate_a_noisy_slope():
    # Text jobs: max_tokens fixed, prompts a few tokens apart, replies ending early or late.
    fit, rng = _Fit(), random.Random(2)
    for _ in range(40):
        fit.add(rng.choice([32.3, 32.5, 32.6, 32.9]), rng.uniform(0.1, 0.7))
    assert 0.1 <= fit.predict(32.5) <= 0.7
    assert fit.predict(512) <= 0.7 * 512 / 32, "scaled by size, not by a slope fitted to noise"


def test_larger_jobs_that_were_not_slower_cost_the_mean():
    fit = _Fit()
    for units, seconds in [(1, 3.0), (4, 1.0), (1, 3.0), (4, 1.0)]:
        fit.add(units, seconds)
    assert fit.predict(10) == pytest.approx(2.0, abs=0.1)
