"""Units of the text path without a server: the stream decoder (with the real SmolLM2
tokenizer), the model registry, the loaded-model cache and token sampling."""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Callable

import numpy as np
import pytest

from artforge.config import ModelEntry
from artforge.engines.text import StreamDecoder
from artforge.errors import ArtForgeError, ErrorCode
from artforge.models.embedded import SMOLLM2
from artforge.models.gguf import hf_folder_for_gguf
from artforge.models.registry import ModelRegistry
from artforge.runtimes.loaded import LoadedModels
from artforge.runtimes.sampling import Sampler, Sampling, penalize_repeats, sample_next

# -- StreamDecoder ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(models_dir):
    from transformers import AutoTokenizer

    folder = hf_folder_for_gguf(SMOLLM2.target(models_dir), models_dir / ".cache")
    return AutoTokenizer.from_pretrained(folder)


def ids_of(tokenizer, text: str) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text, "the text must survive an encode/decode round trip"
    return ids


def feed(decoder: StreamDecoder, ids: list[int]) -> list[str]:
    """Push ids one by one until the decoder stops; the deltas, flush included."""
    deltas = []
    for token in ids:
        deltas.append(decoder.push(token))
        if decoder.stopped:
            break
    deltas.append(decoder.flush())
    return deltas


SENTENCE = "The sky is blue. END of story"


@pytest.mark.parametrize("text", [SENTENCE, "  two  spaces\n\nand lines", "Hello , world . It 's fine", "café 🎨 and 日本語"])
def test_deltas_add_up_to_the_text(tokenizer, text):
    ids = ids_of(tokenizer, text)
    assert len(ids) > 4
    decoder = StreamDecoder(tokenizer, ())
    deltas = feed(decoder, ids)
    assert "".join(deltas) == text
    assert decoder.final_text == text
    assert not decoder.stopped
    assert sum(1 for d in deltas if d) >= len(ids) // 2, "text comes out as it forms, not all at the end"


def test_multibyte_characters_split_across_tokens_are_held_back(tokenizer):
    text = "café 🎨 and 日本語"
    ids = ids_of(tokenizer, text)
    # The premise: some characters span several byte-level tokens.
    assert any("\ufffd" in tokenizer.decode([token]) for token in ids)
    decoder = StreamDecoder(tokenizer, ())
    deltas = feed(decoder, ids)
    assert not any("\ufffd" in d for d in deltas), deltas
    assert "".join(deltas) == text
    assert "" in deltas[:-1], "pushes in the middle of a character hand out nothing"
    assert any("🎨" in d for d in deltas), "the emoji arrives whole, in one delta"


def test_stop_string_across_token_boundaries_is_cut_exactly(tokenizer):
    ids = ids_of(tokenizer, SENTENCE)
    stop = "END of"  # the tokens " END" and " of"
    decoder = StreamDecoder(tokenizer, (stop,))
    emitted = ""
    for token in ids:
        emitted += decoder.push(token)
        # Never a piece of the stop string on the way, even before it is complete.
        assert emitted == SENTENCE[: len(emitted)]
        assert len(emitted) <= SENTENCE.index(stop)
        if decoder.stopped:
            break
    assert decoder.stopped
    assert decoder.flush() == "", "nothing held back is released after a stop"
    assert emitted == decoder.final_text == "The sky is blue. "


@pytest.mark.parametrize("stop", ["lue. EN", "y is b", ". E", "🎨", "story"])
def test_stop_string_starting_inside_a_token(tokenizer, stop):
    text = "The sky is blue. END of story 🎨 done" if stop == "🎨" else SENTENCE
    decoder = StreamDecoder(tokenizer, (stop,))
    deltas = feed(decoder, ids_of(tokenizer, text))
    assert decoder.stopped
    assert "".join(deltas) == decoder.final_text == text[: text.index(stop)]


def test_earliest_of_several_stop_strings_wins(tokenizer):
    decoder = StreamDecoder(tokenizer, ("story", "blue"))
    deltas = feed(decoder, ids_of(tokenizer, SENTENCE))
    assert "".join(deltas) == "The sky is "


def test_flush_releases_a_possible_stop_that_never_completed(tokenizer):
    ids = ids_of(tokenizer, SENTENCE)
    decoder = StreamDecoder(tokenizer, ("story!",))
    emitted = "".join(decoder.push(token) for token in ids)
    assert not decoder.stopped
    assert emitted == "The sky is blue. END of ", "'story' could still become 'story!': held back"
    assert decoder.flush() == "story"
    assert decoder.final_text == SENTENCE
    assert decoder.flush() == "", "flushing twice releases nothing more"


def test_partial_match_that_diverges_is_released_without_flush(tokenizer):
    ids = ids_of(tokenizer, SENTENCE)
    decoder = StreamDecoder(tokenizer, ("blue. EXIT",))
    emitted = "".join(decoder.push(token) for token in ids)
    assert emitted == SENTENCE, "once 'blue. E' went on as 'blue. END' nothing needs holding"
    assert decoder.flush() == ""


# -- ModelRegistry ------------------------------------------------------------------------


@pytest.fixture
def models_folder(tmp_path):
    (tmp_path / "folder-llm").mkdir()
    (tmp_path / "folder-llm" / "weights.Q4.gguf").write_bytes(b"GGUF")
    (tmp_path / "loose.gguf").write_bytes(b"GGUF")
    (tmp_path / "hf-llm").mkdir()
    (tmp_path / "hf-llm" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    # Not models: a hidden cache, an encoder, a folder with two GGUFs, an unrelated file.
    (tmp_path / ".cache" / "hidden").mkdir(parents=True)
    (tmp_path / ".cache" / "hidden" / "x.gguf").write_bytes(b"GGUF")
    (tmp_path / ".hidden.gguf").write_bytes(b"GGUF")
    (tmp_path / "encoder").mkdir()
    (tmp_path / "encoder" / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "two" / "b.gguf").write_bytes(b"GGUF")
    (tmp_path / "notes.txt").write_text("hello")
    return tmp_path


def test_registry_scans_the_models_folder(models_folder):
    registry = ModelRegistry(models_folder, [], {"text": "loose"})
    specs = {s.name: s for s in registry.list()}
    assert set(specs) == {"folder-llm", "loose", "hf-llm"}
    assert (specs["folder-llm"].format, specs["folder-llm"].path) == ("gguf", models_folder / "folder-llm" / "weights.Q4.gguf")
    assert (specs["loose"].format, specs["loose"].path) == ("gguf", models_folder / "loose.gguf")
    assert (specs["hf-llm"].format, specs["hf-llm"].path) == ("hf", models_folder / "hf-llm")
    assert all(s.kind == "text" for s in specs.values())
    assert registry.list("image") == []


def test_registry_default_and_lookup(models_folder):
    registry = ModelRegistry(models_folder, [], {"text": "loose"})
    assert registry.default_name("text") == "loose"
    assert registry.get("", "text").name == "loose"
    assert registry.get("hf-llm", "text").format == "hf"


def test_registry_unknown_model_lists_the_choices(models_folder):
    registry = ModelRegistry(models_folder, [], {"text": "loose"})
    with pytest.raises(ArtForgeError) as error:
        registry.get("nope", "text")
    assert error.value.code is ErrorCode.NOT_FOUND
    assert error.value.message.startswith("model:")
    assert "'nope'" in error.value.message
    assert "folder-llm, hf-llm, loose" in error.value.message


def test_registry_missing_default_is_not_found(tmp_path):
    registry = ModelRegistry(tmp_path / "does-not-exist", [], {"text": "smollm2-135m-instruct"})
    assert registry.list() == []
    with pytest.raises(ArtForgeError) as error:
        registry.get("", "text")
    assert error.value.code is ErrorCode.NOT_FOUND
    assert "smollm2-135m-instruct" in error.value.message and "artforge models fetch" in error.value.message


def test_registry_config_entries(models_folder, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "big.gguf").write_bytes(b"GGUF")
    entries = [
        ModelEntry(name="mine", path=str(elsewhere / "big.gguf"), description="mine"),
        ModelEntry(name="painter", path=str(elsewhere / "big.gguf"), kind="image"),
        ModelEntry(name="ghost", path=str(elsewhere / "missing")),
    ]
    registry = ModelRegistry(models_folder, entries, {"text": "mine"})
    names = {s.name for s in registry.list()}
    assert "mine" in names and "ghost" not in names
    assert "painter" not in names, "a kind the files contradict (a GGUF declared an image model) is refused"
    assert registry.get("", "text").path == elsewhere / "big.gguf"
    assert registry.get("", "text").description == "mine"
    with pytest.raises(ArtForgeError) as error:
        registry.get("painter", "image")
    assert error.value.code is ErrorCode.NOT_FOUND


@pytest.mark.parametrize(("field", "entry"), [("kind", {"kind": "sound"}), ("backend", {"backend": "tensorflow"})])
def test_registry_config_entry_with_a_bad_kind_or_backend(models_folder, field, entry):
    with pytest.raises(ArtForgeError) as error:
        ModelRegistry(models_folder, [ModelEntry(name="odd", path=str(models_folder / "loose.gguf"), **entry)], {})
    assert error.value.code is ErrorCode.INVALID_ARGUMENT
    assert "[model.odd]" in error.value.message and field in error.value.message
    assert next(iter(entry.values())) in error.value.message


def test_registry_backend_default_applies_where_a_model_names_none(models_folder, tmp_path):
    (tmp_path / "big.gguf").write_bytes(b"GGUF")
    big = str(tmp_path / "big.gguf")
    entries = [ModelEntry(name="fast", path=big), ModelEntry(name="eager", path=big, backend="torch")]
    registry = ModelRegistry(models_folder, entries, {}, backend="onnx")
    assert registry.get("loose", "text").backend == "onnx"
    assert registry.get("fast", "text").backend == "onnx"
    assert registry.get("eager", "text").backend == "torch"
    with pytest.raises(ArtForgeError) as error:
        ModelRegistry(models_folder, [], {}, backend="tensorflow")
    assert "[models] backend" in error.value.message


def test_registry_refresh_sees_new_models(models_folder):
    registry = ModelRegistry(models_folder, [], {})
    (models_folder / "later.gguf").write_bytes(b"GGUF")
    assert "later" not in {s.name for s in registry.list()}
    registry.refresh()
    assert "later" in {s.name for s in registry.list()}


# -- LoadedModels -------------------------------------------------------------------------


class Loader:
    """Counts real loads; the loaded "model" is just a labelled object."""

    def __init__(self) -> None:
        self.loads: list[tuple[str, str]] = []
        self.announced: list[tuple[str, str]] = []

    def get(self, models: LoadedModels, device: str, name: str) -> object:
        return models.get(
            device, name, lambda: self.loads.append((device, name)) or f"{name}@{device}", lambda: self.announced.append((device, name))
        )


def test_loaded_models_are_reused():
    models, loader = LoadedModels(2), Loader()
    first = loader.get(models, "cpu", "a")
    assert loader.get(models, "cpu", "a") is first
    assert loader.loads == [("cpu", "a")]
    assert loader.announced == [("cpu", "a")], "on_load runs only when a model is really loaded"


def test_least_recently_used_is_evicted():
    models, loader = LoadedModels(2), Loader()
    loader.get(models, "cpu", "a")
    loader.get(models, "cpu", "b")
    loader.get(models, "cpu", "a")  # a is now the most recently used
    loader.get(models, "cpu", "c")  # evicts b
    assert models.loaded_names() == {"a", "c"}
    loader.get(models, "cpu", "a")
    assert loader.loads == [("cpu", "a"), ("cpu", "b"), ("cpu", "c")]
    loader.get(models, "cpu", "b")  # loads b again, evicting c (a was used after it)
    assert loader.loads[-1] == ("cpu", "b")
    assert models.loaded_names() == {"a", "b"}


def test_eviction_never_crosses_devices():
    models, loader = LoadedModels(1), Loader()
    loader.get(models, "cpu", "a")
    loader.get(models, "cuda:0", "b")
    loader.get(models, "cuda:1", "c")
    assert models.loaded_names() == {"a", "b", "c"}
    loader.get(models, "cpu", "a")
    loader.get(models, "cuda:0", "b")
    assert len(loader.loads) == 3, "each device kept its own model"
    loader.get(models, "cuda:0", "a")  # evicts b from cuda:0 only
    assert models.loaded_names() == {"a", "c"}
    loader.get(models, "cpu", "a")
    assert loader.loads[-1] == ("cuda:0", "a"), "a stayed loaded on the CPU"


def test_the_least_recently_used_model_is_gone_before_the_next_one_loads():
    """Real tiny SD pipelines (which hold reference cycles), with automatic garbage collection off:
    only LoadedModels' own eviction and collection can free one before the next one loads."""
    from artforge.runtimes.torch_diffusion import load_pipeline
    from tests.conftest import REPO
    from tests.tiny_pipelines import build_all

    paths = build_all(REPO / ".cache" / "tiny-models")
    unets: dict[str, weakref.ref] = {}
    alive_at_load: list[tuple[str, list[str]]] = []

    def loader(name: str) -> Callable[[], object]:
        def load() -> object:
            alive_at_load.append((name, sorted(other for other, unet in unets.items() if unet() is not None)))
            loaded = load_pipeline(name, paths[name], False, None, "cpu")
            unets[name] = weakref.ref(loaded.text2img.unet)
            return loaded

        return load

    models = LoadedModels(1)
    gc.disable()
    try:
        for name in ("tiny-sd15", "tiny-sdxl", "tiny-sd15"):
            models.get("cpu", name, loader(name))
    finally:
        gc.enable()
    assert alive_at_load == [("tiny-sd15", []), ("tiny-sdxl", []), ("tiny-sd15", [])]
    assert models.loaded_names() == {"tiny-sd15"}


def test_max_per_device_is_at_least_one():
    models, loader = LoadedModels(0), Loader()
    loader.get(models, "cpu", "a")
    assert models.loaded_names() == {"a"}


# -- sampling ---------------------------------------------------------------------------

LOGITS = np.array([0.5, 2.0, 1.0, 1.9, -1.0, 0.0], dtype=np.float32)  # argmax 1, with a close second (3)


def draws(sampling: Sampling, n: int = 60, logits: np.ndarray = LOGITS) -> list[int]:
    rng = np.random.default_rng(sampling.seed)
    return [sample_next(logits, sampling, rng) for _ in range(n)]


def test_temperature_zero_is_argmax():
    assert set(draws(Sampling(temperature=0, top_p=1.0, seed=1))) == {1}
    assert sample_next(np.array([0.1, -3.0, 7.0]), Sampling(0, 1.0, 0), None) == 2


def test_same_seed_same_draws_other_seed_other_draws():
    first = draws(Sampling(temperature=1.0, top_p=1.0, seed=42))
    assert first == draws(Sampling(temperature=1.0, top_p=1.0, seed=42))
    assert first != draws(Sampling(temperature=1.0, top_p=1.0, seed=43))
    assert len(set(first)) > 2, "temperature 1 samples, it does not always pick the top token"


def test_tiny_top_p_keeps_only_the_top_token():
    assert set(draws(Sampling(temperature=1.0, top_p=1.0, seed=5))) != {1}, "without top_p other tokens come up"
    assert set(draws(Sampling(temperature=1.0, top_p=1e-6, seed=5))) == {1}


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = np.log(np.array([0.05, 0.5, 0.05, 0.3, 0.1]))
    # 0.5 + 0.3 = 0.8 reaches top_p 0.75: only tokens 1 and 3 may be drawn.
    picked = set(draws(Sampling(temperature=1.0, top_p=0.75, seed=9), n=200, logits=logits))
    assert picked == {1, 3}


def test_top_p_over_a_large_vocabulary_uses_the_whole_tail_when_needed():
    # A flat distribution over 1000 tokens: top_p 0.9 needs 900 of them, more than the
    # candidates looked at first, so the draw must reach beyond them.
    flat = np.zeros(1000, dtype=np.float32)
    picked = set(draws(Sampling(temperature=1.0, top_p=0.9, seed=3), n=400, logits=flat))
    assert len(picked) > 300


def test_repetition_penalty_lowers_only_generated_tokens_whatever_their_sign():
    logits = np.array([2.0, -2.0, 1.0, -1.0])
    penalized = penalize_repeats(logits, [0, 1], 2.0)
    # Positive logits are divided, negative ones multiplied: both become less likely.
    assert penalized.tolist() == [1.0, -4.0, 1.0, -1.0]
    assert logits.tolist() == [2.0, -2.0, 1.0, -1.0], "the input is left alone"
    assert penalize_repeats(logits, [0, 1], 1.0) is logits


def test_a_sampler_penalizes_what_it_has_chosen():
    sampler = Sampler(Sampling(0, 1.0, 0, repetition_penalty=1.5))
    # Greedy picks the best, then the next best once the best has been generated.
    assert [sampler.next(np.array([3.0, 2.5])) for _ in range(2)] == [0, 1]
