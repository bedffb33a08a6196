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

With `--users N` the bench's server has N users of different weights (`--weights`, cycled) and
the clients are shared out between them, each user with several clients so that their jobs
are always queued. Per user it reports jobs done per second, p50/p95 queue wait and the
device-seconds the server charged them over the run (GetServerStats), and over all users
Jain's fairness index of device time divided by weight (1.0: every user got exactly their
weighted share; 1/N: one user got everything). `--policies fair,fifo` runs the same load once
per queue policy, one server after the other, for a side-by-side comparison.

With `--cluster 1,2` the bench runs the same load once per worker count on a local Ray cluster
it starts (a head node and that many one-CPU nodes on this machine, `ray.cluster_utils.Cluster`),
its server the gateway (`[cluster] engine = "ray"`), and reports jobs per second for each and
the speed-up over the first; the load starts once every worker runs.

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
class BenchUser:
    name: str
    token: str | None
    weight: float = 1.0


ANONYMOUS = BenchUser("", None)
ADMIN = BenchUser("bench-admin", "bench-admin-token")


@dataclass
class Tally:
    """What the clients saw, gathered under one lock."""

    outcomes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # "kind: CODE"
    unexpected: list[str] = field(default_factory=list)
    waits: dict[str, list[float]] = field(default_factory=dict)  # kind -> queue waits in seconds
    user_waits: dict[str, list[float]] = field(default_factory=dict)  # user -> queue waits in seconds
    user_done: Counter = field(default_factory=Counter)  # user -> jobs succeeded before the deadline
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, action: str, outcome: str, wait: float | None, error: ArtForgeError | None = None, user: str = "") -> None:
        with self.lock:
            self.outcomes[f"{kind} {outcome}"] += 1
            if outcome == "succeeded":
                self.user_done[user] += 1
            if wait is not None:
                self.waits.setdefault(kind, []).append(wait)
                self.user_waits.setdefault(user, []).append(wait)
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


def _one_job(client: Client, kind: str, action: str, rng: random.Random, tally: Tally, max_tokens: int, user: str) -> None:
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
                tally.add(kind, action, "abandoned", wait, user=user)
                return
            if event.HasField("queued") and action == "cancel":
                client.cancel(event.job_id)
                action = "cancelled"
        succeeded = stream.finished is not None and stream.finished.state == jobs_pb2.JOB_STATE_SUCCEEDED
        tally.add(kind, action, "succeeded" if succeeded else "ended", wait, user=user)
    except ArtForgeError as error:
        outcome = "cancelled" if action == "cancelled" and error.code is grpc.StatusCode.CANCELLED else "failed"
        tally.add(kind, "cancel" if action == "cancelled" else action, outcome, wait, error, user)


def _client_loop(
    address: str, user: BenchUser, kinds: list[str], seed: int, deadline: float, tally: Tally, args: argparse.Namespace
) -> None:
    rng = random.Random(seed)
    with Client(address, token=user.token) as client:
        while time.monotonic() < deadline:
            kind = rng.choice(kinds)
            roll = rng.random()
            action = "abandon" if roll < args.abandon_share else "cancel" if roll < args.abandon_share + args.cancel_share else "keep"
            try:
                _one_job(client, kind, action, rng, tally, args.max_tokens, user.name)
            except ArtForgeError as error:  # refused before any event: a full queue, a bad request
                tally.add(kind, action, "refused", None, error, user.name)


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


def jain_index(values: list[float]) -> float:
    """(sum x)^2 / (n sum x^2): 1.0 when all are equal, 1/n when one has everything."""
    squares = sum(x * x for x in values)
    return sum(values) ** 2 / (len(values) * squares) if squares else 0.0


def _charged(address: str) -> dict[str, float]:
    """Device-seconds the server has charged each user since it started."""
    with Client(address, token=ADMIN.token) as admin:
        return {row.user: row.device_seconds_charged for row in admin.server_stats().users}


def _run(address: str, users: list[BenchUser], pid: int | None, args: argparse.Namespace) -> dict:
    """One load run: `users` share the clients (one anonymous user: no auth)."""
    with Client(address, token=users[0].token) as client:
        info = client.server_info()
    kinds = ["text"] if info.default_text_model else []
    kinds += ["stylize"] if info.stylize_available else []
    kinds += ["image"] if info.images_available and info.default_image_model else []
    if not kinds:
        raise RuntimeError("the server offers neither text, stylize nor images: nothing to load it with")
    tally = Tally()
    by_user = users != [ANONYMOUS]
    charged_before = _charged(address) if by_user else {}
    started = time.monotonic()
    deadline = started + args.seconds
    threads = [
        threading.Thread(
            target=_client_loop, args=(address, users[i % len(users)], kinds, args.seed + i, deadline, tally, args), daemon=True
        )
        for i in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    rss: list[list[float]] = []
    charged_at_deadline = None
    while any(thread.is_alive() for thread in threads):
        if pid is not None and (value := _rss_mb(pid)) is not None:
            rss.append([round(time.monotonic() - started, 1), round(value, 1)])
        if by_user and charged_at_deadline is None and time.monotonic() >= deadline:  # before the queues drain
            charged_at_deadline = _charged(address)
        time.sleep(min(args.sample_seconds, max(deadline - time.monotonic(), 0.05)))
    for thread in threads:
        thread.join()
    warm = [mb for t, mb in rss if t >= args.seconds * WARM_UP_SHARE]
    per_user = {}
    if by_user:
        charged_at_deadline = charged_at_deadline or _charged(address)
        for user in users:
            seconds = charged_at_deadline.get(user.name, 0.0) - charged_before.get(user.name, 0.0)
            waits = _percentiles(tally.user_waits.get(user.name, []))
            per_user[user.name] = {
                "weight": user.weight,
                "jobs_done": tally.user_done[user.name],
                "jobs_per_second": round(tally.user_done[user.name] / args.seconds, 3),
                "queue_wait_p50_ms": waits["p50_ms"],
                "queue_wait_p95_ms": waits["p95_ms"],
                "device_seconds": round(seconds, 2),
                "device_seconds_per_weight": round(seconds / user.weight, 2),
            }
    fairness = {"jain_index_device_seconds_per_weight": round(jain_index([u["device_seconds_per_weight"] for u in per_user.values()]), 4)}
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
        **({"users": per_user, **fairness} if by_user else {}),
    }


def bench_users(count: int, weights: str) -> list[BenchUser]:
    cycle = [float(weight) for weight in weights.split(",")]
    return [BenchUser(f"artist-{i + 1}", f"artist-{i + 1}-token", cycle[i % len(cycle)]) for i in range(count)]


def _users_config(users: list[BenchUser]) -> str:
    tables = [f'[users.{ADMIN.name}]\ntoken = "{ADMIN.token}"\nrole = "admin"\n']
    tables += [f'[users.{user.name}]\ntoken = "{user.token}"\nweight = {user.weight}\n' for user in users]
    return "\n".join(tables)


def _run_own_server(users: list[BenchUser], policy: str, args: argparse.Namespace, extra_config: str = "", workers: int = 0) -> dict:
    """Start a server (the --config, plus the bench's users and `extra_config`), load it once it
    has `workers` cluster workers (0: no cluster), stop it."""
    with tempfile.TemporaryDirectory(prefix="artforge-bench-") as workdir:
        serve_args = ["--models-dir", args.models_dir] if args.models_dir else []
        config = (Path(args.config).read_text() if args.config else "") + extra_config
        if users != [ANONYMOUS]:
            config += "\n" + _users_config(users)
        if config:
            (Path(workdir) / "artforge.toml").write_text(config)
            serve_args += ["--config", str(Path(workdir) / "artforge.toml")]
        env = {"ARTFORGE_QUEUE": policy} if policy else None
        with ServerProcess(*serve_args, log_path=Path(workdir) / "server.log", env=env) as process:
            if workers:
                _wait_for_workers(process.address, users[0].token, workers)
            return _run(process.address, users, process.process.pid, args)


WORKERS_TIMEOUT = 600  # each worker starts a process and loads its models


def _wait_for_workers(address: str, token: str | None, count: int) -> None:
    deadline = time.monotonic() + WORKERS_TIMEOUT
    with Client(address, token=token) as client:
        while len(client.server_info().devices) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not run {count} workers within {WORKERS_TIMEOUT} s")
            time.sleep(1.0)


def _run_on_cluster(workers: int, args: argparse.Namespace) -> dict:
    """A local Ray cluster of `workers` one-CPU nodes, with the bench's server as its gateway."""
    from ray.cluster_utils import Cluster  # ray, only for --cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        config = f'\n[cluster]\nengine = "ray"\naddress = "{cluster.address}"\nworkers = {workers}\ncpus_per_worker = 1\n'
        return _run_own_server([ANONYMOUS], "", args, config, workers)
    finally:
        cluster.shutdown()


def bench_load(args: argparse.Namespace) -> dict:
    if (args.users or args.cluster) and args.address:
        message = "--users and --cluster need servers the bench starts: leave out --address"
        raise ArtForgeError(grpc.StatusCode.INVALID_ARGUMENT, message)
    if args.users and args.cluster:
        raise ArtForgeError(grpc.StatusCode.INVALID_ARGUMENT, "--users and --cluster: one comparison at a time")
    users = bench_users(args.users, args.weights) if args.users else [ANONYMOUS]
    if args.address:
        result = _run(args.address, [BenchUser("", args.token)], None, args)
        server = args.address
    elif args.users:
        result = {"by_policy": {policy: _run_own_server(users, policy, args) for policy in args.policies.split(",")}}
        server = "started by the bench, once per queue policy"
    elif args.cluster:
        counts = [int(count) for count in args.cluster.split(",")]
        runs = {str(count): _run_on_cluster(count, args) for count in counts}
        base = runs[str(counts[0])]["jobs_done"]
        speedups = {count: round(run["jobs_done"] / base, 2) if base else None for count, run in runs.items()}
        result = {"by_workers": runs, "speedup_over_first": speedups}
        server = "a gateway started by the bench on a local Ray cluster, once per worker count"
    else:
        result = _run_own_server(users, "", args)
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
            **({"users": args.users, "weights": args.weights, "policies": args.policies} if args.users else {}),
            **({"cluster_workers": args.cluster} if args.cluster else {}),
        },
        **result,
    }


def chart(result: dict) -> tuple[str, list[Panel]]:
    """Queue waits per kind of job, what became of the jobs, and the server's memory over the run;
    with users, per policy: device-seconds per weight for each user, and Jain's index."""
    settings = result["settings"]
    title = f"{settings['clients']} clients for {settings['seconds']:g} s on {result['machine']['cpus']} CPUs"
    if "by_policy" in result:
        return f"{title}, {settings['users']} users (weights {settings['weights']})", _policy_panels(result["by_policy"])
    if "by_workers" in result:
        return f"{title}, Ray cluster of one-CPU workers", _worker_panels(result)
    panels = [
        Panel(f"queue wait, {kind}", "ms", {"p50": w["p50_ms"], "p95": w["p95_ms"], "p99": w["p99_ms"]}, False)
        for kind, w in result["queue_wait"].items()
    ]
    outcomes = Counter()
    for key, count in result["outcomes"].items():
        outcomes[key.split(" ", 1)[1]] += count
    panels.append(Panel("jobs, every kind", "count", dict(sorted(outcomes.items())) or {"none": 0}, True))
    if result["rss_mb"]:
        panels.append(Panel("server memory (RSS)", "MB", {}, None, lines={"RSS": result["rss_mb"]}))
    return title, panels


def _worker_panels(result: dict) -> list[Panel]:
    runs = result["by_workers"]
    label = {count: f"{count} worker{'' if count == '1' else 's'}" for count in runs}
    done = {label[count]: run["jobs_done"] / run["elapsed_seconds"] for count, run in runs.items()}
    speedup = {label[count]: value or 0.0 for count, value in result["speedup_over_first"].items()}
    waits = {label[count]: max((w["p50_ms"] for w in run["queue_wait"].values()), default=0.0) / 1000 for count, run in runs.items()}
    return [
        Panel("jobs done per second", "jobs/s", done, True),
        Panel("speed-up over the first", "x", speedup, True),
        Panel("p50 queue wait (slowest kind)", "s", waits, False),
    ]


def _policy_panels(by_policy: dict[str, dict]) -> list[Panel]:
    panels = []
    for policy, run in by_policy.items():
        # "3 w2": artist-3, of weight 2.
        label = {name: f"{name.rsplit('-', 1)[-1]} w{user['weight']:g}" for name, user in run["users"].items()}
        shares = {label[name]: user["device_seconds_per_weight"] for name, user in run["users"].items()}
        panels.append(Panel(f"{policy}: device-s per weight\n(equal bars: shares follow weights)", "s", shares, None))
        waits = {label[name]: user["queue_wait_p95_ms"] / 1000 for name, user in run["users"].items()}
        panels.append(Panel(f"{policy}: p95 queue wait", "s", waits, False))
    jain = {policy: run["jain_index_device_seconds_per_weight"] for policy, run in by_policy.items()}
    panels.append(Panel("Jain's index (1 = fair)", "", jain, True))
    return panels
