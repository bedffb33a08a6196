"""Server configuration: defaults < TOML file < ARTFORGE_* environment < command-line flags.

A config file looks like this (every key optional):

    [server]
    host = "127.0.0.1"
    port = 50051
    devices = ["auto"]          # or ["cpu"], ["cuda:0", "cuda:1"], ["cpu:0", "cpu:1"]
    result_ttl_seconds = 600
    log_level = "info"
    data_dir = "~/.local/share/artforge/server"   # the job store: jobs, their events and results
    max_result_bytes = 8589934592   # finished results kept on disk; past it the oldest are dropped
    drain_seconds = 30          # after SIGTERM, how long running jobs may go on (queued ones wait)

    queue = "fair"              # "fair": users share the devices by weight; "fifo": priority, then arrival

    [auth]
    tokens = { alice = "long-random-secret" }   # name = token: artists of weight 1, no quotas
    users_file = "users.toml"   # more [users.NAME] tables; re-read on SIGHUP, jobs kept
    tls_cert = "server.crt"
    tls_key = "server.key"

    [users.alice]               # a user: a token (or its SHA-256, so the file holds no secret)
    token_sha256 = "9f86d0..."  # sha256sum of the token, hex
    role = "artist"             # or "admin": sees and cancels every job, may raise priority
    weight = 2                  # share of the devices against other users' weights (default 1)
    max_queued_jobs = 10        # quotas; 0 or absent: no limit
    max_running_jobs = 1
    device_seconds_per_hour = 1800
    device_seconds_burst = 600  # the bucket's size (default: an hour's worth)
    max_image_pixels = 1048576

    [metrics]
    port = 9464                 # serve Prometheus /metrics here; 0 (the default): off
    host = "127.0.0.1"

    [models]
    dir = "~/.local/share/artforge/models"
    default_text = "smollm2-135m-instruct"
    preload = ["smollm2-135m-instruct"]
    max_loaded = 2
    backend = "auto"            # for models found in the folder: "auto", "torch" or "onnx"

    [model.my-llm]              # a named model anywhere on disk
    path = "/data/llm/Qwen2.5-0.5B-Instruct"
    kind = "text"

    [images]
    default_model = "sd15"      # a diffusers folder or single file in the models folder
    safety = false              # run the NSFW detector on every image result, blur what it flags; no previews
    max_loaded_loras = 4        # LoRA adapters kept loaded per pipeline, least recently used deleted first
    depth_model = "depth-anything--depth-anything-v2-small-hf"  # for depth controls made from a picture; default: the only one

    [text]
    batch_size = 8              # text jobs decoded together on a device (ONNX Runtime, CPU); 1: one at a time
    batch_memory_mb = 1024      # their keys and values; a job that would pass it waits for room
    prefix_cache_mb = 256       # keys and values of recent prompts, reused by jobs that start alike; 0: off

    [limits]
    max_tokens = 2048

    [tasks.haiku]               # a task of your own, next to the built-in ones
    description = "a haiku about the prompt"
    system_prompt = "Answer with one haiku."
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

from artforge.errors import ArtForgeError, ErrorCode

EMBEDDED_TEXT_MODEL = "smollm2-135m-instruct"


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "artforge"


def default_models_dir() -> Path:
    return _data_home() / "models"


def default_data_dir() -> Path:
    return _data_home() / "server"


@dataclass
class ModelEntry:
    """A model named in the config, wherever its files are."""

    name: str
    path: str
    kind: str = ""  # detected from the files; when given, it must match them
    backend: str = ""  # "auto", "torch" or "onnx"; empty: the [models] backend
    description: str = ""
    config: str = ""  # single-file image checkpoints: a diffusers folder with their configs
    control: str = ""  # ControlNets: their control type, when the name does not say it


@dataclass
class TaskEntry:
    description: str
    system_prompt: str


@dataclass
class UserEntry:
    """A `[users.NAME]` table: who may call, with which role, share and quotas (0: no limit)."""

    name: str
    token: str = ""
    token_sha256: str = ""
    role: str = "artist"
    weight: float = 1.0
    max_queued_jobs: int = 0
    max_running_jobs: int = 0
    device_seconds_per_hour: float = 0.0
    device_seconds_burst: float = 0.0  # 0: an hour's worth
    max_image_pixels: int = 0


CLUSTER_ENGINES = ("", "ray")


@dataclass
class ClusterConfig:
    """`[cluster]`: where jobs run. Without it (engine ""), on this process's devices; with
    engine "ray", on a Ray Serve deployment of ArtForge workers, while this server stays the
    front door (TLS, tokens, the queue, quotas, the job store, metrics)."""

    engine: str = ""
    address: str = "auto"  # the Ray cluster to join: "auto" (a local `ray start`), or "HOST:PORT"
    workers: int = 1  # Serve replicas, one per device (with autoscaling: how many to start with)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # 1 on GPU nodes: one worker per GPU
    app_name: str = "artforge"  # the Serve application (one per gateway)
    # Autoscaling, on when max_workers > 0: the gateway sets the worker count between these from
    # its jobs in flight (queued and running); it scales down after scale_down_seconds below.
    min_workers: int = 0
    max_workers: int = 0
    scale_down_seconds: float = 60.0

    @property
    def autoscaling(self) -> bool:
        return self.max_workers > 0

    @property
    def initial_workers(self) -> int:
        """The workers deployed first. Serve cannot deploy none, so an autoscaled deployment
        starts with one and the gateway scales it down to `min_workers` once idle."""
        return max(1, min(max(self.workers, self.min_workers), self.max_workers)) if self.autoscaling else self.workers


@dataclass
class TextServing:
    """`[text]`: how text jobs share a device. With ONNX Runtime on a CPU, up to `batch_size`
    text jobs decode together (continuous batching); elsewhere they run one at a time."""

    batch_size: int = 8  # text jobs decoded at once on one device; 1: one at a time
    batch_memory_mb: int = 1024  # the batch's keys and values; a job that would pass it waits for room
    prefix_cache_mb: int = 256  # keys and values of recent prompts, for jobs that start the same way; 0: off


@dataclass
class Limits:
    max_tokens: int = 2048
    default_max_tokens: int = 256
    max_prompt_chars: int = 32_000
    max_image_pixels: int = 2048 * 2048
    max_steps: int = 150
    max_batch: int = 8
    max_queue: int = 64
    chunk_bytes: int = 1 << 20
    max_request_bytes: int = 64 << 20
    # Jobs run at priorities -max_priority..max_priority; a caller may only lower its own (to
    # -max_priority): nobody may put their jobs ahead of others' until callers have roles.
    max_priority: int = 10
    # Bounds on what one request makes the server hold, checked before anything reads it.
    max_history_messages: int = 256
    max_loras_per_request: int = 4
    max_controls_per_request: int = 4
    max_name_chars: int = 256  # model, task, scheduler and LoRA names, history roles, job ids
    max_label_chars: int = 256
    # Calls in progress at once (job streams and watchers included); more are RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 256

    @property
    def max_history_chars(self) -> int:
        """History, system prompt and prompt together may be this long, in characters."""
        return 4 * self.max_prompt_chars


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 50051
    devices: list[str] = field(default_factory=lambda: ["auto"])
    result_ttl_seconds: float = 600.0
    log_level: str = "info"
    data_dir: Path = field(default_factory=default_data_dir)
    max_result_bytes: int = 8 << 30
    drain_seconds: float = 30.0
    queue: str = "fair"
    tokens: dict[str, str] = field(default_factory=dict)
    users: list[UserEntry] = field(default_factory=list)
    users_file: str = ""
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    tls_cert: str = ""
    tls_key: str = ""
    models_dir: Path = field(default_factory=default_models_dir)
    default_text_model: str = EMBEDDED_TEXT_MODEL
    preload: list[str] = field(default_factory=lambda: [EMBEDDED_TEXT_MODEL])
    max_loaded_models: int = 2
    default_backend: str = "auto"
    default_image_model: str = ""
    depth_model: str = ""  # the depth-estimation model of depth preprocessing; empty: the only one registered
    safety: bool = False
    max_loaded_loras: int = 4
    models: list[ModelEntry] = field(default_factory=list)
    tasks: dict[str, TaskEntry] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    text: TextServing = field(default_factory=TextServing)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


# TOML section -> key -> Config attribute. Anything else in a file is an error, so a typo
# never silently falls back to a default.
_FILE_KEYS: dict[str, dict[str, str]] = {
    "server": {
        "host": "host",
        "port": "port",
        "devices": "devices",
        "result_ttl_seconds": "result_ttl_seconds",
        "log_level": "log_level",
        "data_dir": "data_dir",
        "max_result_bytes": "max_result_bytes",
        "drain_seconds": "drain_seconds",
        "queue": "queue",
    },
    "auth": {"tokens": "tokens", "users_file": "users_file", "tls_cert": "tls_cert", "tls_key": "tls_key"},
    "metrics": {"port": "metrics_port", "host": "metrics_host"},
    "models": {
        "dir": "models_dir",
        "default_text": "default_text_model",
        "preload": "preload",
        "max_loaded": "max_loaded_models",
        "backend": "default_backend",
    },
    "images": {
        "default_model": "default_image_model",
        "safety": "safety",
        "max_loaded_loras": "max_loaded_loras",
        "depth_model": "depth_model",
    },
}

# Environment variable -> Config attribute; lists are comma-separated.
ENV_VARS: dict[str, str] = {
    "ARTFORGE_HOST": "host",
    "ARTFORGE_PORT": "port",
    "ARTFORGE_DEVICES": "devices",
    "ARTFORGE_MODELS_DIR": "models_dir",
    "ARTFORGE_DEFAULT_TEXT_MODEL": "default_text_model",
    "ARTFORGE_PRELOAD": "preload",
    "ARTFORGE_TLS_CERT": "tls_cert",
    "ARTFORGE_TLS_KEY": "tls_key",
    "ARTFORGE_LOG_LEVEL": "log_level",
    "ARTFORGE_RESULT_TTL_SECONDS": "result_ttl_seconds",
    "ARTFORGE_DATA_DIR": "data_dir",
    "ARTFORGE_DEFAULT_IMAGE_MODEL": "default_image_model",
    "ARTFORGE_SAFETY": "safety",
    "ARTFORGE_BACKEND": "default_backend",
    "ARTFORGE_QUEUE": "queue",
}
# A single token from the environment, for the common one-studio-one-secret case.
TOKEN_ENV = "ARTFORGE_TOKEN"


def _config_error(where: str, problem: str) -> ArtForgeError:
    return ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"config {where}: {problem}")


def _coerce(cls: type, name: str, value: Any, where: str) -> Any:
    """`value`, from TOML or as a string from the environment or a flag, as the type of cls.name."""
    hint = get_type_hints(cls)[name]
    kind = get_origin(hint) or hint
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                return value.lower() in {"1", "true", "yes", "on"}
            raise TypeError
        if kind is list:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list):
                raise TypeError
            return [str(item).strip() for item in items if str(item).strip()]
        if kind is dict:
            if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
                raise TypeError
            return dict(value)
        if kind in (str, Path):
            if not isinstance(value, (str, Path)):
                raise TypeError
            return Path(value).expanduser() if kind is Path else value
        if kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (kind is int and isinstance(value, float)):
                raise TypeError
            return kind(value)
    except (TypeError, ValueError):
        expected = {
            bool: "true/false",
            list: "list",
            dict: "table of strings",
            str: "string",
            Path: "path",
            int: "whole number",
            float: "number",
        }
        raise _config_error(where, f"{value!r} is not a valid {expected[kind]}") from None
    raise TypeError(f"no conversion for {cls.__name__}.{name}: {hint}")


def _table(values: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(values, Mapping):
        raise _config_error(where, f"must be a table ([section] with keys), not {values!r}")
    return values


def _dataclass_from(cls: type, data: Any, where: str, **extra: Any) -> Any:
    data = _table(data, where)
    names = {f.name for f in dataclasses.fields(cls)} - set(extra)
    unknown = sorted(set(data) - names)
    if unknown:
        raise _config_error(where, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    values = {key: _coerce(cls, key, value, f"{where} {key}") for key, value in data.items()}
    try:
        return cls(**extra, **values)
    except TypeError as exc:
        raise _config_error(where, str(exc)) from None


def apply_file(config: Config, data: Mapping[str, Any], source: str) -> None:
    for section, values in data.items():
        where = f"{source} [{section}]"
        if section in _FILE_KEYS:
            keys = _FILE_KEYS[section]
            for key, value in _table(values, where).items():
                if key not in keys:
                    raise _config_error(where, f"unknown key {key!r}; known: {', '.join(keys)}")
                setattr(config, keys[key], _coerce(Config, keys[key], value, f"{where} {key}"))
        elif section == "limits":
            config.limits = _dataclass_from(Limits, values, where)
        elif section == "text":
            config.text = _read_text(values, where)
        elif section == "cluster":
            config.cluster = _read_cluster(values, where)
        elif section == "model":
            entries = _table(values, where).items()
            config.models = [_dataclass_from(ModelEntry, v, f"{source} [model.{n}]", name=n) for n, v in entries]
        elif section == "users":
            config.users = [*config.users, *read_users(values, source)]
        elif section == "tasks":
            config.tasks = {n: _dataclass_from(TaskEntry, v, f"{source} [tasks.{n}]") for n, v in _table(values, where).items()}
        else:
            known = [*_FILE_KEYS, "limits", "text", "cluster", "model", "users", "tasks"]
            raise _config_error(source, f"unknown section [{section}]; known: {', '.join(known)}")


def _read_text(values: Any, where: str) -> TextServing:
    text = _dataclass_from(TextServing, values, where)
    if text.batch_size < 1:
        raise _config_error(where, f"batch_size {text.batch_size} must be 1 or more (1: one text job at a time)")
    if text.batch_memory_mb < 1 or text.prefix_cache_mb < 0:
        raise _config_error(where, "batch_memory_mb must be 1 or more, prefix_cache_mb 0 (off) or more")
    return text


def _read_cluster(values: Any, where: str) -> ClusterConfig:
    cluster = _dataclass_from(ClusterConfig, values, where)
    if cluster.engine not in CLUSTER_ENGINES:
        raise _config_error(where, f"engine {cluster.engine!r} is not one of {', '.join(repr(e) for e in CLUSTER_ENGINES)}")
    if cluster.autoscaling:
        if not 0 <= cluster.min_workers <= cluster.max_workers:
            raise _config_error(where, f"min_workers {cluster.min_workers} must be 0 to max_workers ({cluster.max_workers})")
        if cluster.scale_down_seconds < 0:
            raise _config_error(where, f"scale_down_seconds {cluster.scale_down_seconds:g} must be 0 or more")
    elif cluster.workers < 1:
        raise _config_error(where, f"workers {cluster.workers} must be 1 or more (or set max_workers to autoscale)")
    if cluster.cpus_per_worker < 0 or cluster.gpus_per_worker < 0:
        raise _config_error(where, "cpus_per_worker and gpus_per_worker must be 0 or more")
    return cluster


ROLES = ("artist", "admin")
QUEUE_POLICIES = ("fair", "fifo")


def read_users(values: Any, source: str) -> list[UserEntry]:
    """`[users.NAME]` tables, each checked: one token form, a known role, a positive weight."""
    users = []
    for name, table in _table(values, f"{source} [users]").items():
        here = f"{source} [users.{name}]"
        entry = _dataclass_from(UserEntry, table, here, name=name)
        if bool(entry.token) == bool(entry.token_sha256):
            raise _config_error(here, "give exactly one of token and token_sha256")
        if entry.token_sha256 and not (len(entry.token_sha256) == 64 and set(entry.token_sha256.lower()) <= set("0123456789abcdef")):
            raise _config_error(here, "token_sha256 must be 64 hex digits (sha256sum of the token)")
        if entry.role not in ROLES:
            raise _config_error(here, f"role {entry.role!r} is not one of {', '.join(ROLES)}")
        if not entry.weight > 0:
            raise _config_error(here, f"weight {entry.weight:g} must be above 0")
        quotas = ("max_queued_jobs", "max_running_jobs", "device_seconds_per_hour", "device_seconds_burst", "max_image_pixels")
        for quota in quotas:
            if getattr(entry, quota) < 0:
                raise _config_error(here, f"{quota} {getattr(entry, quota)} must be 0 (no limit) or more")
        users.append(entry)
    return users


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise _config_error(str(path), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise _config_error(str(path), f"not valid TOML ({exc})") from None


def load_users_file(path: Path) -> list[UserEntry]:
    """The `[auth] users_file`: only `[users.NAME]` tables (re-read on SIGHUP)."""
    data = _read_toml(path)
    unknown = sorted(set(data) - {"users"})
    if unknown:
        raise _config_error(str(path), f"unknown section(s) {', '.join(unknown)}; a users file holds only [users.NAME] tables")
    return read_users(data.get("users", {}), str(path))


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the config from defaults, an optional TOML file, the environment and flags."""
    env = os.environ if env is None else env
    config = Config()
    path = path or (Path(env["ARTFORGE_CONFIG"]) if env.get("ARTFORGE_CONFIG") else None)
    if path is not None:
        apply_file(config, _read_toml(path), str(path))
    for var, name in ENV_VARS.items():
        if env.get(var):
            setattr(config, name, _coerce(Config, name, env[var], var))
    if env.get(TOKEN_ENV):
        config.tokens = {**config.tokens, "default": env[TOKEN_ENV]}
    for name, value in (overrides or {}).items():
        if value is not None:
            setattr(config, name, _coerce(Config, name, value, f"--{name.replace('_', '-')}"))
    if config.queue not in QUEUE_POLICIES:
        raise _config_error("server queue", f"{config.queue!r} is not one of {', '.join(QUEUE_POLICIES)}")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise _config_error("auth", "tls_cert and tls_key go together: set both or neither")
    return config
