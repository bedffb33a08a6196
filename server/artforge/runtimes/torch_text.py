"""Causal language models on PyTorch (transformers), one token at a time.

The decode loop is ours rather than `model.generate` so that the engine decides after every
token whether to go on (cancel, deadline, stop strings), and tokens are chosen by
artforge.runtimes.sampling exactly as on the ONNX Runtime path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from artforge.runtimes.sampling import Sampler, Sampling


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

        sampler = Sampler(sampling)
        cache = DynamicCache(config=self.model.config)
        inputs = torch.tensor([prompt_ids], device=self.device)
        while True:
            with torch.inference_mode():
                logits = self.model(input_ids=inputs, past_key_values=cache, use_cache=True).logits[0, -1]
            token = sampler.next(logits.float().cpu().numpy())
            yield token
            inputs = torch.tensor([[token]], device=self.device)
