"""Causal language models on ONNX Runtime: the onnxruntime-genai builder's export.

The export is made by onnxruntime-genai's model builder from a Hugging Face folder (a GGUF is
dequantized to one first, see artforge.models.gguf): int4 weights (MatMulNBits) for serving,
fp32 for checking parity with PyTorch. It runs in a subprocess, so an exporter crash or its
memory peak never reaches the server.

Serving keeps the PyTorch path's behaviour by sharing its sampling: the runtime runs the model
and hands over the logits of the last position; penalties, temperature, top-p and the seeded
generator are artforge.runtimes.sampling's, as on PyTorch, so stop strings, seeds and cancel
work the same. On CPUs the export runs on plain ONNX Runtime, many jobs in one batch
(artforge.runtimes.onnx_batch); on CUDA on GenAI's Generator, one job at a time.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from artforge.config import TextServing
from artforge.runtimes.onnx import cpu_threads
from artforge.runtimes.onnx_batch import ContinuousBatch, Generation, KvLayout
from artforge.runtimes.prefix_cache import PrefixCache
from artforge.runtimes.sampling import Sampler, Sampling

log = logging.getLogger(__name__)

# Bump when the export recipe changes, so cached exports are made again.
EXPORT_VERSION = "v1"
PRECISIONS = ("int4", "fp32")


def genai_missing() -> str | None:
    """Why ONNX Runtime GenAI cannot run here, or None when it can."""
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime-genai is not installed ({exc}); install the `cpu` or `gpu` extra"
    return None


def execution_provider(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def export_variant(precision: str, device: str) -> str:
    return f"text-{EXPORT_VERSION}-{precision}-{execution_provider(device)}"


def export_text_model(source: Path, target: Path, precision: str = "int4", device: str = "cpu") -> None:
    """Write the ONNX export of the Hugging Face folder `source` into `target` with the GenAI builder."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    provider = execution_provider(device)
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source.resolve()), "-o", str(target.resolve())]
    command += ["-p", precision, "-e", provider]
    options = ["hf_token=false"]
    if precision == "int4":
        # k-quant weights, with the LM head and the most sensitive layers kept at int8 (as
        # llama.cpp's mixed recipe does), and LM-head logits only for the last prompt token.
        # Measured on SmolLM2 against PyTorch's perplexity of 40.7 on a test paragraph: plain
        # round-to-nearest int4 50.5 (+24%), k-quant 49.7, k-quant with an int8 head 45.4,
        # this recipe 43.0 (+6%), at about the same speed.
        options += ["algo_config=k_quant_mixed", "prune_lm_head=true"]
    if precision == "int4" and provider == "cpu":
        # Level 4: int8 activations in MatMulNBits, the fastest int4 kernel on CPUs.
        options.append("accuracy_level=4")
    command += ["--extra_options", *options]
    with tempfile.TemporaryDirectory(prefix="artforge-builder-") as scratch:
        command += ["-c", scratch]  # the builder's download cache; unused for local folders
        log.info("exporting %s to ONNX (%s, %s) with the onnxruntime-genai builder", source.name, precision, provider)
        # Offline: the source is a local folder, and the builder otherwise asks the Hub for it.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = subprocess.run(command, capture_output=True, text=True, cwd=scratch, env=env)
    if done.returncode != 0 or not (target / "genai_config.json").is_file():
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise RuntimeError("the onnxruntime-genai builder failed: " + " | ".join(lines[-3:]))


class OnnxTextModel:
    """An export served by ONNX Runtime: on a CPU, through a ContinuousBatch (jobs decode together,
    with a prefix cache); on CUDA, one job at a time through GenAI's Generator (batching there
    needs GenAI's PagedAttention export, not made yet)."""

    backend = "onnx"

    def __init__(self, folder: Path, device: str, serving: TextServing) -> None:
        self.context_length = int(json.loads((folder / "genai_config.json").read_text())["model"]["context_length"])
        self.batch: ContinuousBatch | None = None
        if execution_provider(device) == "cuda":
            import onnxruntime_genai as og

            config = og.Config(str(folder))
            config.clear_providers()
            config.append_provider("cuda")
            config.set_provider_option("cuda", "device_id", device.partition(":")[2] or "0")
            self.model = og.Model(config)
            return
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Measured on SmolLM2 int4 (2 cores): naming the cores explicitly gave ~133 tokens/s
        # against ~105 with the default thread setting.
        options.intra_op_num_threads = cpu_threads()
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        mb = 1 << 20
        layout = KvLayout.of(folder)
        self.batch = ContinuousBatch(
            session, layout, self.context_length, serving.batch_size, serving.batch_memory_mb * mb, serving.prefix_cache_mb * mb
        )

    @property
    def prefix(self) -> PrefixCache | None:
        """The prefix cache of its batch (CPUs only: onnxruntime-genai's Generator on CUDA keeps none)."""
        return self.batch.prefix if self.batch is not None else None

    @property
    def batches(self) -> bool:
        """Jobs on this model share the device's decode steps."""
        return self.batch is not None and self.batch.max_rows > 1

    def generate(self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int) -> Iterator[int] | Generation:
        """Token ids, one per step, for as long as the caller keeps asking (up to max_new_tokens)."""
        if self.batch is not None:
            return self.batch.generate(prompt_ids, sampling, max_new_tokens)
        return self._generate_one(prompt_ids, sampling, max_new_tokens)

    def _generate_one(self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int) -> Iterator[int]:
        import numpy as np
        import onnxruntime_genai as og

        # The key/value cache is allocated for the whole sequence up front: size it to the job.
        length = min(self.context_length, len(prompt_ids) + max_new_tokens)
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=length)
        generator = og.Generator(self.model, params)
        sampler = Sampler(sampling)
        generator.append_tokens(np.asarray([prompt_ids], dtype=np.int32))
        while True:
            token = sampler.next(generator.get_logits()[0, -1])
            yield token
            if generator.token_count() >= length:
                return
            generator.append_tokens(np.asarray([[token]], dtype=np.int32))
