"""A prefix cache: the keys and values of recent prompts, for prompts that start the same way.

Jobs of one task share its chat template and system prompt, and a conversation's turns share
its earlier ones. A new prompt takes the keys and values of the longest prefix it shares with
a cached prompt and runs only the rest. Both text runtimes use it: ONNX Runtime with numpy
arrays, PyTorch with tensors (on the model's device); an entry is either, shaped
[layers, 2 (keys, values), kv heads, tokens, head size].
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class _Entry:
    tokens: np.ndarray
    kv: Any  # numpy or torch, [layers, 2, kv heads, len(tokens), head size]


class PrefixCache:
    """Keys and values of recent prompts. A prompt reuses the longest prefix it shares with any
    of them; least recently used dropped first, to stay within `max_bytes`. Safe to share
    between threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0
        self._lock = threading.Lock()

    def find(self, prompt: np.ndarray, limit: int) -> Any | None:
        """The keys and values of the longest cached prefix of `prompt`, at most `limit` tokens."""
        with self._lock:
            return self._find(prompt, limit)

    def _find(self, prompt: np.ndarray, limit: int) -> Any | None:
        best, best_key = 0, b""
        for key, entry in self._entries.items():
            n = min(len(entry.tokens), limit)
            if n <= best:
                continue
            same = entry.tokens[:n] == prompt[:n]
            common = n if same.all() else int(np.argmin(same))
            if common > best:
                best, best_key = common, key
        if not best:
            self.misses += 1
            return None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best
        return self._entries[best_key].kv[:, :, :, :best]

    def add(self, prompt: np.ndarray, kv: Any) -> None:
        with self._lock:
            self._add(prompt, kv)

    def _add(self, prompt: np.ndarray, kv: Any) -> None:
        if kv.nbytes > self.max_bytes:
            return
        for key in [key for key, entry in self._entries.items() if _starts(prompt, entry.tokens)]:
            self._drop(key)  # a prefix of this prompt: this entry serves all it served
        while self._entries and self.bytes + kv.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[prompt.tobytes()] = _Entry(prompt, kv)
        self.bytes += kv.nbytes

    def covers(self, prompt: np.ndarray) -> bool:
        """Some entry starts with all of `prompt`."""
        with self._lock:
            return any(_starts(entry.tokens, prompt) for entry in self._entries.values())

    def _drop(self, key: bytes) -> None:
        self.bytes -= self._entries.pop(key).kv.nbytes


def _starts(tokens: np.ndarray, prefix: np.ndarray) -> bool:
    return len(prefix) <= len(tokens) and bool((tokens[: len(prefix)] == prefix).all())
