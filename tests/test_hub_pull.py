"""`artforge models pull` against a fake Hugging Face Hub (tests/fake_hub.py): a real HTTP server
on 127.0.0.1 driven by the real huggingface_hub, since no real Hub is reachable here."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from safetensors.numpy import load_file, save

import artforge.models.hub as hub_module
from artforge.errors import ArtForgeError, ErrorCode
from artforge.models.hub import pipeline_files, plain_name, pull
from tests.fake_hub import FakeHub

REPO = Path(__file__).resolve().parent.parent
PIPELINE = "artforge-test/Tiny-Pipeline"
SINGLE = "artforge-test/single-file"
GATED = "artforge-test/gated-pipeline"
NOT_A_PIPELINE = "artforge-test/text-model"
GOOD_TOKEN = "hf_has_access"

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def weights(seed: int) -> bytes:
    """A few bytes of real safetensors."""
    return save({"weight": np.random.default_rng(seed).standard_normal((3, 2)).astype(np.float32)})


def config(**fields) -> bytes:
    return json.dumps(fields).encode()


# What a pipeline pull must bring: every non-null component's configs and one set of weights.
PIPELINE_NEEDS = {
    "model_index.json": json.dumps(MODEL_INDEX).encode(),
    "README.md": b"---\nlicense: creativeml-openrail-m\n---\n# Tiny pipeline\n",
    "unet/config.json": config(_class_name="UNet2DConditionModel", sample_size=8),
    "unet/diffusion_pytorch_model.safetensors": weights(1),
    "vae/config.json": config(_class_name="AutoencoderKL"),
    "vae/diffusion_pytorch_model-00001-of-00002.safetensors": weights(2),
    "vae/diffusion_pytorch_model-00002-of-00002.safetensors": weights(3),
    "vae/diffusion_pytorch_model.safetensors.index.json": config(weight_map={}),
    "text_encoder/config.json": config(architectures=["CLIPTextModel"]),
    "text_encoder/model.fp16.safetensors": weights(4),  # only a variant: it is what there is (saved as model.safetensors)
    "image_encoder/config.json": config(architectures=["CLIPVisionModelWithProjection"]),
    "image_encoder/pytorch_model.bin": b"pickled weights of a component with no safetensors",
    "tokenizer/merges.txt": b"#version: 0.2\na b\n",
    "tokenizer/vocab.json": config(a=0, b=1),
    "tokenizer/special_tokens_map.json": config(),
    "tokenizer/tokenizer_config.json": config(model_max_length=77),
    "scheduler/scheduler_config.json": config(_class_name="PNDMScheduler", num_train_timesteps=1000),
}
# What it must leave on the Hub.
PIPELINE_SKIPS = {
    ".gitattributes": b"*.safetensors filter=lfs\n",
    "unet/diffusion_pytorch_model.fp16.safetensors": weights(5),
    "unet/diffusion_pytorch_model.non_ema.safetensors": weights(6),
    "unet/diffusion_pytorch_model.bin": b"pickled unet",
    "unet/diffusion_pytorch_model.msgpack": b"flax unet",
    "vae/diffusion_pytorch_model.fp16.safetensors": weights(7),
    "vae/diffusion_pytorch_model.safetensors.index.fp16.json": config(weight_map={}),
    "text_encoder/flax_model.msgpack": b"flax text encoder",
    "text_encoder/tf_model.h5": b"tensorflow text encoder",
    "image_encoder/model.onnx": b"onnx image encoder",
    "safety_checker/config.json": config(),
    "safety_checker/model.safetensors": weights(8),
    "feature_extractor/preprocessor_config.json": config(),
    "onnx/unet/model.onnx": b"onnx unet",
    "unet/openvino/openvino_model.xml": b"<xml/>",
    "unet/openvino/openvino_config.json": config(),  # a config, but of a nested export
    "v1-5-pruned.ckpt": b"pickled single-file checkpoint",
    "v1-5-pruned-emaonly.safetensors": weights(9),
    "samples/cat.png": b"\x89PNG",
}


@pytest.fixture(autouse=True)
def hf_home(tmp_path, monkeypatch) -> Path:
    """A private HF_HOME, online mode and no ambient token: nothing reads or writes ~/.cache."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub reads its environment once, at import: set the resulting constants too.
    constants = huggingface_hub.constants
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_XET_CACHE", str(home / "xet"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return home


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as fake:
        fake.add_repo(PIPELINE, {**PIPELINE_NEEDS, **PIPELINE_SKIPS})
        fake.add_repo(SINGLE, {"README.md": b"# one file", "tiny-sd.safetensors": weights(10), "tiny-sd.ckpt": b"pickle"})
        fake.add_repo(GATED, {**PIPELINE_NEEDS}, gated=True, allowed_tokens={GOOD_TOKEN})
        fake.add_repo(NOT_A_PIPELINE, {"config.json": config(architectures=["LlamaForCausalLM"]), "model.safetensors": weights(11)})
        yield fake


@pytest.fixture
def fresh(hub):
    """The hub with an empty request log and no injected failures."""
    hub.requests.clear()
    hub.fail_downloads.clear()
    hub.fail_api.clear()
    yield hub
    hub.fail_downloads.clear()
    hub.fail_api.clear()


PULLED = {path.replace("model.fp16.", "model."): content for path, content in PIPELINE_NEEDS.items()}  # as saved


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def pull_from(hub: FakeHub, repo_id: str, models_dir: Path, **kwargs) -> Path:
    return pull(repo_id, models_dir, endpoint=hub.endpoint, progress=False, **kwargs)


# -- a diffusers pipeline -----------------------------------------------------------------


def test_pipeline_pull_brings_exactly_what_the_pipeline_needs(fresh, tmp_path, hf_home):
    models = tmp_path / "models"
    folder = pull_from(fresh, PIPELINE, models)
    assert folder == models / "artforge-test--tiny-pipeline", "org--name, lowercased"
    assert sorted(p.name for p in models.iterdir()) == [folder.name], "nothing else in the models folder, hidden or not"
    assert files_under(folder) == set(PULLED)
    for path, content in PULLED.items():
        assert (folder / path).read_bytes() == content, path
    skipped_but_fetched = set(fresh.fetched()) & set(PIPELINE_SKIPS)
    assert not skipped_but_fetched, "skipped files must not even be downloaded"
    assert not hf_home.exists() or not any(hf_home.rglob("*")), "a pull writes nothing into the Hugging Face cache"


def test_pulled_pipeline_has_the_layout_diffusers_loads(fresh, tmp_path):
    folder = pull_from(fresh, PIPELINE, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    for component, value in index.items():
        if component.startswith("_") or not isinstance(value, list):
            continue
        if value[0] is None:
            assert not (folder / component).exists(), f"{component} is absent from the pipeline"
            continue
        configs = {p.name for p in (folder / component).glob("*.json")}
        assert configs & {"config.json", "scheduler_config.json", "tokenizer_config.json"}, component
    np.testing.assert_array_equal(
        load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")["weight"],
        np.random.default_rng(1).standard_normal((3, 2)).astype(np.float32),
    )


def test_pipeline_pull_under_another_name_and_revision(fresh, tmp_path):
    commit = fresh.repos[PIPELINE].sha
    folder = pull_from(fresh, PIPELINE, tmp_path, name="my-sd", revision=commit)
    assert folder == tmp_path / "my-sd"
    assert files_under(folder) == set(PULLED)
    assert all(commit in r.path for r in fresh.requests if "/resolve/" in r.path), "every file comes from the one commit"


def test_an_existing_target_is_refused_before_any_download(fresh, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, PIPELINE, tmp_path, name="taken")
    assert caught.value.code == ErrorCode.FAILED_PRECONDITION
    assert "taken" in caught.value.message
    assert fresh.requests == []


def test_a_repo_that_is_no_pipeline_is_refused_with_a_hint(fresh, tmp_path):
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, NOT_A_PIPELINE, tmp_path)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert NOT_A_PIPELINE in caught.value.message and "not a diffusers pipeline" in caught.value.message
    assert "model.safetensors" in caught.value.message, "it names the checkpoints that could be pulled instead"
    assert list(tmp_path.iterdir()) == []


# -- one checkpoint -----------------------------------------------------------------------


def test_single_file_pull_gets_that_file_only(fresh, tmp_path):
    path = pull_from(fresh, SINGLE, tmp_path, filename="tiny-sd.safetensors")
    assert path == tmp_path / "tiny-sd.safetensors" and path.is_file()
    assert path.read_bytes() == fresh.repos[SINGLE].files["tiny-sd.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-sd.safetensors"], "no folder, no leftovers"
    assert fresh.fetched() == ["tiny-sd.safetensors"]


def test_single_file_from_a_subfolder_under_a_name(fresh, tmp_path):
    path = pull_from(fresh, PIPELINE, tmp_path, filename="unet/diffusion_pytorch_model.safetensors", name="unet-only.safetensors")
    assert path == tmp_path / "unet-only.safetensors"
    assert path.read_bytes() == PIPELINE_NEEDS["unet/diffusion_pytorch_model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["unet-only.safetensors"]


def test_single_file_must_be_safetensors(fresh, tmp_path):
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, SINGLE, tmp_path, filename="tiny-sd.ckpt")
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("filename:")
    assert fresh.requests == [], "refused before asking the Hub"


def test_missing_file_names_the_files_there_are(fresh, tmp_path):
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, SINGLE, tmp_path, filename="nope.safetensors")
    assert caught.value.code == ErrorCode.NOT_FOUND
    assert "nope.safetensors" in caught.value.message and SINGLE in caught.value.message
    assert "tiny-sd.safetensors" in caught.value.message
    assert list(tmp_path.iterdir()) == []


# -- what goes wrong ----------------------------------------------------------------------


def test_unknown_repo_is_not_found_naming_it(fresh, tmp_path):
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, "artforge-test/no-such-repo", tmp_path)
    assert caught.value.code == ErrorCode.NOT_FOUND
    assert "artforge-test/no-such-repo" in caught.value.message
    assert list(tmp_path.iterdir()) == []


def test_unknown_revision_is_not_found_naming_it(fresh, tmp_path):
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, PIPELINE, tmp_path, revision="v9")
    assert caught.value.code == ErrorCode.NOT_FOUND
    assert "'v9'" in caught.value.message and PIPELINE in caught.value.message


@pytest.mark.parametrize("repo_id", ["not a repo", "a/b/c", "-leading-dash"])
def test_malformed_repo_id_is_invalid(fresh, tmp_path, repo_id):
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, repo_id, tmp_path)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("repo_id:")


@pytest.mark.parametrize("name", [".hidden", "a/b", "..", ""])
def test_bad_name_is_invalid(fresh, tmp_path, name):
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, PIPELINE, tmp_path, name=name or " ")
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("name:")


@pytest.mark.parametrize("token", [None, "hf_wrong"])
def test_gated_repo_without_access_is_permission_denied(fresh, tmp_path, token):
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, GATED, tmp_path, token=token)
    assert caught.value.code == ErrorCode.PERMISSION_DENIED
    assert GATED in caught.value.message and "token" in caught.value.message
    assert list(tmp_path.iterdir()) == []


def test_gated_repo_with_a_token_pulls_and_keeps_the_token_off_the_cdn(fresh, tmp_path):
    folder = pull_from(fresh, GATED, tmp_path, token=GOOD_TOKEN)
    assert files_under(folder) == set(PULLED)
    to_hub = [r for r in fresh.requests if r.host.startswith("127.0.0.1")]
    to_cdn = [r for r in fresh.requests if r.host.startswith("localhost")]
    assert to_cdn, "LFS files come from the CDN"
    assert all(r.authorization == f"Bearer {GOOD_TOKEN}" for r in to_hub)
    assert all(r.authorization is None for r in to_cdn)


def test_no_network_is_unavailable(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ArtForgeError) as caught:
        pull(PIPELINE, tmp_path, endpoint=f"http://127.0.0.1:{port}", progress=False)
    assert caught.value.code == ErrorCode.UNAVAILABLE
    assert PIPELINE in caught.value.message
    assert list(tmp_path.iterdir()) == []


def test_offline_mode_is_unavailable_and_says_why(fresh, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, PIPELINE, tmp_path)
    assert caught.value.code == ErrorCode.UNAVAILABLE
    assert "HF_HUB_OFFLINE" in caught.value.message
    assert fresh.requests == []


@pytest.mark.parametrize("failure", ["error", "short"])
@pytest.mark.parametrize("filename", [None, "unet/diffusion_pytorch_model.safetensors"])
def test_a_failed_download_leaves_no_model_behind(fresh, tmp_path, failure, filename):
    """A weight file fails (HTTP 500, or the body ends early) after others arrived: nothing stays, hidden or not."""
    fresh.fail_downloads["unet/diffusion_pytorch_model.safetensors"] = failure
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, PIPELINE, tmp_path, filename=filename)
    assert caught.value.code == ErrorCode.UNAVAILABLE
    assert PIPELINE in caught.value.message
    assert list(tmp_path.iterdir()) == []


def test_a_failed_listing_is_not_taken_for_a_complete_model(fresh, tmp_path):
    """snapshot_download hands back a non-empty local_dir unchecked when it cannot list the repo; pull checks."""
    fresh.fail_api["tree"] = 403
    with pytest.raises(ArtForgeError) as caught:
        pull_from(fresh, PIPELINE, tmp_path)
    assert caught.value.code in (ErrorCode.UNAVAILABLE, ErrorCode.PERMISSION_DENIED)
    assert PIPELINE in caught.value.message
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_pull_leaves_no_model_behind(fresh, tmp_path, monkeypatch):
    """Ctrl-C after every file arrived but before the pull committed: the staging folder goes too."""
    real = hub_module.snapshot_download

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        staged = [p for p in tmp_path.iterdir()]
        assert len(staged) == 1 and staged[0].name.startswith(".pull-"), "downloads go to a hidden staging folder"
        assert files_under(staged[0]) >= set(PIPELINE_NEEDS)
        raise KeyboardInterrupt

    monkeypatch.setattr(hub_module, "snapshot_download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pull_from(fresh, PIPELINE, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_progress_off_prints_nothing(fresh, tmp_path, capfd):
    pull_from(fresh, PIPELINE, tmp_path)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# -- end to end: diffusers loads what was pulled ------------------------------------------


def test_pulled_tiny_sd15_loads_in_diffusers(tmp_path):
    """A real (tiny) SD 1.5 pipeline on the fake hub, with the clutter real repos carry: diffusers loads the pull."""
    import torch
    from diffusers import StableDiffusionPipeline

    from tests.tiny_pipelines import build_all

    tiny = build_all(REPO / ".cache" / "tiny-models")
    folder, single = tiny["tiny-sd15"], tiny["tiny-sd15-single"]
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    files["text_encoder/model.fp16.safetensors"] = files.pop("text_encoder/model.safetensors")  # a variant-only component
    clutter = {
        "unet/diffusion_pytorch_model.fp16.safetensors": weights(20),
        "unet/diffusion_pytorch_model.bin": b"pickle",
        "text_encoder/pytorch_model.bin": b"pickle",  # safetensors, even a variant, beat .bin
        "text_encoder/flax_model.msgpack": b"flax",
        "tiny-sd15.safetensors": single.read_bytes(),
    }
    with FakeHub() as fake:
        fake.add_repo("artforge-test/tiny-sd15", {**files, **clutter})
        pulled = pull("artforge-test/tiny-sd15", tmp_path, endpoint=fake.endpoint, progress=False)
        checkpoint = pull("artforge-test/tiny-sd15", tmp_path, filename="tiny-sd15.safetensors", endpoint=fake.endpoint, progress=False)
    assert files_under(pulled) == {path.replace("model.fp16.", "model.") for path in files}

    original = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    from_folder = StableDiffusionPipeline.from_pretrained(pulled, local_files_only=True)
    from_file = StableDiffusionPipeline.from_single_file(str(checkpoint), config=str(pulled), local_files_only=True)
    for pipe in (from_folder, from_file):
        for component in ("unet", "vae", "text_encoder"):
            expected, got = getattr(original, component).state_dict(), getattr(pipe, component).state_dict()
            assert expected.keys() == got.keys(), component
            assert all(torch.equal(expected[k], got[k]) for k in expected), component


def test_a_controlnet_repo_lands_in_controlnets_and_the_registry_lists_it(tmp_path):
    """A real (tiny) ControlNet repo as lllyasviel's are laid out: config, safetensors, fp16 and
    .bin copies, sample images. Its config and plain safetensors arrive, under controlnets/."""
    from artforge.models.registry import ModelRegistry
    from tests.tiny_pipelines import build_all

    folder = build_all(REPO / ".cache" / "tiny-models")["tiny-sd15-controlnet"]
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    clutter = {
        "diffusion_pytorch_model.fp16.safetensors": weights(21),
        "diffusion_pytorch_model.bin": b"pickle",
        "images/input.png": b"png",
        "README.md": b"# a depth ControlNet",
    }
    with FakeHub() as fake:
        fake.add_repo("artforge-test/control_v11f1p_sd15_depth", {**files, **clutter})
        pulled = pull("artforge-test/control_v11f1p_sd15_depth", tmp_path, endpoint=fake.endpoint, progress=False, name="depth-sd15")
    assert pulled == tmp_path / "controlnets" / "depth-sd15"
    assert files_under(pulled) == {*files, "README.md"}
    assert all((pulled / name).read_bytes() == content for name, content in files.items())
    spec = ModelRegistry(tmp_path, [], {}).get("depth-sd15", "controlnet")
    assert (spec.path, spec.control_type) == (pulled, "depth"), "its type comes from its name"


def test_a_depth_model_repo_lands_in_the_models_folder_and_estimates(tmp_path):
    from artforge.models.registry import ModelRegistry
    from artforge.runtimes.depth import DepthEstimator
    from tests.tiny_pipelines import build_all

    folder = build_all(REPO / ".cache" / "tiny-models")["tiny-depth"]
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    with FakeHub() as fake:
        fake.add_repo("artforge-test/Tiny-DPT-hf", {**files, "pytorch_model.bin": b"pickle", "README.md": b"# depth"})
        pulled = pull("artforge-test/Tiny-DPT-hf", tmp_path, endpoint=fake.endpoint, progress=False)
    assert pulled == tmp_path / "artforge-test--tiny-dpt-hf" and files_under(pulled) == {*files, "README.md"}
    spec = ModelRegistry(tmp_path, [], {}).get("", "depth")
    assert spec.path == pulled
    assert DepthEstimator(spec.path, "cpu").estimate(np.ones((8, 8, 3), np.float32)).shape == (8, 8, 1)


# -- choosing the files, without a hub ----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "plain"),
    [
        ("text_encoder/model.fp16.safetensors", "text_encoder/model.safetensors"),
        ("unet/diffusion_pytorch_model.non_ema.bin", "unet/diffusion_pytorch_model.bin"),
        ("unet/diffusion_pytorch_model.safetensors.index.fp16.json", "unet/diffusion_pytorch_model.safetensors.index.json"),
        ("unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors", "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors"),
        ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors"),
        ("unet/diffusion_pytorch_model.safetensors.index.json", "unet/diffusion_pytorch_model.safetensors.index.json"),
        ("unet/config.json", "unet/config.json"),
        ("model_index.json", "model_index.json"),
    ],
)
def test_variant_files_get_plain_names(path, plain):
    assert plain_name(path) == plain


def test_pipeline_files_choice():
    repo = [
        "model_index.json",
        "LICENSE.md",
        "sd_xl_base_1.0.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
        "unet/diffusion_pytorch_model.bin",
        "text_encoder_2/config.json",
        "text_encoder_2/model.bf16.safetensors",
        "text_encoder_2/model.fp16.safetensors",
        "tokenizer_2/spiece.model",
        "tokenizer_2/tokenizer.json",
        "vae_1_0/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.bin",
        "vae/diffusion_pytorch_model.bin.index.fp16.json",
    ]
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "force_zeros_for_empty_prompt": True,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "vae": ["diffusers", "AutoencoderKL"],
        "image_encoder": [None, None],
    }
    assert pipeline_files(repo, index) == [
        "LICENSE.md",
        "model_index.json",
        "text_encoder_2/config.json",
        "text_encoder_2/model.fp16.safetensors",  # fp16 before other variants
        "tokenizer_2/spiece.model",
        "tokenizer_2/tokenizer.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",  # no plain safetensors: the fp16 set, not the .bin
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin.index.fp16.json",  # only .bin variant weights: those
        "vae/diffusion_pytorch_model.fp16.bin",
    ]
