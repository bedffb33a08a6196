"""The text engine: tasks and their system prompts, request checks, and streamed generation.

`prepare` checks a request and tokenizes it before it is queued, so a bad request fails at
once with a sentence naming the field; `run` generates on a device's worker thread, handing
out text as it forms, and stops at the end-of-sequence token, a stop string, max_tokens, or
the token after a cancel. A request with a JSON Schema has it compiled here too (a bad schema
fails before queueing); the shared sampler then keeps the reply to that schema, and ends it
with end-of-sequence once the JSON value is complete. max_tokens or a stop string can still cut
it short, and finish_reason says so.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from artforge.config import Limits, TaskEntry, TextServing
from artforge.engines.base import JobContext, JobResult, Usage, Work
from artforge.errors import invalid, shown
from artforge.models.gguf import hf_folder_for_gguf
from artforge.models.registry import ModelRegistry, ModelSpec
from artforge.runtimes.backend import BackendChoice, choose_backend, fallback, known_backend
from artforge.runtimes.constrained import MAX_SCHEMA_CHARS, MAX_SCHEMA_DEPTH, JsonConstraint, SchemaError, guidance_tokenizer
from artforge.runtimes.export_cache import ExportCache, ExportKey, weights_digest
from artforge.runtimes.loaded import LoadedModels
from artforge.runtimes.onnx_batch import Generation
from artforge.runtimes.onnx_text import OnnxTextModel, export_text_model, export_variant, genai_missing
from artforge.runtimes.prefix_cache import PrefixCache
from artforge.runtimes.sampling import Sampling
from artforge.runtimes.torch_text import TorchTextModel

log = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 0.7
MAX_TEMPERATURE = 2.0
DEFAULT_REPETITION_PENALTY = 1.1
MAX_REPETITION_PENALTY = 2.0
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 64
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class TextTask:
    name: str
    description: str
    system_prompt: str


BUILTIN_TASKS = {
    task.name: task
    for task in (
        TextTask(
            "chat",
            "free conversation about art, tools and ideas",
            "You are ArtForge, a helpful assistant for illustrators and 3D artists. Answer clearly and briefly.",
        ),
        TextTask(
            "scene_description",
            "prose an art director would write about a scene given as text or structured context",
            "You are an art director. The user gives you a scene, as a list of objects, lights and a camera "
            "or as a few words. Describe it in vivid, concrete prose a concept artist can paint from: the "
            "composition and where things stand, their shapes, materials and colours, the lighting and the "
            "mood. Describe only what the scene implies; do not tell a story. Two short paragraphs.",
        ),
        TextTask(
            "prompt_expand",
            "a short idea turned into a detailed image-generation prompt",
            "You write prompts for an image generator. Turn the user's short idea into one detailed prompt: "
            "subject, setting, style and medium, lighting, colour palette, composition and camera, as "
            "comma-separated phrases, under 70 words. Reply with the prompt only.",
        ),
    )
}


@dataclass
class TextRequest:
    """A text job as the API hands it over (proto fields, unchecked)."""

    prompt: str
    model: str = ""
    task: str = ""
    history: list[tuple[str, str]] = field(default_factory=list)
    system_prompt: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    repetition_penalty: float | None = None
    json_schema: str = ""


@dataclass(frozen=True)
class PreparedText:
    """A checked, tokenized text job, ready for a device."""

    model: str
    prompt_ids: list[int]
    max_tokens: int
    sampling: Sampling
    stop: tuple[str, ...]


@dataclass(frozen=True)
class Vocabulary:
    """What checking and decoding need of a model, loaded without its weights."""

    tokenizer: object
    context_length: int
    eos_ids: frozenset[int]

    @cached_property
    def guidance(self) -> object:
        """The tokenizer as llguidance sees it; built on the first constrained request only."""
        return guidance_tokenizer(self.tokenizer, self.eos_ids)


class StreamDecoder:
    """Token ids in, text deltas out: holds back partial characters and possible stop strings."""

    def __init__(self, tokenizer: object, stop: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far
        self.sent = 0  # characters of `text` already handed out
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            return ""
        self.text = text
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            return self._release(min(hits))
        hold = max((n for s in self.stop for n in range(len(s) - 1, 0, -1) if text.endswith(s[:n])), default=0)
        return self._release(len(text) - hold)

    def flush(self) -> str:
        """The held-back rest, once generation ended without a stop string."""
        return "" if self.stopped else self._release(len(self.text))

    def _release(self, upto: int) -> str:
        delta = self.text[self.sent : upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return delta

    @property
    def final_text(self) -> str:
        return self.text[: self.sent]


def _load_vocabulary(folder: Path) -> Vocabulary:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    eos: set[int] = set()
    try:
        generation_eos = GenerationConfig.from_pretrained(folder).eos_token_id
        eos.update(generation_eos if isinstance(generation_eos, list) else [generation_eos] if generation_eos is not None else [])
    except OSError:
        pass
    if tokenizer.eos_token_id is not None:
        eos.add(tokenizer.eos_token_id)
    context = getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length
    return Vocabulary(tokenizer, int(context), frozenset(eos))


@dataclass(frozen=True)
class LoadedText:
    model: TorchTextModel | OnnxTextModel
    choice: BackendChoice


class TextEngine:
    kind = "text"

    def __init__(self, registry: ModelRegistry, limits: Limits, tasks: dict[str, TaskEntry], max_loaded: int, serving: TextServing) -> None:
        self.registry = registry
        self.limits = limits
        self.serving = serving
        self.cache_dir = registry.models_dir / ".cache"
        self.tasks = dict(BUILTIN_TASKS)
        self.tasks.update({n: TextTask(n, t.description, t.system_prompt) for n, t in tasks.items()})
        self.exports = ExportCache(self.cache_dir)
        self._models: LoadedModels[LoadedText] = LoadedModels(max_loaded)
        self._vocabularies: dict[str, Vocabulary] = {}
        self._vocabulary_lock = threading.Lock()

    def work(self, request: PreparedText) -> Work:
        """Tokens to generate; the prompt runs in parallel, far cheaper per token."""
        return Work(request.max_tokens + len(request.prompt_ids) / 16)

    def batches(self, request: PreparedText, device: str) -> bool:
        """Its model is loaded on `device` on a runtime that decodes jobs together."""
        loaded = self._models.on(device, request.model)
        return loaded is not None and getattr(loaded.model, "batches", False)

    def request_limits(self) -> dict[str, int]:
        return {
            "max_stop_strings": MAX_STOP_STRINGS,
            "max_stop_chars": MAX_STOP_CHARS,
            "max_json_schema_chars": MAX_SCHEMA_CHARS,
            "max_json_schema_depth": MAX_SCHEMA_DEPTH,
        }

    # -- models ---------------------------------------------------------------------------

    def folder(self, spec: ModelSpec) -> Path:
        return hf_folder_for_gguf(spec.path, self.cache_dir) if spec.format == "gguf" else spec.path

    def vocabulary(self, spec: ModelSpec) -> Vocabulary:
        with self._vocabulary_lock:
            if spec.name not in self._vocabularies:
                self._vocabularies[spec.name] = _load_vocabulary(self.folder(spec))
            return self._vocabularies[spec.name]

    def _model(self, spec: ModelSpec, device: str, job: JobContext | None = None) -> LoadedText:
        def announce() -> None:
            log.info("loading %s on %s", spec.name, device)
            if job is not None:
                job.progress("loading_model", message=f"loading {spec.name} on {device}")

        return self._models.get(device, spec.name, lambda: self._load(spec, device, job), announce)

    def _load(self, spec: ModelSpec, device: str, job: JobContext | None) -> LoadedText:
        def export() -> Path:
            if job is not None and not self.exports.find(self._export_key(spec, device)):
                job.progress("exporting_model", message=f"exporting {spec.name} to ONNX once (a minute or so)")
            return self.export(spec.name, device)

        choice = choose_backend(spec.backend, spec.name, genai_missing(), export)
        if choice.export is not None:
            try:
                return LoadedText(OnnxTextModel(choice.export, device, self.serving), choice)
            except Exception as exc:  # a broken export must not take the model down with it
                choice = fallback(spec.backend, spec.name, exc)
        return LoadedText(TorchTextModel(self.folder(spec), device, self.serving.prefix_cache_mb << 20), choice)

    # -- ONNX exports ---------------------------------------------------------------------

    def _export_key(self, spec: ModelSpec, device: str, precision: str = "int4") -> ExportKey:
        if spec.format == "gguf":
            sources = [spec.path]
        else:
            sources = [f for f in spec.path.iterdir() if f.suffix in (".safetensors", ".bin", ".json") and f.is_file()]
        return ExportKey(spec.name, export_variant(precision, device), weights_digest(sources, self.cache_dir))

    def export(self, name: str, device: str = "cpu", force: bool = False, precision: str = "int4") -> Path:
        """The ONNX export of text model `name` for `device`, made now if missing; ArtForgeError if that fails."""
        spec = self.registry.get(name, "text")
        source = self.folder(spec)
        key = self._export_key(spec, device, precision)
        return self.exports.build(key, lambda target: export_text_model(source, target, precision, device), force)

    def backend_of(self, name: str) -> tuple[str, str]:
        """The backend serving model `name` ("" while not loaded) and why."""
        spec = self.registry.get(name, "text")
        loaded = self._models.find(spec.name)
        if known := known_backend(spec.backend, loaded.choice if loaded else None, genai_missing()):
            return known
        return "", f"{spec.backend}: ONNX Runtime GenAI, from an int4 export made on first load if there is none"

    def preload(self, model: str, device: str) -> None:
        spec = self.registry.get(model, "text")
        self.vocabulary(spec)
        self._model(spec, device)

    def loaded_models(self) -> set[str]:
        return self._models.loaded_names()

    def prefix_caches(self) -> list[tuple[str, str, PrefixCache]]:
        """(device, model, its prefix cache) of every loaded text model that keeps one."""
        return [(device, name, loaded.model.prefix) for device, name, loaded in self._models.items() if loaded.model.prefix is not None]

    def context_length(self, spec: ModelSpec) -> int:
        return self.vocabulary(spec).context_length

    # -- requests -------------------------------------------------------------------------

    def prepare(self, request: TextRequest) -> PreparedText:
        """Check every field and tokenize; raises INVALID_ARGUMENT or NOT_FOUND naming the field."""
        limits = self.limits
        task = self.tasks.get(request.task or "chat")
        if task is None:
            raise invalid("task", f"{shown(request.task)} is not a known task; known: {', '.join(sorted(self.tasks))}")
        if not request.prompt.strip():
            raise invalid("prompt", "is empty; say what you want")
        if len(request.prompt) > limits.max_prompt_chars:
            raise invalid("prompt", f"is {len(request.prompt)} characters; the limit is {limits.max_prompt_chars}")
        max_tokens = limits.default_max_tokens if request.max_tokens is None else request.max_tokens
        if not 1 <= max_tokens <= limits.max_tokens:
            raise invalid("max_tokens", f"{max_tokens} is outside 1..{limits.max_tokens}")
        temperature = DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
        if not 0 <= temperature <= MAX_TEMPERATURE:
            raise invalid("temperature", f"{temperature:g} is outside 0..{MAX_TEMPERATURE:g} (0 is greedy)")
        top_p = 1.0 if request.top_p is None else request.top_p
        if not 0 < top_p <= 1:
            raise invalid("top_p", f"{top_p:g} is outside (0, 1]")
        penalty = DEFAULT_REPETITION_PENALTY if request.repetition_penalty is None else request.repetition_penalty
        if not 1 <= penalty <= MAX_REPETITION_PENALTY:
            raise invalid("repetition_penalty", f"{penalty:g} is outside 1..{MAX_REPETITION_PENALTY:g} (1 is off)")
        if len(request.stop) > MAX_STOP_STRINGS:
            raise invalid("stop", f"{len(request.stop)} stop strings; the limit is {MAX_STOP_STRINGS}")
        for s in request.stop:
            if not 0 < len(s) <= MAX_STOP_CHARS:
                raise invalid("stop", f"each stop string needs 1..{MAX_STOP_CHARS} characters; got {len(s)}")
        for role, _ in request.history:
            if role not in ROLES:
                raise invalid("history.role", f"{shown(role)} is not one of {', '.join(ROLES)}")
        conversation = sum(len(content) for _, content in request.history) + len(request.system_prompt) + len(request.prompt)
        if conversation > limits.max_history_chars:
            limit = limits.max_history_chars
            raise invalid("history", f"history, system_prompt and prompt are {conversation} characters together; the limit is {limit}")

        spec = self.registry.get(request.model, "text")
        vocabulary = self.vocabulary(spec)
        messages = [{"role": "system", "content": request.system_prompt or task.system_prompt}]
        messages += [{"role": role, "content": content} for role, content in request.history]
        messages.append({"role": "user", "content": request.prompt})
        prompt_ids = vocabulary.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        if len(prompt_ids) + max_tokens > vocabulary.context_length:
            raise invalid(
                "prompt",
                f"{len(prompt_ids)} tokens plus max_tokens {max_tokens} exceed the {vocabulary.context_length}-token "
                f"context of {spec.name}; shorten the prompt or lower max_tokens",
            )
        constraint = None
        if request.json_schema:
            try:
                constraint = JsonConstraint.compile(request.json_schema, vocabulary.guidance)
            except SchemaError as exc:
                raise invalid("json_schema", str(exc)) from None
        seed = secrets.randbits(63) if request.seed is None else request.seed
        sampling = Sampling(temperature, top_p, seed, penalty, constraint)
        return PreparedText(spec.name, list(prompt_ids), max_tokens, sampling, tuple(request.stop))

    def run(self, request: PreparedText, job: JobContext) -> JobResult:
        spec = self.registry.get(request.model, "text")
        vocabulary = self.vocabulary(spec)
        model = self._model(spec, job.device, job).model
        job.started(spec.name, model.backend, request.sampling.seed)

        decoder = StreamDecoder(vocabulary.tokenizer, request.stop)
        tokens = 0
        first_token_at = 0.0
        finish_reason = "max_tokens"
        start = time.perf_counter()
        steps = model.generate(request.prompt_ids, request.sampling, request.max_tokens)
        try:
            while tokens < request.max_tokens:
                if job.is_cancelled():
                    finish_reason = "cancelled"
                    break
                token = next(steps)
                if not first_token_at:
                    first_token_at = time.perf_counter()
                if token in vocabulary.eos_ids:
                    finish_reason = "eos"
                    break
                tokens += 1
                if delta := decoder.push(token):
                    job.text(delta, tokens)
                if decoder.stopped:
                    finish_reason = "stop_string"
                    break
        finally:
            steps.close()
        if rest := decoder.flush():
            job.text(rest, tokens)
        elapsed = time.perf_counter() - start
        usage = Usage(
            prompt_tokens=len(request.prompt_ids),
            completion_tokens=tokens,
            time_to_first_token_seconds=(first_token_at - start) if first_token_at else 0.0,
            tokens_per_second=tokens / elapsed if elapsed > 0 else 0.0,
            device_seconds=steps.device_seconds if isinstance(steps, Generation) else 0.0,
        )
        return JobResult(text=decoder.final_text, finish_reason=finish_reason, usage=usage)
