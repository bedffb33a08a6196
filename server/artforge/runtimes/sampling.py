"""Choosing the next token from a model's logits, the same way on every backend.

numpy on the CPU, for both runtimes: the ONNX Runtime path hands over numpy logits, and torch
ops between ONNX Runtime steps wake torch's OpenMP threads, whose spinning took the cores from
ONNX Runtime's own threads (measured: int4 SmolLM2 at 52 tokens/s with the penalty in torch,
96 in numpy). Each job has its own seeded generator, so jobs never share random state.

A constrained job (a JSON Schema, see artforge.runtimes.constrained) masks the forbidden tokens
after the repetition penalty, so the penalty only reorders allowed tokens and can never rule out
the only ones the grammar permits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from artforge.runtimes.constrained import JsonConstraint

# Top-p looks at the best tokens first and sorts the whole vocabulary only when these do not
# reach the mass: sorting 49k logits per token costs more than an int4 step of a small model.
TOP_P_CANDIDATES = 256


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0: greedy
    top_p: float  # 1: off
    seed: int
    repetition_penalty: float = 1.0  # 1: off
    constraint: JsonConstraint | None = None  # None: any token


def penalize_repeats(logits: np.ndarray, seen: list[int], penalty: float) -> np.ndarray:
    """Make the tokens in `seen` (distinct ids) less likely, as in CTRL; `logits` is left alone."""
    if penalty == 1.0 or not seen:
        return logits
    index = np.asarray(seen, dtype=np.int64)
    values = logits[index]
    logits = logits.copy()
    logits[index] = np.where(values > 0, values / penalty, values * penalty)
    return logits


def sample_next(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator | None) -> int:
    """The next token: argmax at temperature 0, else a draw from the tempered, top-p-cut distribution."""
    if sampling.temperature == 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / sampling.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if sampling.top_p >= 1.0:
        candidates = np.arange(probs.size)
    else:
        candidates = _nucleus(probs, sampling.top_p)
    weights = probs[candidates]
    draw = rng.random() * weights.sum()
    return int(candidates[min(np.searchsorted(np.cumsum(weights), draw, side="right"), candidates.size - 1)])


def _nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """The smallest set of most likely tokens whose mass reaches top_p (the best always stays)."""
    if probs.size > TOP_P_CANDIDATES:
        best = np.argpartition(probs, -TOP_P_CANDIDATES)[-TOP_P_CANDIDATES:]
        if probs[best].sum() < top_p:
            best = np.arange(probs.size)
    else:
        best = np.arange(probs.size)
    order = best[np.argsort(-probs[best], kind="stable")]
    before = np.cumsum(probs[order]) - probs[order]  # mass of the tokens ranked above each
    return order[before < top_p]


class Sampler:
    """One job's sampling state: its seeded generator, the distinct tokens of its reply so far, and
    its place in the grammar when constrained."""

    def __init__(self, sampling: Sampling) -> None:
        self.sampling = sampling
        self.rng = np.random.default_rng(sampling.seed)
        self.seen: dict[int, None] = {}  # insertion-ordered set
        self.mask = sampling.constraint.mask() if sampling.constraint is not None else None

    def next(self, logits: np.ndarray) -> int:
        penalized = penalize_repeats(logits, list(self.seen), self.sampling.repetition_penalty)
        if self.mask is not None:
            penalized = self.mask.apply(penalized)
        token = sample_next(penalized, self.sampling, self.rng)
        if self.mask is not None:
            self.mask.advance(token)
        self.seen[token] = None
        return token
