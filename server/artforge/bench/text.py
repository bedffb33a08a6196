"""`artforge bench text`: tokens per second and time to first token, measured through gRPC.

The bench starts its own server on a free port for each backend in --backends (PyTorch eager
and ONNX Runtime by default) and each --batch-sizes, or measures the server at --address; with
--compare, peers too (artforge.bench.peers). All of them start before the clock and take their
jobs in turns, never two at once: run 1 of each, then run 2 of each, and so on. Idle, they
take no CPU. It measures what a client sees, next to what the server counted:

- ttft: submission to the first text, for a short prompt (the job starts at once: no queue);
- tokens_per_second: completion tokens over the job's generation time, prompt processing
  included (the server's count, as reported in JobFinished.usage);
- decode_tokens_per_second: tokens after the first over the time after the first, as seen by
  the client (steady-state generation).

Each figure is the median of --runs runs after one warm-up run. Greedy decoding and fixed
prompts make every run do the same work.

With --concurrency 1,4,8, each count of clients then sends --runs rounds of jobs at once (one
job per client a round, each client its own prompt after the same system prompt, as artists
of one studio would): the aggregate tokens per second of a round (every client's tokens over
the time from the first submission to the last token) and each client's time to first token,
medians over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from artforge.bench import llama_cpp, openvino_peer, peers, report
from artforge.bench.chart import Panel
from artforge.config import TextServing, default_models_dir
from artforge.engines.text import BUILTIN_TASKS
from artforge.errors import ArtForgeError, ErrorCode
from artforge.launch import ServerProcess
from artforge.models.registry import ModelRegistry
from artforge_client import Client

SHORT_PROMPT = "Name a colour."
LONG_PROMPT = "Write a long, detailed story about a lighthouse keeper who paints the sea every day."
PEERS = ("llama.cpp", "openvino")  # for --compare (artforge.bench.peers)
SUBJECTS = ["a lighthouse keeper", "a glassblower", "a cartographer", "a beekeeper", "a puppeteer", "a ferry pilot", "a potter"]


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


# One job, given its prompt and max_tokens: the figures of one run (see _run).
Run = Callable[[str, int], dict]
# A connection for one client, opened before the clock starts.
Connect = Callable[[], AbstractContextManager[Run]]


def _artforge(address: str, token: str | None, model: str) -> Connect:
    @contextmanager
    def connect() -> Iterator[Run]:
        with Client(address, token=token) as client:
            client.server_info()  # connected before the clock starts
            yield lambda prompt, max_tokens: _run(client, prompt, model, max_tokens)

    return connect


def _peer(url: str, backend: str) -> Connect:
    @contextmanager
    def connect() -> Iterator[Run]:
        yield lambda prompt, max_tokens: peers.run(url, backend, BUILTIN_TASKS["chat"].system_prompt, prompt, max_tokens)

    return connect


def _summary(short: list[dict], long: list[dict]) -> dict:
    """One client's figures: medians of its short- and long-prompt runs."""
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


def _round(connect: Connect, args: argparse.Namespace, clients: int, round_: int) -> dict:
    """`clients` jobs submitted at once, each from a client of its own."""
    runs: list[dict] = [{} for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def client_run(index: int) -> None:
        subject = SUBJECTS[(index + round_) % len(SUBJECTS)]
        prompt = f"Write a long, detailed story about {subject} who paints the sea every day (story {round_ * clients + index})."
        with connect() as run:
            start.wait()
            runs[index] = run(prompt, args.max_tokens)

    threads = [threading.Thread(target=client_run, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    tokens = sum(run["completion_tokens"] for run in runs)
    return {
        "aggregate_tokens_per_second": tokens / wall,
        "ttft_ms": statistics.median(run["ttft_ms_client"] for run in runs),
        "ttft_ms_worst": max(run["ttft_ms_client"] for run in runs),
        "tokens_per_second_per_client": statistics.median(run["completion_tokens"] / run["end_to_end_seconds"] for run in runs),
        "completion_tokens": tokens,
        "seconds": wall,
    }


def _concurrency_summary(rounds_by_clients: dict[int, list[dict]]) -> dict[str, dict]:
    by_clients = {
        str(clients): {**{key: _median(rounds, key) for key in rounds[0]}, "rounds": rounds}
        for clients, rounds in rounds_by_clients.items()
    }
    single = by_clients.get("1", {}).get("aggregate_tokens_per_second")
    if single:
        for result in by_clients.values():
            result["over_one_client"] = round(result["aggregate_tokens_per_second"] / single, 2)
    return by_clients


def _concurrency(args: argparse.Namespace) -> list[int]:
    return [int(count) for count in args.concurrency.split(",")] if args.concurrency else []


def _bench_side_by_side(targets: dict[str, Connect], args: argparse.Namespace) -> dict[str, dict]:
    """Every target's figures, measured in turns: each run, and each round of clients at once,
    goes to every target before the next, so a machine that changes pace during the bench (as
    shared machines do) weighs on all of them alike."""
    short: dict[str, list[dict]] = {name: [] for name in targets}
    long: dict[str, list[dict]] = {name: [] for name in targets}
    with ExitStack() as clients:
        runs = {name: clients.enter_context(connect()) for name, connect in targets.items()}
        for run in runs.values():
            run(LONG_PROMPT, args.max_tokens)  # warm-up: caches, allocator, threads
        for _ in range(args.runs):
            for name, run in runs.items():
                short[name].append(run(SHORT_PROMPT, 8))
                long[name].append(run(LONG_PROMPT, args.max_tokens))
    results = {name: _summary(short[name], long[name]) for name in targets}
    if args.concurrency:
        rounds: dict[str, dict[int, list[dict]]] = {name: {} for name in targets}
        for count in _concurrency(args):
            for round_ in range(args.runs):
                for name, connect in targets.items():
                    rounds[name].setdefault(count, []).append(_round(connect, args, count, round_))
        for name in targets:
            results[name]["concurrency"] = _concurrency_summary(rounds[name])
    return results


def _model(connect: Connect) -> str:
    """The model an ArtForge target runs (its default text model unless --model names one)."""
    with connect() as run:
        return run(SHORT_PROMPT, 1)["model"]


def _devices(address: str, token: str | None) -> list[str]:
    with Client(address, token=token) as client:
        return [f"{d.name}: {d.description}" for d in client.server_info().devices]


def _peer_tools(args: argparse.Namespace) -> dict[str, str]:
    """What each peer in --compare runs with (llama-server, or OpenVINO's Python), found before anything runs."""
    compare = [peer for peer in args.compare.split(",") if peer]
    if unknown := sorted(set(compare) - set(PEERS)):
        raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"--compare: {', '.join(unknown)} is not one of: {', '.join(PEERS)}")
    find = {"llama.cpp": llama_cpp.find_server, "openvino": openvino_peer.find_python}
    given = {"llama.cpp": args.llama_server, "openvino": args.openvino_python}
    return {peer: find[peer](given[peer]) for peer in compare}


@contextmanager
def _peer_server(peer: str, tool: str, model: str, args: argparse.Namespace) -> Iterator[tuple[Path, Connect]]:
    """A peer on the GGUF of `model`, with a slot per client sent at once: that GGUF and the peer."""
    registry = ModelRegistry(Path(args.models_dir) if args.models_dir else default_models_dir(), [], {})
    spec = registry.get(model, "text")
    if spec.format != "gguf":
        raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"--compare {peer}: model {model} is not a GGUF file, which the peers start from")
    slots = max([1, *_concurrency(args)])
    if peer == "llama.cpp":
        server = llama_cpp.llama_server(tool, spec.path, slots)
    else:
        server = openvino_peer.openvino_server(tool, openvino_peer.exported(tool, spec.path, registry.models_dir / ".cache"), slots)
    with server as url:
        yield spec.path, _peer(url, peer)


@contextmanager
def _started_server(backend: str, batch_size: int, args: argparse.Namespace) -> Iterator[str]:
    """A server of its own on a free port, on `backend` and with `[text] batch_size` (0: the
    default); yields its address. Idle servers take no CPU, so the bench starts them all and
    sends each its jobs in turn."""
    with tempfile.TemporaryDirectory(prefix="artforge-bench-") as workdir:
        serve_args = ["--models-dir", args.models_dir] if args.models_dir else []
        if batch_size:
            config = Path(workdir) / "artforge.toml"
            config.write_text(f"[text]\nbatch_size = {batch_size}\n")
            serve_args += ["--config", str(config)]
        with ServerProcess(*serve_args, log_path=Path(workdir) / "server.log", env={"ARTFORGE_BACKEND": backend}) as server:
            yield server.address


def bench_text(args: argparse.Namespace) -> dict:
    tools = _peer_tools(args)
    targets: dict[str, Connect] = {}
    asked: dict[str, tuple[str, int]] = {}  # ArtForge target -> the backend and batch size it was started with
    with ExitStack() as servers:
        if args.address:
            address, token = args.address, args.token
            targets["artforge"] = _artforge(address, token, args.model)
        else:
            address, token = "", None
            sizes = [int(size) for size in args.batch_sizes.split(",")] if args.batch_sizes else [0]
            for backend in args.backends.split(","):
                for size in sizes:
                    label = f"{backend}, batch {size}" if size else backend
                    address = servers.enter_context(_started_server(backend, size, args))
                    targets[label], asked[label] = _artforge(address, None, args.model), (backend, size)
        devices = _devices(address, token)
        model = _model(targets[next(iter(targets))])
        ggufs = {}
        for peer, tool in tools.items():
            ggufs[peer], targets[peer] = servers.enter_context(_peer_server(peer, tool, model, args))
        results = _bench_side_by_side(targets, args)
    for label, (backend, size) in asked.items():
        if results[label]["backend"] != backend:
            raise RuntimeError(f"asked for backend {backend}, but the server ran {results[label]['backend']}; see its log")
        results[label]["batch_size"] = size or TextServing().batch_size
    for peer, gguf in ggufs.items():
        results[peer]["model"] = gguf.name
    if args.address:  # named by what it runs, as the bench's own servers are
        results = {results["artforge"]["backend"]: results["artforge"], **{k: v for k, v in results.items() if k != "artforge"}}
    first = next(iter(results.values()))
    report_ = {
        **report("text", devices=devices),
        "server": args.address or "started by the bench, one per backend (and batch size), all at once, sent jobs in turns",
        "model": first["model"],
        "settings": {
            "runs": args.runs,
            "max_tokens": args.max_tokens,
            "decoding": "greedy",
            "long_prompt_tokens": first["long_prompt_tokens"],
            "concurrency": args.concurrency,
            "batch_sizes": args.batch_sizes,
            "compare": args.compare,
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
    panels = [
        Panel("generation, prompt included", "tokens/s", {b: r["tokens_per_second"] for b, r in backends.items()}, True),
        Panel("time to first token, short prompt", "ms", {b: r["short_prompt_ttft_ms"] for b, r in backends.items()}, False),
    ]
    if result["settings"].get("concurrency"):

        def over_clients(key: str) -> dict[str, list[list[float]]]:
            return {b: [[int(n), c[key]] for n, c in r["concurrency"].items()] for b, r in backends.items()}

        panels += [
            Panel("clients at once: all their tokens", "tokens/s", {}, True, over_clients("aggregate_tokens_per_second"), "clients"),
            Panel("clients at once: time to first token", "ms", {}, False, over_clients("ttft_ms"), "clients"),
        ]
    return title, panels
