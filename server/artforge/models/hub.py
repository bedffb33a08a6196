"""`artforge models pull`: image models from the Hugging Face Hub into the models folder.

Two shapes, matching what the registry loads:
- a diffusers pipeline repo (one with `model_index.json`) becomes the folder
  `models_dir/<name>/`, holding model_index.json and, per component the pipeline names, its
  configs, tokenizer files and weights: the plain `.safetensors` files (not the fp16 / ema
  variants, not .bin / .ckpt / .onnx / .msgpack, not the flax / onnx / openvino folders),
  falling back to a variant (fp16 first) or to `.bin` only for a component that has nothing
  better. Variant files are saved under the plain name, so the folder always loads with a
  plain `from_pretrained(folder)`, without `variant=`;
- one `.safetensors` checkpoint of any repo (`filename=`) becomes the loose file
  `models_dir/<name>.safetensors`, for diffusers' `from_single_file`;
- a diffusers ControlNet repo (a `config.json` of a ControlNetModel at its top) becomes the
  folder `models_dir/controlnets/<name>/`, and a transformers depth-estimation repo (DPT, Depth
  Anything) the folder `models_dir/<name>/`: their configs and one set of weights, chosen as for
  a pipeline's component.

Everything is downloaded into a hidden `models_dir/.pull-*` folder (the registry skips names
starting with ".") and moved into place only when complete, so an interrupted or failed pull
never leaves a half model the registry would pick up. The Hub is reached through
huggingface_hub (HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE apply); files already in the
user's Hugging Face cache are copied from there instead of downloaded again.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import tqdm as hf_tqdm
from huggingface_hub.utils import validate_repo_id

from artforge.errors import ArtForgeError, ErrorCode, invalid

PIPELINE_INDEX = "model_index.json"
MODEL_CONFIG = "config.json"  # a single model's (a ControlNet's) at the top of its repo
# Non-weight files a component needs: configs, tokenizer vocabularies and merges, sentencepiece models.
COMPONENT_FILE_SUFFIXES = (".json", ".txt", ".model")
# Files at the top of the repo kept next to the pipeline: the model's license terms travel with it.
ROOT_FILES = re.compile(r"(?i)^(readme\.md|licen[cs]e(\.md|\.txt)?)$")
# "diffusion_pytorch_model.fp16.safetensors", "model.fp16-00001-of-00002.safetensors": base, optional variant, optional shard.
WEIGHT_FILE = re.compile(r"^(?P<base>[^.]+?)(?:\.(?P<variant>[^.]+?))?(?P<shard>-\d{5}-of-\d{5})?\.(?P<format>safetensors|bin)$")
# "diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.fp16.json": the shard maps.
WEIGHT_INDEX = re.compile(r"^[^/]+\.(?P<format>safetensors|bin)\.index(?:\.(?P<variant>[^.]+))?\.json$")
PREFERRED_VARIANT = "fp16"  # when a component has only variant weights
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_name(repo_id: str, filename: str | None = None) -> str:
    """The model's name in the folder: `org--repo` (lowercased) for a pipeline, the file's stem for a checkpoint."""
    if filename is not None:
        return Path(filename).stem
    return repo_id.lower().replace("/", "--")


def pull(
    repo_id: str,
    models_dir: Path,
    *,
    filename: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    name: str | None = None,
    progress: bool = True,
    endpoint: str | None = None,
) -> Path:
    """Download a diffusers pipeline (or, with `filename`, one .safetensors checkpoint) into `models_dir`.

    Returns the new folder (pipeline) or file (checkpoint). `revision` is a branch, tag or commit
    (default: the repo's main branch); `token` reads private and gated repos (default: HF_TOKEN or
    the `hf auth login` token); `endpoint` overrides HF_ENDPOINT. Raises ArtForgeError:
    INVALID_ARGUMENT (a bad id, name or file, a repo that is no pipeline), NOT_FOUND (repo,
    revision or file), PERMISSION_DENIED (gated or private), FAILED_PRECONDITION (the target
    exists), UNAVAILABLE (no network, offline mode, the Hub failing) or RESOURCE_EXHAUSTED (disk full).
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise invalid("repo_id", f"{repo_id!r} is not a Hugging Face repo id like 'org/name': {error}") from None
    if filename is not None and not filename.endswith(".safetensors"):
        raise invalid("filename", f"{filename!r} is not a .safetensors file; other formats can run code when loaded")
    if name is not None:
        name = name.removesuffix(".safetensors")
    name = name or default_name(repo_id, filename)
    if not NAME.match(name):
        raise invalid("name", f"{name!r} must be letters, digits, '.', '-' or '_' (up to 128), starting with a letter or digit")
    models_dir = Path(models_dir).expanduser()
    target = models_dir / (name if filename is None else f"{name}.safetensors")
    _check_free(target)
    models_dir.mkdir(parents=True, exist_ok=True)

    api = HfApi(endpoint=endpoint, token=token, library_name="artforge")
    options: dict = dict(endpoint=api.endpoint, token=token, tqdm_class=None if progress else _NoProgress)  # for every download
    with _hub_errors(repo_id, revision, api.endpoint), _staging_folder(models_dir) as staging:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        commit = info.sha  # every file comes from this one commit, even if the branch moves meanwhile
        sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
        if filename is not None:
            if filename not in sizes:
                checkpoints = ", ".join(f for f in sizes if f.endswith(".safetensors")) or "none"
                raise ArtForgeError(
                    ErrorCode.NOT_FOUND, f"filename: {repo_id} has no file {filename!r}; its .safetensors files: {checkpoints}"
                )
            hf_hub_download(repo_id, filename, revision=commit, local_dir=staging, **options)
            _check_complete(staging, [filename], sizes, repo_id)
            _move_into_place(staging / filename, target)
            return target

        if PIPELINE_INDEX not in sizes and MODEL_CONFIG in sizes:
            config = hf_hub_download(repo_id, MODEL_CONFIG, revision=commit, local_dir=staging, **options)
            if (target := _single_model_target(_read_index(Path(config), repo_id, MODEL_CONFIG), models_dir, name)) is not None:
                _check_free(target)
                top = [f for f in sizes if "/" not in f]
                wanted = sorted({MODEL_CONFIG, *(f for f in top if ROOT_FILES.match(f)), *_component_files(top)})
                _download_folder(repo_id, commit, staging, wanted, sizes, options)
                _move_into_place(staging, target)
                return target
        if PIPELINE_INDEX not in sizes:
            checkpoints = [f for f in sizes if f.endswith(".safetensors")]
            hint = f"; to pull one checkpoint, name it as the file (one of: {', '.join(checkpoints[:10])})" if checkpoints else ""
            raise invalid("repo_id", f"{repo_id} is not a diffusers pipeline, ControlNet or depth model: it has no {PIPELINE_INDEX}{hint}")
        index_path = hf_hub_download(repo_id, PIPELINE_INDEX, revision=commit, local_dir=staging, **options)
        wanted = pipeline_files(list(sizes), _read_index(Path(index_path), repo_id))
        _download_folder(repo_id, commit, staging, wanted, sizes, options)
        _move_into_place(staging, target)
        return target


def _single_model_target(config: dict, models_dir: Path, name: str) -> Path | None:
    """Where a one-model repo goes, by its config.json: a ControlNet into controlnets/, a depth
    model into the models folder; None for anything else."""
    if config.get("_class_name") == "ControlNetModel":
        return models_dir / "controlnets" / name
    if any(str(a).endswith("ForDepthEstimation") for a in config.get("architectures") or []):
        return models_dir / name
    return None


def _download_folder(repo_id: str, commit: str, staging: Path, wanted: list[str], sizes: dict, options: dict) -> None:
    """The `wanted` files of the repo at `commit` into `staging`, complete, variant weights under plain names."""
    # Exact names as patterns: escape the glob characters a file name might hold.
    snapshot_download(repo_id, revision=commit, local_dir=staging, allow_patterns=[glob.escape(f) for f in wanted], **options)
    # snapshot_download returns a non-empty local_dir as it is when it cannot list the repo: check.
    _check_complete(staging, wanted, sizes, repo_id)
    for file in wanted:
        if (plain := plain_name(file)) != file:
            (staging / file).rename(staging / plain)
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping


def pipeline_files(repo_files: list[str], model_index: dict) -> list[str]:
    """The files of a diffusers pipeline repo that loading it needs, sorted.

    `model_index` names the components: `"unet": ["diffusers", "UNet2DConditionModel"]` means the
    folder `unet/`; entries starting with "_", plain values and `[null, null]` (an absent
    optional component such as a removed safety checker) name no folder.
    """
    wanted = [PIPELINE_INDEX] if PIPELINE_INDEX in repo_files else []
    wanted += [f for f in repo_files if ROOT_FILES.match(f)]
    for component, value in model_index.items():
        if component.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        # Only files directly in the component's folder: nested folders hold other frameworks' exports.
        inside = [f.split("/", 1)[1] for f in repo_files if f.startswith(f"{component}/") and f.count("/") == 1]
        for file in _component_files(inside):
            wanted.append(f"{component}/{file}")
    return sorted(wanted)


def plain_name(path: str) -> str:
    """A variant weight file's name without its variant tag, so the folder loads without `variant=`.

    "text_encoder/model.fp16.safetensors" -> "text_encoder/model.safetensors" and
    "unet/diffusion_pytorch_model.safetensors.index.fp16.json" -> "...safetensors.index.json". Shards
    keep their names: the index lists them by name. Any other path is returned as it is.
    """
    folder, _, name = path.rpartition("/")
    if (weight := WEIGHT_FILE.match(name)) and weight["variant"] and not weight["shard"]:
        name = f"{weight['base']}.{weight['format']}"
    elif (index := WEIGHT_INDEX.match(name)) and index["variant"]:
        name = f"{name.split('.index.', 1)[0]}.index.json"
    return f"{folder}/{name}" if folder else name


def _component_files(files: list[str]) -> list[str]:
    """Configs and one set of weights for one component: plain safetensors, else a variant's, else plain .bin."""
    weights: dict[tuple[str, str | None], list[str]] = {}  # (format, variant) -> files, shard indexes included
    configs = []
    for file in files:
        if weight := WEIGHT_FILE.match(file):
            weights.setdefault((weight["format"], weight["variant"]), []).append(file)
        elif index := WEIGHT_INDEX.match(file):
            weights.setdefault((index["format"], index["variant"]), []).append(file)
        elif file.endswith(COMPONENT_FILE_SUFFIXES):
            configs.append(file)
    for weight_format in ("safetensors", "bin"):
        variants = sorted((variant for fmt, variant in weights if fmt == weight_format), key=_variant_order)
        if variants:
            return configs + weights[(weight_format, variants[0])]
    return configs


def _variant_order(variant: str | None) -> tuple[int, str]:
    # The plain weights first, then fp16 (what diffusers repos most often ship), then the rest by name.
    return (0 if variant is None else 1 if variant == PREFERRED_VARIANT else 2, variant or "")


def _read_index(path: Path, repo_id: str, name: str = PIPELINE_INDEX) -> dict:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise invalid("repo_id", f"{repo_id}: {name} is not readable JSON ({error})") from None
    if not isinstance(index, dict):
        raise invalid("repo_id", f"{repo_id}: {name} is not a JSON object")
    return index


class _NoProgress(hf_tqdm):
    """huggingface_hub's progress bar, always off (progress=False) without touching its global switch."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _check_complete(folder: Path, files: list[str], sizes: dict[str, int | None], repo_id: str) -> None:
    """Every file is there with the size the Hub listed, or UNAVAILABLE: never move a partial model into place."""
    for file in files:
        path = folder / file
        expected = sizes.get(file)
        if not path.is_file() or (expected is not None and path.stat().st_size != expected):
            raise ArtForgeError(
                ErrorCode.UNAVAILABLE, f"repo_id: the download of {repo_id} is incomplete ({file} is missing or cut short); try again"
            )


def _check_free(target: Path) -> None:
    if target.exists():
        raise ArtForgeError(ErrorCode.FAILED_PRECONDITION, f"name: {target} already exists; remove it first or pull under another name")


@contextmanager
def _staging_folder(models_dir: Path) -> Iterator[Path]:
    """A hidden folder next to the models, removed whatever happens; moving it away is how a pull commits."""
    staging = Path(tempfile.mkdtemp(prefix=".pull-", dir=models_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(source: Path, target: Path) -> None:
    # Checked again: another pull may have finished under the same name meanwhile.
    _check_free(target)
    target.parent.mkdir(exist_ok=True)  # controlnets/ on the first ControlNet
    os.rename(source, target)  # same filesystem (both in models_dir): atomic


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, endpoint: str) -> Iterator[None]:
    """huggingface_hub's and the network's exceptions as ArtForgeErrors naming the repo."""
    try:
        yield
    except GatedRepoError:  # before RepositoryNotFoundError: it is a subclass
        raise ArtForgeError(
            ErrorCode.PERMISSION_DENIED,
            f"repo_id: {repo_id} is gated: accept its terms on its page at {endpoint}/{repo_id}, then pass a token of that account "
            "(--token or HF_TOKEN)",
        ) from None
    except RepositoryNotFoundError:
        raise ArtForgeError(
            ErrorCode.NOT_FOUND, f"repo_id: {repo_id} was not found on {endpoint} (a private repo needs a token: --token or HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise ArtForgeError(ErrorCode.NOT_FOUND, f"revision: {repo_id} has no branch, tag or commit {revision!r}") from None
    except RemoteEntryNotFoundError as error:
        raise ArtForgeError(ErrorCode.NOT_FOUND, f"filename: a file of {repo_id} is missing on {endpoint}: {error}") from None
    except OfflineModeIsEnabled:
        raise ArtForgeError(ErrorCode.UNAVAILABLE, f"repo_id: cannot pull {repo_id}: HF_HUB_OFFLINE is set; unset it to download") from None
    except (httpx2.TransportError, LocalEntryNotFoundError) as error:
        # LocalEntryNotFoundError: huggingface_hub could not reach the Hub and had nothing cached to fall back on.
        raise ArtForgeError(ErrorCode.UNAVAILABLE, f"repo_id: could not reach {endpoint} to pull {repo_id}: {_first_line(error)}") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else 0
        if status in (401, 403):
            raise ArtForgeError(
                ErrorCode.PERMISSION_DENIED, f"repo_id: {endpoint} refused access to {repo_id} ({status}); check the token"
            ) from None
        raise ArtForgeError(ErrorCode.UNAVAILABLE, f"repo_id: {endpoint} failed while pulling {repo_id}: {_first_line(error)}") from None
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise ArtForgeError(ErrorCode.RESOURCE_EXHAUSTED, f"models_dir: the disk is full while pulling {repo_id}") from None
        raise ArtForgeError(ErrorCode.UNAVAILABLE, f"repo_id: downloading {repo_id} failed: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
