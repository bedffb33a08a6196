"""Causal language models on PyTorch (transformers), one token at a time, with a prefix cache.

The decode loop is ours rather than `model.generate` so that the engine decides after every
token whether to go on (cancel, deadline, stop strings), and tokens are chosen by
artforge.runtimes.sampling exactly as on the ONNX Runtime path.

A prompt that starts like a recent one (its task's chat template and system prompt) copies the
keys and values of that prefix from the cache and runs only the rest. Jobs run one at a time
per device here: this path does not batch (the ONNX Runtime path does, on CPUs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from artforge.runtimes.prefix_cache import PrefixCache
from artforge.runtimes.sampling import Sampler, Sampling


class TorchTextModel:
    backend = "torch"

    def __init__(self, folder: Path, device: str, prefix_bytes: int = 0) -> None:
        """`prefix_bytes`: the prefix cache's bound, in the model's device memory (0: no cache)."""
        import torch
        from transformers import AutoModelForCausalLM

        self.device = torch.device(device)
        # Half precision on GPUs; float32 on CPUs, where half precision is slower.
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(self.device).eval()
        self.prefix = PrefixCache(prefix_bytes) if prefix_bytes > 0 else None

    def generate(self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int | None = None) -> Iterator[int]:
        """Yield token ids, one per step, for as long as the caller keeps asking.

        `max_new_tokens` is only a hint here: the PyTorch cache grows as needed."""
        import torch
        from transformers import DynamicCache

        sampler = Sampler(sampling)
        prompt = np.asarray(prompt_ids, np.int64)
        cache = DynamicCache(config=self.model.config)
        cached = self.prefix.find(prompt, len(prompt) - 1) if self.prefix is not None else None
        start = 0
        if cached is not None:
            for layer, (keys, values) in enumerate(cached):
                cache.update(keys[None], values[None], layer)  # a copy: the entry stays as it was
            start = cached.shape[3]
        inputs = torch.tensor([prompt_ids[start:]], device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=inputs, past_key_values=cache, use_cache=True).logits[0, -1]
        if self.prefix is not None and not self.prefix.covers(prompt) and (kv := _stacked(cache, len(prompt))) is not None:
            self.prefix.add(prompt, kv)
        while True:
            token = sampler.next(logits.float().cpu().numpy())
            yield token
            inputs = torch.tensor([[token]], device=self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=inputs, past_key_values=cache, use_cache=True).logits[0, -1]


def _stacked(cache: Any, length: int) -> Any | None:
    """The cache's keys and values as one tensor, [layers, 2, kv heads, tokens, head size] (a copy);
    None where it is not one shape for every layer holding all `length` tokens (a sliding window
    keeps only its last ones, some models have other shapes per layer): those are not cached."""
    import torch

    shapes = {(tuple(layer.keys.shape), tuple(layer.values.shape)) for layer in cache.layers}
    if len(shapes) != 1 or any(shape[-2] != length for shape in next(iter(shapes))):
        return None
    return torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers])
