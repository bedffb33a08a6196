"""`artforge bench text`: tokens per second and time to first token, measured through gRPC.

The bench starts its own server on a free port for each backend in --backends (PyTorch eager
and ONNX Runtime GenAI by default), one after the other on the same machine, or measures the
server at --address. It measures what a client sees, next to what the server counted:

- ttft: submission to the first text, for a short prompt (the job starts at once: no queue);
- tokens_per_second: completion tokens over the job's generation time, prompt processing
  included (the server's count, as reported in JobFinished.usage);
- decode_tokens_per_second: tokens after the first over the time after the first, as seen by
  the client (steady-state generation).

Each figure is the median of --runs runs after one warm-up run. Greedy decoding and fixed
prompts make every run do the same work.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from artforge.bench import report
from artforge.bench.chart import Panel
from artforge.launch import ServerProcess
from artforge_client import Client

SHORT_PROMPT = "Name a colour."
LONG_PROMPT = "Write a long, detailed story about a lighthouse keeper who paints the sea every day."


def _run(client: Client, prompt: str, model: str, max_tokens: int) -> dict[str, float]:
    submitted = time.perf_counter()
    first = last = 0.0
    deltas = 0
    stream = client.generate_text(prompt, model=model, max_tokens=max_tokens, temperature=0, seed=0)
    for event in stream:
        if event.HasField("text"):
            last = time.perf_counter()
            first = first or last
            deltas += 1
    usage = stream.finished.usage
    tokens = usage.completion_tokens
    return {
        "completion_tokens": tokens,
        "prompt_tokens": usage.prompt_tokens,
        "ttft_ms_client": (first - submitted) * 1000,
        "ttft_ms_server": usage.time_to_first_token_seconds * 1000,
        "tokens_per_second": usage.tokens_per_second,
        "decode_tokens_per_second": (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0,
        "end_to_end_seconds": time.perf_counter() - submitted,
        "backend": stream.started.backend,
        "device": stream.started.device,
        "model": stream.started.model,
    }


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def _bench_server(client: Client, args: argparse.Namespace) -> dict:
    _run(client, LONG_PROMPT, args.model, args.max_tokens)  # warm-up: caches, allocator, threads
    short = [_run(client, SHORT_PROMPT, args.model, 8) for _ in range(args.runs)]
    long = [_run(client, LONG_PROMPT, args.model, args.max_tokens) for _ in range(args.runs)]
    return {
        "backend": long[0]["backend"],
        "model": long[0]["model"],
        "device": long[0]["device"],
        "long_prompt_tokens": long[0]["prompt_tokens"],
        "short_prompt_ttft_ms": _median(short, "ttft_ms_client"),
        "short_prompt_ttft_ms_server": _median(short, "ttft_ms_server"),
        "long_prompt_ttft_ms": _median(long, "ttft_ms_client"),
        "tokens_per_second": _median(long, "tokens_per_second"),
        "decode_tokens_per_second": _median(long, "decode_tokens_per_second"),
        "completion_tokens": _median(long, "completion_tokens"),
        "runs": {"short_prompt": short, "long_prompt": long},
    }


def bench_text(args: argparse.Namespace) -> dict:
    results: dict[str, dict] = {}
    devices: list[str] = []
    if args.address:
        with Client(args.address, token=args.token) as client:
            devices = [f"{d.name}: {d.description}" for d in client.server_info().devices]
            result = _bench_server(client, args)
            results[result["backend"]] = result
    else:
        for backend in args.backends.split(","):
            with tempfile.TemporaryDirectory(prefix="artforge-bench-") as workdir:
                serve_args = ["--models-dir", args.models_dir] if args.models_dir else []
                log = Path(workdir) / "server.log"
                # One server per backend, never two at once: they would share the cores.
                with ServerProcess(*serve_args, log_path=log, env={"ARTFORGE_BACKEND": backend}) as server, server.client() as client:
                    devices = [f"{d.name}: {d.description}" for d in client.server_info().devices]
                    result = _bench_server(client, args)
            if result["backend"] != backend:
                raise RuntimeError(f"asked for backend {backend}, but the server ran {result['backend']}; see its log")
            results[backend] = result
    first = next(iter(results.values()))
    report_ = {
        **report("text", devices=devices),
        "server": args.address or "started by the bench, one per backend",
        "model": first["model"],
        "settings": {
            "runs": args.runs,
            "max_tokens": args.max_tokens,
            "decoding": "greedy",
            "long_prompt_tokens": first["long_prompt_tokens"],
        },
        "backends": results,
    }
    if "torch" in results and "onnx" in results:
        torch, onnx = results["torch"], results["onnx"]
        report_["onnx_vs_torch"] = {
            "tokens_per_second": round(onnx["tokens_per_second"] / torch["tokens_per_second"], 2),
            "short_prompt_ttft": round(torch["short_prompt_ttft_ms"] / onnx["short_prompt_ttft_ms"], 2),
        }
    return report_


def chart(result: dict) -> tuple[str, list[Panel]]:
    """The chart of a text bench report: tokens/s and time to first token, per backend."""
    backends = result["backends"]
    title = f"{result['model']} on {result['machine']['cpus']} CPUs: {', '.join(result['machine']['devices'])}"
    return title, [
        Panel("generation, prompt included", "tokens/s", {b: r["tokens_per_second"] for b, r in backends.items()}, True),
        Panel("time to first token, short prompt", "ms", {b: r["short_prompt_ttft_ms"] for b, r in backends.items()}, False),
    ]
