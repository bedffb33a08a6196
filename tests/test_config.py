"""artforge.config.load_config: defaults < TOML file < ARTFORGE_* environment < overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from artforge.config import EMBEDDED_TEXT_MODEL, Config, Limits, ModelEntry, TaskEntry, load_config
from artforge.errors import ArtForgeError, ErrorCode


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "artforge.toml"
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str = "", env: dict | None = None, overrides: dict | None = None) -> ArtForgeError:
    path = write(tmp_path, text) if text else None
    with pytest.raises(ArtForgeError) as error:
        load_config(path, env=env or {}, overrides=overrides)
    assert error.value.code is ErrorCode.INVALID_ARGUMENT
    return error.value


def test_defaults_without_file_env_or_overrides():
    config = load_config(None, env={})
    assert config == Config()
    assert (config.host, config.port) == ("127.0.0.1", 50051)
    assert config.address == "127.0.0.1:50051"
    assert config.devices == ["auto"]
    assert config.tokens == {}
    assert config.default_text_model == EMBEDDED_TEXT_MODEL
    assert config.preload == [EMBEDDED_TEXT_MODEL]
    assert config.limits == Limits()
    assert config.models == [] and config.tasks == {}


def test_precedence_defaults_then_file_then_env_then_overrides(tmp_path):
    path = write(tmp_path, '[server]\nport = 6000\nhost = "0.0.0.0"\nlog_level = "debug"\n')
    assert load_config(None, env={}).port == 50051
    from_file = load_config(path, env={})
    assert (from_file.port, from_file.host, from_file.log_level) == (6000, "0.0.0.0", "debug")

    from_env = load_config(path, env={"ARTFORGE_PORT": "7000"})
    assert from_env.port == 7000
    assert from_env.host == "0.0.0.0", "the environment overrides only what it sets"

    from_flags = load_config(path, env={"ARTFORGE_PORT": "7000"}, overrides={"port": 8000, "host": None})
    assert from_flags.port == 8000
    assert from_flags.host == "0.0.0.0", "an override of None (a flag not given) changes nothing"


def test_config_file_from_the_artforge_config_variable(tmp_path):
    path = write(tmp_path, "[server]\nport = 6001\n")
    assert load_config(None, env={"ARTFORGE_CONFIG": str(path)}).port == 6001


def test_every_file_section(tmp_path):
    models_dir = tmp_path / "models"
    path = write(
        tmp_path,
        f"""
[server]
devices = ["cpu", "cuda:0"]
result_ttl_seconds = 30

[auth]
tokens = {{ alice = "a-token", bob = "b-token" }}

[models]
dir = "{models_dir}"
default_text = "my-llm"
preload = []
max_loaded = 3
backend = "onnx"

[model.my-llm]
path = "/data/llm/Qwen2.5-0.5B-Instruct"
description = "a bigger model"

[model.painter]
path = "/data/sd"
kind = "image"
backend = "torch"

[limits]
max_tokens = 100
max_queue = 4

[tasks.haiku]
description = "a haiku about the prompt"
system_prompt = "Answer with one haiku."
""",
    )
    config = load_config(path, env={})
    assert config.devices == ["cpu", "cuda:0"]
    assert config.result_ttl_seconds == 30.0 and isinstance(config.result_ttl_seconds, float)
    assert config.tokens == {"alice": "a-token", "bob": "b-token"}
    assert config.models_dir == models_dir and isinstance(config.models_dir, Path)
    assert config.default_text_model == "my-llm"
    assert config.preload == []
    assert config.max_loaded_models == 3
    assert config.models == [
        ModelEntry(name="my-llm", path="/data/llm/Qwen2.5-0.5B-Instruct", description="a bigger model"),
        ModelEntry(name="painter", path="/data/sd", kind="image", backend="torch"),
    ]
    assert config.default_backend == "onnx"
    assert config.models[0].kind == "" and config.models[0].backend == "", "kind is detected, the backend is [models]' default"
    assert config.limits == Limits(max_tokens=100, max_queue=4)
    assert config.limits.default_max_tokens == Limits().default_max_tokens, "limits not named keep their defaults"
    assert config.tasks == {"haiku": TaskEntry(description="a haiku about the prompt", system_prompt="Answer with one haiku.")}


def test_models_dir_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(write(tmp_path, '[models]\ndir = "~/models"\n'), env={})
    assert config.models_dir == tmp_path / "models"


def test_environment_variables(tmp_path):
    env = {
        "ARTFORGE_HOST": "0.0.0.0",
        "ARTFORGE_PORT": "50123",
        "ARTFORGE_DEVICES": "cpu, cuda:0",
        "ARTFORGE_MODELS_DIR": str(tmp_path / "m"),
        "ARTFORGE_DEFAULT_TEXT_MODEL": "other",
        "ARTFORGE_PRELOAD": "a,b",
        "ARTFORGE_LOG_LEVEL": "warning",
        "ARTFORGE_RESULT_TTL_SECONDS": "1.5",
    }
    config = load_config(None, env=env)
    assert config.host == "0.0.0.0"
    assert config.port == 50123
    assert config.devices == ["cpu", "cuda:0"]
    assert config.models_dir == tmp_path / "m"
    assert config.default_text_model == "other"
    assert config.preload == ["a", "b"]
    assert config.log_level == "warning"
    assert config.result_ttl_seconds == 1.5


def test_empty_environment_variables_are_ignored():
    assert load_config(None, env={"ARTFORGE_PORT": "", "ARTFORGE_DEVICES": ""}) == Config()


def test_artforge_token_becomes_the_default_token(tmp_path):
    assert load_config(None, env={"ARTFORGE_TOKEN": "s3cret"}).tokens == {"default": "s3cret"}
    path = write(tmp_path, '[auth]\ntokens = { alice = "a-token" }\n')
    assert load_config(path, env={"ARTFORGE_TOKEN": "s3cret"}).tokens == {"alice": "a-token", "default": "s3cret"}


def test_overrides_are_coerced_to_the_field_types(tmp_path):
    config = load_config(None, env={}, overrides={"port": "9001", "models_dir": str(tmp_path), "devices": ["cpu"]})
    assert config.port == 9001
    assert config.models_dir == tmp_path
    assert config.devices == ["cpu"]


def test_tls_cert_and_key_go_together(tmp_path):
    message = config_error(tmp_path, '[auth]\ntls_cert = "server.crt"\n').message
    assert "tls_cert" in message and "tls_key" in message
    assert "tls_key" in config_error(tmp_path, env={"ARTFORGE_TLS_KEY": "server.key"}).message
    assert "tls_cert" in config_error(tmp_path, overrides={"tls_cert": "server.crt"}).message
    both = load_config(None, env={"ARTFORGE_TLS_CERT": "server.crt"}, overrides={"tls_key": "server.key"})
    assert (both.tls_cert, both.tls_key) == ("server.crt", "server.key")


def test_unknown_section_is_named(tmp_path):
    message = config_error(tmp_path, "[sever]\nport = 1\n").message
    assert "[sever]" in message
    assert "server" in message, "the message lists the known sections"


def test_unknown_key_is_named(tmp_path):
    message = config_error(tmp_path, "[server]\nprot = 1\n").message
    assert "prot" in message and "[server]" in message
    assert "port" in message, "the message lists the known keys"


def test_unknown_limit_is_named(tmp_path):
    message = config_error(tmp_path, "[limits]\nmax_tokenz = 1\n").message
    assert "max_tokenz" in message and "[limits]" in message


def test_unknown_key_in_a_model_entry_is_named(tmp_path):
    message = config_error(tmp_path, '[model.x]\npath = "/m"\nkinds = "text"\n').message
    assert "kinds" in message and "[model.x]" in message


def test_model_entry_without_a_path_is_an_error(tmp_path):
    message = config_error(tmp_path, '[model.x]\nkind = "text"\n').message
    assert "[model.x]" in message and "path" in message


def test_task_without_a_system_prompt_is_an_error(tmp_path):
    message = config_error(tmp_path, '[tasks.haiku]\ndescription = "d"\n').message
    assert "[tasks.haiku]" in message and "system_prompt" in message


def test_bad_type_in_a_file_names_the_key(tmp_path):
    message = config_error(tmp_path, '[server]\nport = "fifty"\n').message
    assert "port" in message and "fifty" in message


def test_bad_table_type_names_the_key(tmp_path):
    message = config_error(tmp_path, '[auth]\ntokens = "just-a-string"\n').message
    assert "tokens" in message


def test_bad_type_in_the_environment_names_the_variable():
    message = config_error(Path("."), env={"ARTFORGE_PORT": "fifty"}).message
    assert "ARTFORGE_PORT" in message and "fifty" in message


def test_bad_type_in_an_override_names_the_flag():
    message = config_error(Path("."), overrides={"port": "fifty"}).message
    assert "--port" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[limits]\nmax_tokens = "lots"\n', "max_tokens"),
        ("[model.x]\npath = 5\n", "path"),
        ('[tasks.haiku]\ndescription = ["a", "b"]\nsystem_prompt = "Answer with one haiku."\n', "description"),
    ],
    ids=["limits", "model", "tasks"],
)
def test_bad_type_in_a_table_section_names_the_key(tmp_path, text, key):
    # A value of the wrong type must be refused when the config loads, not crash the server
    # later (a string max_tokens makes `1 <= max_tokens <= "lots"` raise TypeError in a request).
    message = config_error(tmp_path, text).message
    assert key in message


def test_section_that_is_not_a_table_is_an_error(tmp_path):
    message = config_error(tmp_path, 'server = "localhost"\n').message
    assert "server" in message


def test_missing_file_and_bad_toml_are_errors(tmp_path):
    with pytest.raises(ArtForgeError) as error:
        load_config(tmp_path / "nope.toml", env={})
    assert "file not found" in error.value.message and "nope.toml" in error.value.message
    assert "not valid TOML" in config_error(tmp_path, "[server\nport = 1\n").message


def test_users_tables_and_a_users_file(tmp_path):
    from artforge.users import Users, token_hash

    users_file = tmp_path / "users.toml"
    users_file.write_text(f'[users.bob]\ntoken_sha256 = "{token_hash("bob-secret")}"\nweight = 3\nmax_queued_jobs = 4\n')
    text = f'[server]\nqueue = "fifo"\n\n[auth]\nusers_file = "{users_file}"\n\n[users.alice]\ntoken = "alice-secret"\nrole = "admin"\n'
    config = load_config(write(tmp_path, text), env={})
    assert config.queue == "fifo" and [user.name for user in config.users] == ["alice"]
    users = Users.from_config(config)
    alice, bob = users.by_token("alice-secret"), users.by_token("bob-secret")
    assert alice.is_admin and alice.weight == 1.0
    assert (bob.role, bob.weight, bob.quota.max_queued_jobs) == ("artist", 3.0, 4)
    assert users.by_token("wrong") is None and users.get("gone").weight == 1.0
    assert not Users([], {}).enabled and Users([], {}).get("anyone").is_admin, "without auth: one local admin"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('token = "a"\ntoken_sha256 = "' + "0" * 64 + '"', "exactly one of token and token_sha256"),
        ("role = 'artist'", "exactly one of token and token_sha256"),
        ('token_sha256 = "abc"', "64 hex digits"),
        ('token = "a"\nrole = "boss"', "role 'boss' is not one of artist, admin"),
        ('token = "a"\nweight = 0', "weight 0 must be above 0"),
        ('token = "a"\nmax_queued_jobs = -1', "max_queued_jobs -1 must be 0"),
        ('token = "a"\nmax_jobs = 1', "unknown key(s) max_jobs"),
    ],
)
def test_a_bad_user_table_names_the_user_and_the_problem(tmp_path, table, problem):
    error = config_error(tmp_path, f"[users.alice]\n{table}\n")
    assert "[users.alice]" in error.message and problem in error.message


def test_users_sharing_a_token_or_a_name_are_refused(tmp_path):
    from artforge.users import Users

    config = load_config(write(tmp_path, '[auth]\ntokens = { alice = "same" }\n\n[users.bob]\ntoken = "same"\n'), env={})
    with pytest.raises(ArtForgeError, match="users 'alice' and 'bob' have the same token"):
        Users.from_config(config)
    config = load_config(write(tmp_path, '[auth]\ntokens = { alice = "one" }\n\n[users.alice]\ntoken = "two"\n'), env={})
    with pytest.raises(ArtForgeError, match="user 'alice' is given twice"):
        Users.from_config(config)


def test_an_unknown_queue_policy_is_named(tmp_path):
    assert "'lottery' is not one of fair, fifo" in config_error(tmp_path, '[server]\nqueue = "lottery"\n').message


def test_a_cluster_table_and_its_autoscaling_range(tmp_path):
    text = '[cluster]\nengine = "ray"\naddress = "10.0.0.1:6379"\nworkers = 2\ngpus_per_worker = 1\n'
    cluster = load_config(write(tmp_path, text), env={}).cluster
    assert (cluster.engine, cluster.address, cluster.initial_workers, cluster.autoscaling) == ("ray", "10.0.0.1:6379", 2, False)
    cluster = load_config(write(tmp_path, text + "min_workers = 3\nmax_workers = 8\n"), env={}).cluster
    assert (cluster.initial_workers, cluster.autoscaling) == (3, True), "the start count is raised to the minimum"
    assert load_config(None, env={}).cluster.engine == "", "no cluster: jobs run on the server's own devices"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('engine = "slurm"', "engine 'slurm' is not one of '', 'ray'"),
        ("workers = 0", "workers 0 must be 1 or more (or set max_workers to autoscale)"),
        ("min_workers = 3\nmax_workers = 2", "min_workers 3 must be 0 to max_workers (2)"),
        ("cpus_per_worker = -1", "cpus_per_worker and gpus_per_worker must be 0 or more"),
        ("nodes = 4", "unknown key(s) nodes"),
    ],
)
def test_a_bad_cluster_table_names_the_problem(tmp_path, table, problem):
    error = config_error(tmp_path, f"[cluster]\n{table}\n")
    assert "[cluster]" in error.message and problem in error.message


def test_devices_resolve_with_several_cpu_workers():
    from artforge.runtimes.devices import is_cpu, resolve_devices

    assert resolve_devices(["cpu:0", "cpu:1", "cpu:0"]) == ["cpu:0", "cpu:1"]
    assert is_cpu("cpu") and is_cpu("cpu:3") and not is_cpu("cuda:0") and not is_cpu("cpu:x")
    with pytest.raises(ArtForgeError, match="'cpu:x' is not available here; available: cpu, cpu:N"):
        resolve_devices(["cpu:x"])
