"""Causal language models on PyTorch (transformers), one token at a time.

The decode loop is ours rather than `model.generate` so that the engine decides after every
token whether to go on (cancel, deadline, stop strings) and each job gets its own seeded
torch.Generator: jobs on different devices never share random state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0: greedy
    top_p: float  # 1: off
    seed: int
    repetition_penalty: float = 1.0  # 1: off


def penalize_repeats(logits, generated, penalty: float):  # noqa: ANN001, ANN201 (torch types are imported lazily)
    """Make tokens in `generated` (a bool mask over the vocabulary) less likely, as in CTRL."""
    if penalty == 1.0 or not bool(generated.any()):
        return logits
    import torch

    logits = logits.clone()
    seen = logits[generated]
    logits[generated] = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def sample_next(logits, sampling: Sampling, generator) -> int:  # noqa: ANN001 (torch types are imported lazily)
    import torch

    if sampling.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p >= 1.0:
        return int(torch.multinomial(probs, 1, generator=generator))
    sorted_probs, order = torch.sort(probs, descending=True)
    # Keep the smallest set of tokens whose mass reaches top_p (the first always stays).
    keep = (torch.cumsum(sorted_probs, dim=0) - sorted_probs) < sampling.top_p
    choice = torch.multinomial(sorted_probs * keep, 1, generator=generator)
    return int(order[choice])


class TorchTextModel:
    backend = "torch"

    def __init__(self, folder: Path, device: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.device = torch.device(device)
        # Half precision on GPUs; float32 on CPUs, where half precision is slower.
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(self.device).eval()

    def generate(self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int | None = None) -> Iterator[int]:
        """Yield token ids, one per step, for as long as the caller keeps asking.

        `max_new_tokens` is only a hint here: the PyTorch cache grows as needed."""
        import torch
        from transformers import DynamicCache

        generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        cache = DynamicCache(config=self.model.config)
        inputs = torch.tensor([prompt_ids], device=self.device)
        generated = None
        while True:
            with torch.inference_mode():
                logits = self.model(input_ids=inputs, past_key_values=cache, use_cache=True).logits[0, -1]
                if generated is None:
                    generated = torch.zeros(logits.shape[-1], dtype=torch.bool, device=self.device)
                token = sample_next(penalize_repeats(logits, generated, sampling.repetition_penalty), sampling, generator)
                generated[token] = True
            yield token
            inputs = torch.tensor([[token]], device=self.device)
