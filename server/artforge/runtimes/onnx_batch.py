"""Continuous batching of text generation on ONNX Runtime, on CPUs, with a prefix cache.

The decode steps of several jobs run as one batch: each step feeds every sequence's last token
through the model at once, so the weights are read once a step for all of them (decoding a
small model is bound by reading its weights, not by arithmetic). Sequences join between steps
(their prompt runs first, on its own) and leave between steps (end of text, a stop string,
max_tokens, a cancel or a deadline: whenever the job stops reading its tokens). Each keeps its
own Sampler, so its seed, penalty and JSON Schema are its own.

The model is the onnxruntime-genai builder's export run with plain ONNX Runtime. Its
GroupQueryAttention takes each row's length from the attention mask and writes the step's keys
and values in place, into one buffer per layer shaped [rows, kv heads, length, head size], so
rows of different lengths decode together, and the first n rows of the buffer are the batch.
(onnxruntime-genai's own Engine batches dynamically only with a PagedAttention export, which
its builder makes for CUDA alone, and it samples by its own rules.)

Alone or in a batch, a greedy job gets the same tokens: int4 MatMulNBits computes a single row
with another kernel, whose logits differ (by up to 0.45 on SmolLM2) from those of any batch of
two rows or more, in which every row comes out the same whatever the others hold. So a lone
sequence decodes beside a scratch row, and a prompt always runs at least two tokens.

The prefix cache keeps the keys and values of recent prompts. A new prompt copies those of the
longest prefix it shares with one (the chat template and system prompt of its task, earlier
turns of a conversation) and runs only the rest: the same numbers as running it all.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from artforge.runtimes.prefix_cache import PrefixCache
from artforge.runtimes.sampling import Sampler, Sampling

log = logging.getLogger(__name__)

MIN_PROMPT_RUN = 2  # prompt tokens always run, never taken from the cache (see the module's docstring)
FIRST_LENGTH = 256  # the buffer's first length in tokens; it doubles as rows need more


@dataclass(frozen=True)
class KvLayout:
    """The export's key/value inputs and outputs, from its genai_config.json."""

    layers: int
    kv_heads: int
    head_size: int
    past_key: str  # with %d for the layer
    past_value: str
    present_key: str
    present_value: str

    @classmethod
    def of(cls, folder: Path) -> KvLayout:
        decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
        inputs, outputs = decoder["inputs"], decoder["outputs"]
        return cls(
            decoder["num_hidden_layers"],
            decoder["num_key_value_heads"],
            decoder["head_size"],
            inputs["past_key_names"],
            inputs["past_value_names"],
            outputs["present_key_names"],
            outputs["present_value_names"],
        )

    @property
    def bytes_per_token(self) -> int:
        """Keys and values of one token of one row, every layer (float32)."""
        return 2 * self.layers * self.kv_heads * self.head_size * 4


class KvBuffer:
    """The batch's keys and values: per layer and for keys and values, [rows, kv heads, length, head size]."""

    def __init__(self, layout: KvLayout, rows: int, length: int) -> None:
        self.rows, self.length = rows, length
        shape = (rows, layout.kv_heads, length, layout.head_size)
        self.arrays = [[np.zeros(shape, np.float32) for _ in range(2)] for _ in range(layout.layers)]
        self.bindings: dict[tuple[int, int], Any] = {}  # (first row, rows) -> its IO binding

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for pair in self.arrays for array in pair)

    def copy_into(self, other: KvBuffer, rows: int, length: int) -> None:
        for mine, theirs in zip(self.arrays, other.arrays, strict=True):
            for a, b in zip(mine, theirs, strict=True):
                b[:rows, :, :length] = a[:rows, :, :length]

    def move_row(self, source: int, target: int, length: int) -> None:
        for pair in self.arrays:
            for array in pair:
                array[target, :, :length] = array[source, :, :length]

    def read(self, row: int, length: int) -> np.ndarray:
        """A copy of one row's first `length` tokens: [layers, 2, kv heads, length, head size]."""
        return np.stack([np.stack([array[row, :, :length] for array in pair]) for pair in self.arrays])

    def write(self, row: int, kv: np.ndarray) -> None:
        length = kv.shape[3]
        for layer, pair in enumerate(self.arrays):
            for index, array in enumerate(pair):
                array[row, :, :length] = kv[layer, index]


def _power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


_END = object()


@dataclass(eq=False)
class _Sequence:
    prompt: np.ndarray
    sampler: Sampler
    max_new_tokens: int
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # tokens, then _END or an exception
    closed: bool = False  # its reader stopped: leave the batch
    length: int = 0  # tokens in its rows of the buffer
    last: int = 0  # the token it feeds the next step
    produced: int = 0
    seconds: float = 0.0  # its prompt's run, and its share of each step it was in

    @property
    def needs(self) -> int:
        """The buffer length it needs by its last token."""
        return len(self.prompt) + self.max_new_tokens

    def emit(self, token: int) -> None:
        self.last = token
        self.produced += 1
        self.out.put(token)
        if self.produced >= self.max_new_tokens:
            self.finish(_END)

    def finish(self, why: object) -> None:
        self.closed = True
        self.out.put(why)


class Generation(Iterator[int]):
    """One job's tokens from a batch. Closing it (what a job that stops reading does) takes its
    sequence out of the batch at the next step."""

    def __init__(self, sequence: _Sequence) -> None:
        self._sequence = sequence
        self._ended = False

    def __next__(self) -> int:
        if self._ended:
            raise StopIteration
        item = self._sequence.out.get()
        if item is _END or isinstance(item, BaseException):
            self._ended = True
            if isinstance(item, BaseException):
                raise item
            raise StopIteration
        return item

    def close(self) -> None:
        self._sequence.closed = True

    @property
    def device_seconds(self) -> float:
        """The device time it used: its prompt's run and its share of each step it was in."""
        return self._sequence.seconds


class ContinuousBatch:
    """The decoding of one model on one CPU device: jobs' sequences join and leave a running batch.

    A thread runs the steps while any sequence is in; `generate` hands a sequence to it and
    yields that sequence's tokens as the steps make them."""

    def __init__(self, session: Any, layout: KvLayout, context_length: int, max_rows: int, max_bytes: int, prefix_bytes: int) -> None:
        """`max_rows`: sequences decoded at once; `max_bytes`: the key/value buffer's bound (a
        sequence that would pass it waits for others to leave; one alone always runs);
        `prefix_bytes`: the prefix cache's bound (0: no cache)."""
        self.session = session
        self.layout = layout
        self.context_length = context_length
        self.max_rows = max(1, max_rows)
        self.max_bytes = max_bytes
        self.prefix = PrefixCache(prefix_bytes) if prefix_bytes > 0 else None
        self._waiting: list[_Sequence] = []
        self._active: list[_Sequence] = []  # row i of the buffer is _active[i]
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._buffer: KvBuffer | None = None
        self.most_rows = 0  # the most sequences it has decoded in one step

    def generate(self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int) -> Generation:
        """Token ids as the batch makes them, up to `max_new_tokens`; closing it leaves the batch."""
        sequence = _Sequence(np.asarray(prompt_ids, np.int64), Sampler(sampling), max_new_tokens)
        with self._lock:
            self._waiting.append(sequence)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="artforge-text-batch", daemon=True)
                self._thread.start()
        return Generation(sequence)

    @property
    def memory_bytes(self) -> int:
        """What the batch holds now: its key/value buffer and its prefix cache."""
        buffer = self._buffer
        return (buffer.nbytes if buffer is not None else 0) + (self.prefix.bytes if self.prefix is not None else 0)

    # -- the batch's thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                self._compact()
                joining = self._admit()
                if not self._active and not joining:
                    self._thread = None
                    self._buffer = None  # an idle batch holds no key/value memory
                    return
            for sequence in joining:
                self._join(sequence)
            if any(not s.closed for s in self._active):
                self._step()

    def _compact(self) -> None:
        """Drop the sequences that left, moving the rows after them up (in order, so a row is
        read before it is written over)."""
        kept = [(row, s) for row, s in enumerate(self._active) if not s.closed]
        if len(kept) == len(self._active):
            return
        for row, (old, sequence) in enumerate(kept):
            if old != row and self._buffer is not None:
                self._buffer.move_row(old, row, sequence.length)
        self._active = [sequence for _, sequence in kept]

    def _admit(self) -> list[_Sequence]:
        """Waiting sequences that fit now (rows and memory), in their order; closed ones dropped."""
        self._waiting = [s for s in self._waiting if not s.closed]
        joining: list[_Sequence] = []
        for sequence in list(self._waiting):
            count = len(self._active) + len(joining) + 1
            rows, length = self._shape_for(count, [*self._active, *joining, sequence])
            alone = count == 1
            if count > self.max_rows or (not alone and rows * length * self.layout.bytes_per_token > self.max_bytes):
                break  # in order: a later, smaller job does not overtake one waiting for room
            self._waiting.remove(sequence)
            joining.append(sequence)
        return joining

    def _shape_for(self, rows: int, sequences: list[_Sequence]) -> tuple[int, int]:
        """The buffer's rows (the scratch row included) and length for `rows` of `sequences`:
        both grow by doubling, from what the buffer has, so growing (a copy) is rare."""
        buffer = self._buffer
        needed_rows = max(rows + 1, buffer.rows if buffer else 0)
        needed_length = max(max(s.needs for s in sequences), buffer.length if buffer else 0)
        length = FIRST_LENGTH
        while length < needed_length:
            length *= 2
        return min(_power_of_two(needed_rows), max(needed_rows, self.max_rows + 1)), min(length, max(needed_length, self.context_length))

    def _reserve(self, rows: int, sequences: list[_Sequence]) -> KvBuffer:
        """The buffer, grown (keeping what it holds) to fit `rows` rows of `sequences`."""
        shape = self._shape_for(rows, sequences)
        buffer = self._buffer
        if buffer is not None and (buffer.rows, buffer.length) == shape:
            return buffer
        grown = KvBuffer(self.layout, *shape)
        if buffer is not None:
            buffer.copy_into(grown, len(self._active), max((s.length for s in self._active), default=0))
        self._buffer = grown
        return grown

    def _join(self, sequence: _Sequence) -> None:
        """Run its prompt (the part the prefix cache lacks) into the next free row, and sample its first token."""
        row = len(self._active)
        prompt = sequence.prompt
        try:
            buffer = self._reserve(row + 1, [*self._active, sequence])
            cached = self.prefix.find(prompt, len(prompt) - MIN_PROMPT_RUN) if self.prefix is not None else None
            start = cached.shape[3] if cached is not None else 0
            if cached is not None:
                buffer.write(row, cached)
            mask = np.ones((1, len(prompt)), np.int64)
            started = time.perf_counter()
            logits = self._forward(buffer, row, 1, prompt[None, start:], mask)
            sequence.seconds += time.perf_counter() - started
            sequence.length = len(prompt)
            if self.prefix is not None and not self.prefix.covers(prompt):
                self.prefix.add(prompt, buffer.read(row, len(prompt)))
            token = sequence.sampler.next(logits[0, -1])
        except Exception as exc:  # a failed prompt fails its own job only
            log.exception("a text job's prompt failed in the batch")
            sequence.finish(exc)
            return
        with self._lock:
            self._active.append(sequence)
        sequence.emit(token)

    def _step(self) -> None:
        """One decode step of every active sequence (beside the scratch row when alone)."""
        active = self._active
        self.most_rows = max(self.most_rows, len(active))
        rows = max(len(active), 2)
        total = max(s.length for s in active) + 1
        buffer = self._reserve(len(active), active)
        tokens = np.zeros((rows, 1), np.int64)
        mask = np.zeros((rows, total), np.int64)
        mask[:, 0] = 1  # the scratch row: one token at its start
        for row, sequence in enumerate(active):
            tokens[row, 0] = sequence.last
            mask[row, : sequence.length + 1] = 1
        started = time.perf_counter()
        try:
            logits = self._forward(buffer, 0, rows, tokens, mask)
        except Exception as exc:  # the device failed: every job in the batch fails with it
            log.exception("a text batch step failed")
            for sequence in active:
                sequence.finish(exc)
            return
        share = (time.perf_counter() - started) / len(active)
        for row, sequence in enumerate(active):
            sequence.seconds += share
            if sequence.closed:
                continue
            sequence.length += 1
            try:
                token = sequence.sampler.next(logits[row, -1])
            except Exception as exc:  # its grammar or sampling failed: that job alone
                sequence.finish(exc)
                continue
            sequence.emit(token)

    def _forward(self, buffer: KvBuffer, row: int, rows: int, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Run rows `row`..`row + rows` of the buffer; their keys and values are written in place."""
        binding = buffer.bindings.get((row, rows))
        if binding is None:  # the same rows decode step after step: bind their views once
            binding = buffer.bindings[(row, rows)] = self._bind(buffer, row, rows)
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(tokens))
        binding.bind_cpu_input("attention_mask", mask)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[-1].numpy()  # the logits, bound last

    def _bind(self, buffer: KvBuffer, row: int, rows: int) -> Any:
        import onnxruntime as ort

        layout = self.layout
        binding = self.session.io_binding()
        for layer, pair in enumerate(buffer.arrays):
            names = ((layout.past_key, layout.present_key), (layout.past_value, layout.present_value))
            for array, (past, present) in zip(pair, names, strict=True):
                value = ort.OrtValue.ortvalue_from_numpy(array[row : row + rows])  # a view: written in place
                binding.bind_ortvalue_input(past % layer, value)
                binding.bind_ortvalue_output(present % layer, value)
        binding.bind_output("logits")
        return binding
