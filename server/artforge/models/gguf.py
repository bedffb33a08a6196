"""GGUF files as Hugging Face folders.

transformers reads a GGUF by parsing and dequantizing it in Python: about 35 s for the 93 MB
SmolLM2 file on a 2-core machine, most of it metadata parsing. We do that once, save the
dequantized weights and the tokenizer as a Hugging Face folder keyed by the file's SHA-256,
and load that folder afterwards (under half a second). The weights are bit-identical to a
direct GGUF load. The ONNX export starts from the same folder.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from artforge.models.embedded import sha256_of

log = logging.getLogger(__name__)


def hf_folder_for_gguf(gguf: Path, cache_dir: Path) -> Path:
    """The cached Hugging Face folder for `gguf`, converting it first if needed."""
    target = cache_dir / "gguf-hf" / sha256_of(gguf)[:24]
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a Hugging Face folder once (about half a minute on a small CPU)", gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # After dequantization the weights are plain float32; drop the GGUF quantizer marker
        # that makes transformers refuse to save them.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        try:
            Path(tmp).rename(target)
        except OSError:
            # Another process finished the same conversion first; keep theirs.
            shutil.rmtree(tmp, ignore_errors=True)
    return target
