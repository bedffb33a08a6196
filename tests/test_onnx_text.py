"""The ONNX Runtime GenAI text path: parity with PyTorch, the export cache, and falling back.

Parity and perplexity use the real embedded SmolLM2. The cache and fallback tests use tiny
random-weight models of real architectures (Llama, which the GenAI builder exports, and GPT-2,
which it does not) with SmolLM2's tokenizer: their text is noise, they test the machinery.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import grpc
import numpy as np
import pytest

from artforge.config import EMBEDDED_TEXT_MODEL, Limits, TextServing
from artforge.engines.text import TextEngine
from artforge.models.gguf import hf_folder_for_gguf
from artforge.models.registry import ModelRegistry
from artforge.runtimes.export_cache import ExportCache, export_lock
from artforge.runtimes.onnx_text import OnnxTextModel
from artforge.runtimes.sampling import Sampling
from artforge.runtimes.torch_text import TorchTextModel
from artforge_client import ArtForgeError
from artforge_client.v1 import jobs_pb2
from tests.conftest import start_server, stop_server

GREEDY = Sampling(temperature=0.0, top_p=1.0, seed=0, repetition_penalty=1.0)
PARAGRAPH = (
    "The painter set up her easel at the edge of the harbour just after sunrise. The water was still, "
    "and the fishing boats threw long reflections across it in red, blue and white. She mixed a pale "
    "grey for the sky, then warmed it with a touch of yellow where the sun was climbing over the hills. "
    "By noon the light had flattened the colours, so she packed her brushes and went home to rest."
)


def engine_for(models_dir: Path, default: str) -> TextEngine:
    return TextEngine(ModelRegistry(models_dir, [], {"text": default}), Limits(), {}, max_loaded=2, serving=TextServing())


@pytest.fixture(scope="module")
def smol_folder(models_dir) -> Path:
    [gguf] = (models_dir / EMBEDDED_TEXT_MODEL).glob("*.gguf")
    return hf_folder_for_gguf(gguf, models_dir / ".cache")


@pytest.fixture(scope="module")
def smol(models_dir) -> TextEngine:
    return engine_for(models_dir, EMBEDDED_TEXT_MODEL)


def prompt_ids(engine: TextEngine, text: str) -> list[int]:
    tokenizer = engine.vocabulary(engine.registry.get("", "text")).tokenizer
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False)


def test_fp32_export_greedy_gives_the_same_first_32_tokens_as_pytorch(smol, smol_folder):
    folder = smol.export(EMBEDDED_TEXT_MODEL, "cpu", precision="fp32")
    ids = prompt_ids(smol, "Describe a lighthouse on a cliff at night.")
    onnx_tokens = list(islice(OnnxTextModel(folder, "cpu", TextServing()).generate(ids, GREEDY, 32), 32))
    torch_tokens = list(islice(TorchTextModel(smol_folder, "cpu").generate(ids, GREEDY), 32))
    assert onnx_tokens == torch_tokens


def torch_perplexity(folder: Path, ids: list[int]) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.inference_mode():
        return math.exp(float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss))


def onnx_perplexity(folder: Path, ids: list[int]) -> float:
    """Teacher forcing, one token at a time: the log-probability the export gives each next token."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids))
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray([ids[:1]], dtype=np.int32))
    total = 0.0
    for token in ids[1:]:
        logits = generator.get_logits()[0, -1].astype(np.float64)
        top = logits.max()
        total += top + math.log(np.exp(logits - top).sum()) - logits[token]
        generator.append_tokens(np.asarray([[token]], dtype=np.int32))
    return math.exp(total / (len(ids) - 1))


def test_int4_perplexity_stays_within_15_percent_of_pytorch(smol, smol_folder):
    ids = smol.vocabulary(smol.registry.get("", "text")).tokenizer(PARAGRAPH)["input_ids"]
    assert len(ids) > 60
    reference = torch_perplexity(smol_folder, ids)
    assert 1 < reference < 50, "a real model on plain English"
    # The teacher-forcing loop itself agrees with PyTorch on the fp32 export ...
    fp32 = onnx_perplexity(smol.export(EMBEDDED_TEXT_MODEL, "cpu", precision="fp32"), ids)
    assert fp32 == pytest.approx(reference, rel=0.01)
    # ... so the int4 figure measures quantization alone.
    int4 = onnx_perplexity(smol.export(EMBEDDED_TEXT_MODEL, "cpu"), ids)
    assert abs(int4 - reference) / reference <= 0.15, f"int4 {int4:.2f} vs PyTorch {reference:.2f}"


def save_tiny_model(architecture: str, folder: Path, tokenizer_folder: Path, seed: int = 0) -> Path:
    """A random-weight causal LM of a real architecture, with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    torch.manual_seed(seed)
    if architecture == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=512, eos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_second_start_reuses_the_export_and_changed_weights_export_again(tmp_path, smol_folder):
    models = tmp_path / "models"
    save_tiny_model("llama", models / "tiny-llama", smol_folder)
    first = engine_for(models, "tiny-llama").export("tiny-llama")
    made = (first / "model.onnx").stat().st_mtime_ns

    # A new engine is what a server restart makes: it finds the same export, untouched.
    again = engine_for(models, "tiny-llama").export("tiny-llama")
    assert again == first
    assert (again / "model.onnx").stat().st_mtime_ns == made

    save_tiny_model("llama", models / "tiny-llama", smol_folder, seed=1)  # the checkpoint changes
    changed = engine_for(models, "tiny-llama").export("tiny-llama")
    assert changed != first and changed.parent == first.parent
    assert not first.exists(), "the export of the old weights is removed"
    assert (changed / "model.onnx").is_file()


# What a server or `artforge onnx export` does about a model's export, in a process of its own.
EXPORTER = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(message)s")
from artforge.config import Limits, TextServing
from artforge.engines.text import TextEngine
from artforge.models.registry import ModelRegistry
registry = ModelRegistry(Path(sys.argv[1]), [], {"text": "tiny-llama"})
print(TextEngine(registry, Limits(), {}, max_loaded=1, serving=TextServing()).export("tiny-llama"))
"""


def start_exporter(models: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-c", EXPORTER, str(models)], stdout=out, stderr=subprocess.STDOUT)


def wait_for_line(process: subprocess.Popen, log: Path, line: str) -> None:
    """Until `line` is in the process' log; the test fails if the process ends first (or in two minutes)."""
    deadline = time.monotonic() + 120
    while line not in log.read_text():
        assert process.poll() is None, f"ended without {line!r}: {log.read_text()}"
        assert time.monotonic() < deadline, f"no {line!r} yet: {log.read_text()}"
        time.sleep(0.1)


def test_two_processes_exporting_one_model_make_one_export_and_both_use_it(tmp_path, smol_folder):
    models = tmp_path / "models"
    save_tiny_model("llama", models / "tiny-llama", smol_folder)
    logs = [tmp_path / f"exporter-{i}.log" for i in range(2)]
    # The test holds the model's export lock, as an exporter already at work would, until both
    # processes wait for it: then they truly export at the same time, whatever their start-up takes.
    with export_lock(ExportCache(models / ".cache").root / "tiny-llama", "tiny-llama"):
        processes = [start_exporter(models, log) for log in logs]
        for process, log in zip(processes, logs, strict=True):
            wait_for_line(process, log, "waiting for another export of tiny-llama")
    # One gets the lock and exports; the other waits again, then finds that export and uses it.
    while all(process.poll() is None for process in processes):
        time.sleep(0.1)
    first = next(i for i, process in enumerate(processes) if process.returncode is not None)
    folder = Path(logs[first].read_text().splitlines()[-1])
    made = (folder.stat().st_ino, folder.stat().st_mtime_ns)
    assert [process.wait() for process in processes] == [0, 0], [log.read_text() for log in logs]
    assert Path(logs[1 - first].read_text().splitlines()[-1]) == folder
    assert (folder.stat().st_ino, folder.stat().st_mtime_ns) == made, "the export in use was left as it was"
    assert sum(log.read_text().count("exporting tiny-llama to ONNX") for log in logs) == 1
    assert (folder / "genai_config.json").is_file()
    assert not list(folder.parent.glob(".export-*")) and not list(folder.parent.glob(".replaced-*"))


def test_models_that_cannot_run_on_onnx_fall_back_to_pytorch_and_say_why(tmp_path, smol_folder):
    models = tmp_path / "models"
    gpt2 = save_tiny_model("gpt2", models / "tiny-gpt2", smol_folder)  # the GenAI builder has no GPT-2
    save_tiny_model("llama", models / "tiny-llama", smol_folder)
    # An export that exists but is broken: made, then damaged on disk.
    export = engine_for(models, "tiny-llama").export("tiny-llama")
    (export / "model.onnx").write_bytes(b"not an onnx model")
    config = f"""
[models]
default_text = "tiny-gpt2"
preload = []

[model.strict-gpt2]
path = "{gpt2}"
backend = "onnx"
"""
    (tmp_path / "server").mkdir()
    server = start_server(models, tmp_path / "server", "--no-fetch", config=config)
    try:
        with server.client() as client:
            for model in ("tiny-gpt2", "tiny-llama"):
                stream = client.generate_text("Paint me a tree.", model=model, max_tokens=8, seed=3)
                assert stream.wait().state == jobs_pb2.JOB_STATE_SUCCEEDED
                assert stream.started.backend == "torch"
            models_info = {m.name: m for m in client.list_models()}
            gpt2_info = models_info["tiny-gpt2"]
            assert gpt2_info.backend == "torch"
            assert "export" in gpt2_info.backend_reason and "not currently supported" in gpt2_info.backend_reason
            assert models_info["tiny-llama"].backend == "torch"
            assert "failed to load" in models_info["tiny-llama"].backend_reason

            # Asking for ONNX explicitly makes the same failure the job's error.
            with pytest.raises(ArtForgeError) as error:
                client.generate_text("Paint me a tree.", model="strict-gpt2", max_tokens=8).wait()
            assert error.value.code is grpc.StatusCode.FAILED_PRECONDITION
            assert "strict-gpt2 asks for backend onnx" in error.value.message
        assert "tiny-gpt2: PyTorch, because" in server.log(), "the reason is in the log too"
    finally:
        stop_server(server)
    shutil.rmtree(models, ignore_errors=True)
