"""Peers for `artforge bench text --compare`: other text servers, run after ArtForge on the same
machine, on the same model, with the same prompts, and measured the way the bench measures
ArtForge.

Each peer is a process serving llama-server's streamed chat API (POST /v1/chat/completions
with `stream`, chunks that end with its `timings`; GET /health), so one client measures them
all. Peers are bench-only tools, never dependencies of the server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

START_TIMEOUT = 300  # seconds: a peer may compile its model on its first start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(name: str, command: Callable[[int], list[str]]) -> Iterator[str]:
    """The peer `command(port)` on a free port, until it answers /health; yields its base URL."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command(port), stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
                    raise RuntimeError(f"{name} did not start: {' | '.join(tail)}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            process.wait(30)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def run(url: str, backend: str, system_prompt: str, prompt: str, max_tokens: int) -> dict:
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
        "backend": backend,
        "device": "cpu",
        "model": "",
    }
