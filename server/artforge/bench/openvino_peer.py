"""OpenVINO GenAI, for `artforge bench text --compare openvino`: its continuous batching on the
same model, int4 weights like ArtForge's export, the same threads and prompts (see
artforge.bench.peers and artforge.bench.openvino_server).

Not installed with ArtForge: it pins other transformers and torch releases. Make it a venv of
its own and pass its Python with --openvino-python:

    python -m venv .venv-openvino
    .venv-openvino/bin/pip install openvino-genai optimum-intel nncf

The bench exports the model once with that venv's optimum-cli (int4, asymmetric, groups of 32
as the GGUF's Q4_1 blocks) into the models folder's cache, from the Hugging Face folder that
ArtForge's PyTorch path converts the GGUF to.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from artforge.bench import peers
from artforge.errors import ArtForgeError, ErrorCode
from artforge.models.gguf import hf_folder_for_gguf
from artforge.runtimes.onnx import cpu_threads

SERVER = Path(__file__).with_name("openvino_server.py")
EXPORT_TIMEOUT = 1800
# int4 weights as the peers use them: asymmetric in groups of 32 (GGUF Q4_1); every layer int4.
WEIGHTS = ["--weight-format", "int4", "--group-size", "32", "--ratio", "1.0"]


def find_python(path: str) -> str:
    """A Python that imports openvino_genai and optimum-intel; a clean error if `path` is not one."""
    found = shutil.which(path) if path else None
    if not found:
        raise ArtForgeError(
            ErrorCode.FAILED_PRECONDITION,
            "--compare openvino needs --openvino-python: a venv's python with openvino-genai, optimum-intel and nncf "
            "(python -m venv .venv-openvino && .venv-openvino/bin/pip install openvino-genai optimum-intel nncf)",
        )
    check = subprocess.run([found, "-c", "import openvino_genai, optimum.intel"], capture_output=True, text=True)
    if check.returncode != 0:
        raise ArtForgeError(
            ErrorCode.FAILED_PRECONDITION,
            f"--openvino-python {path} cannot import openvino_genai and optimum.intel: {(check.stderr.strip().splitlines() or [''])[-1]}",
        )
    return found


def exported(python: str, gguf: Path, cache_dir: Path) -> Path:
    """The OpenVINO folder of `gguf`, exported once into `cache_dir`."""
    source = hf_folder_for_gguf(gguf, cache_dir)
    target = cache_dir / "openvino" / source.name
    if (target / "openvino_model.xml").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        command = [python, "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", str(source)]
        command += ["--task", "text-generation-with-past", *WEIGHTS, tmp]
        done = subprocess.run(command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"the OpenVINO export failed: {done.stderr.strip()[-2000:]}")
        Path(tmp).rename(target)
    return target


@contextmanager
def openvino_server(python: str, folder: Path, slots: int) -> Iterator[str]:
    """OpenVINO GenAI's server on a free port with `slots` sequences at once; yields its base URL."""

    def command(port: int) -> list[str]:
        return [python, str(SERVER), "--model", str(folder), "--port", str(port), "--threads", str(cpu_threads()), "--slots", str(slots)]

    with peers.serving("OpenVINO GenAI", command) as url:
        yield url
