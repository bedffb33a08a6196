"""`artforge bench load`: many artists on one server at once, as a studio meets it.

N simulated clients, each on its own thread and channel, submit one job after another for T
seconds: short text jobs, stylize jobs (the built-in style models) and, when the server has an
image model, small image jobs. A share of them is abandoned (the client disconnects after the
job is queued) or cancelled (CancelJob while it waits or runs), as artists do. The bench starts
its own server on a free port (or measures the one at --address) and reports, as JSON:

- jobs by outcome (succeeded, cancelled, abandoned) and every error by gRPC code, split into
  expected (RESOURCE_EXHAUSTED when the queue is full, CANCELLED for a cancel) and unexpected;
- the queue wait (submission to the job's `started` event, from the event's own elapsed time)
  as p50 / p95 / p99, per kind of job;
- the server's resident memory (Linux /proc; only for a server the bench started) sampled over
  the run, and its growth after the warm-up (the first fifth of the run).

Every client's choices come from one seeded generator per client, so two runs ask for the same
jobs in the same order; what the server makes of them is what is measured.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from artforge.bench import report
from artforge.bench.chart import Panel
from artforge.launch import ServerProcess
from artforge_client import ArtForgeError, Client
from artforge_client.v1 import image_pb2, jobs_pb2, pixels_pb2

PROMPTS = ("a lighthouse in fog", "a red barn at dusk", "a cozy cabin in snow", "a castle on a cliff", "two owls on a branch")
EXPECTED = {
    "cancel": {grpc.StatusCode.CANCELLED.name},
    "abandon": {grpc.StatusCode.CANCELLED.name},
}
QUEUE_FULL = grpc.StatusCode.RESOURCE_EXHAUSTED.name  # a full queue refusing more is the server working as configured
WARM_UP_SHARE = 0.2


@dataclass
class Tally:
    """What the clients saw, gathered under one lock."""

    outcomes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # "kind: CODE"
    unexpected: list[str] = field(default_factory=list)
    waits: dict[str, list[float]] = field(default_factory=dict)  # kind -> queue waits in seconds
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, action: str, outcome: str, wait: float | None, error: ArtForgeError | None = None) -> None:
        with self.lock:
            self.outcomes[f"{kind} {outcome}"] += 1
            if wait is not None:
                self.waits.setdefault(kind, []).append(wait)
            if error is not None:
                code = error.code.name
                self.errors[f"{kind}: {code}"] += 1
                if code != QUEUE_FULL and code not in EXPECTED.get(action, set()):
                    self.unexpected.append(f"{kind} ({action}): {code}: {error.message[:200]}")


def _stylize_request(rng: random.Random) -> image_pb2.StylizeRequest:
    side = rng.choice((64, 96, 128))
    # A flat grey picture: stylize's cost depends on the size, not on the pixels.
    data = bytes([128, 128, 128]) * side * side
    image = pixels_pb2.Image(
        encoding=pixels_pb2.IMAGE_ENCODING_RAW, width=side, height=side, channels=3, dtype=pixels_pb2.PIXEL_TYPE_UINT8, data=data
    )
    return image_pb2.StylizeRequest(image=image, style_index=rng.randrange(26), strength=1.0)


def _image_request(rng: random.Random) -> image_pb2.GenerateImageRequest:
    return image_pb2.GenerateImageRequest(prompt=rng.choice(PROMPTS), width=64, height=64, steps=2, seed=rng.randrange(1 << 31))


def _one_job(client: Client, kind: str, action: str, rng: random.Random, tally: Tally, max_tokens: int) -> None:
    if kind == "text":
        stream = client.generate_text(rng.choice(PROMPTS), max_tokens=max_tokens, seed=rng.randrange(1 << 31))
    elif kind == "stylize":
        stream = client.stylize(_stylize_request(rng))
    else:
        stream = client.generate_image(_image_request(rng))
    wait = None
    try:
        for event in stream:
            if event.HasField("started"):
                wait = event.elapsed_seconds
            if event.HasField("queued") and action == "abandon":
                stream.disconnect()  # the artist closed the file: the server cancels the job
                tally.add(kind, action, "abandoned", wait)
                return
            if event.HasField("queued") and action == "cancel":
                client.cancel(event.job_id)
                action = "cancelled"
        succeeded = stream.finished is not None and stream.finished.state == jobs_pb2.JOB_STATE_SUCCEEDED
        tally.add(kind, action, "succeeded" if succeeded else "ended", wait)
    except ArtForgeError as error:
        outcome = "cancelled" if action == "cancelled" and error.code is grpc.StatusCode.CANCELLED else "failed"
        tally.add(kind, "cancel" if action == "cancelled" else action, outcome, wait, error)


def _client_loop(
    address: str, token: str | None, kinds: list[str], seed: int, deadline: float, tally: Tally, args: argparse.Namespace
) -> None:
    rng = random.Random(seed)
    with Client(address, token=token) as client:
        while time.monotonic() < deadline:
            kind = rng.choice(kinds)
            roll = rng.random()
            action = "abandon" if roll < args.abandon_share else "cancel" if roll < args.abandon_share + args.cancel_share else "keep"
            try:
                _one_job(client, kind, action, rng, tally, args.max_tokens)
            except ArtForgeError as error:  # refused before any event: a full queue, a bad request
                tally.add(kind, action, "refused", None, error)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95 and p99 in ms (inclusive quantiles: one value is its own percentiles)."""
    if not values:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "jobs": 0}
    cuts = statistics.quantiles(values * 2 if len(values) == 1 else values, n=100, method="inclusive")
    ms = {f"p{p}_ms": round(cuts[p - 1] * 1000, 1) for p in (50, 95, 99)}
    return {**ms, "jobs": len(values)}


def _run(address: str, token: str | None, pid: int | None, args: argparse.Namespace) -> dict:
    with Client(address, token=token) as client:
        info = client.server_info()
    kinds = ["text"] if info.default_text_model else []
    kinds += ["stylize"] if info.stylize_available else []
    kinds += ["image"] if info.images_available and info.default_image_model else []
    if not kinds:
        raise RuntimeError("the server offers neither text, stylize nor images: nothing to load it with")
    tally = Tally()
    started = time.monotonic()
    deadline = started + args.seconds
    threads = [
        threading.Thread(target=_client_loop, args=(address, token, kinds, args.seed + i, deadline, tally, args), daemon=True)
        for i in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    rss: list[list[float]] = []
    while any(thread.is_alive() for thread in threads):
        if pid is not None and (value := _rss_mb(pid)) is not None:
            rss.append([round(time.monotonic() - started, 1), round(value, 1)])
        time.sleep(args.sample_seconds)
    for thread in threads:
        thread.join()
    warm = [mb for t, mb in rss if t >= args.seconds * WARM_UP_SHARE]
    return {
        "kinds": kinds,
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "outcomes": dict(sorted(tally.outcomes.items())),
        "jobs_done": sum(n for key, n in tally.outcomes.items() if key.endswith(" succeeded")),
        "errors_by_code": dict(sorted(tally.errors.items())),
        "unexpected_errors": tally.unexpected[:50],
        "unexpected_error_count": len(tally.unexpected),
        "queue_wait": {kind: _percentiles(values) for kind, values in sorted(tally.waits.items())},
        "rss_mb": rss,
        "rss_after_warm_up_mb": {"first": warm[0], "last": warm[-1], "max": max(warm), "growth": round(warm[-1] - warm[0], 1)}
        if warm
        else None,
    }


def bench_load(args: argparse.Namespace) -> dict:
    if args.address:
        result = _run(args.address, args.token, None, args)
        server = args.address
    else:
        with tempfile.TemporaryDirectory(prefix="artforge-bench-") as workdir:
            serve_args = ["--models-dir", args.models_dir] if args.models_dir else []
            serve_args += ["--config", args.config] if args.config else []
            with ServerProcess(*serve_args, log_path=Path(workdir) / "server.log") as process:
                result = _run(process.address, None, process.process.pid, args)
        server = "started by the bench"
    return {
        **report("load"),
        "server": server,
        "settings": {
            "clients": args.clients,
            "seconds": args.seconds,
            "abandon_share": args.abandon_share,
            "cancel_share": args.cancel_share,
            "max_tokens": args.max_tokens,
            "seed": args.seed,
        },
        **result,
    }


def chart(result: dict) -> tuple[str, list[Panel]]:
    """Queue waits per kind of job, what became of the jobs, and the server's memory over the run."""
    title = f"{result['settings']['clients']} clients for {result['settings']['seconds']:g} s on {result['machine']['cpus']} CPUs"
    panels = [
        Panel(f"queue wait, {kind}", "ms", {"p50": w["p50_ms"], "p95": w["p95_ms"], "p99": w["p99_ms"]}, False)
        for kind, w in result["queue_wait"].items()
    ]
    outcomes = Counter()
    for key, count in result["outcomes"].items():
        outcomes[key.split(" ", 1)[1]] += count
    panels.append(Panel("jobs, every kind", "count", dict(sorted(outcomes.items())) or {"none": 0}, True))
    if result["rss_mb"]:
        panels.append(Panel("server memory (RSS)", "MB", {}, False, line=result["rss_mb"]))
    return title, panels
