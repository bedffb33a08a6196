"""Grammar-constrained decoding without a server: schemas compiled against the real SmolLM2
tokenizer, and the shared sampler kept to them whatever the logits say."""

from __future__ import annotations

import json

import numpy as np
import pytest

from artforge.errors import ArtForgeError, ErrorCode
from artforge.models.embedded import SMOLLM2
from artforge.models.gguf import hf_folder_for_gguf
from artforge.runtimes.constrained import JSON_OPTIONS, MAX_SCHEMA_CHARS, JsonConstraint, SchemaError, guidance_tokenizer
from artforge.runtimes.sampling import Sampler, Sampling

SWATCH = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "size": {"type": "integer", "minimum": 1, "maximum": 9},
        "tags": {"type": "array", "items": {"enum": ["warm", "cool"]}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "size", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer(models_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_folder_for_gguf(SMOLLM2.target(models_dir), models_dir / ".cache"))


@pytest.fixture(scope="module")
def guidance(tokenizer):
    return guidance_tokenizer(tokenizer, frozenset({tokenizer.eos_token_id}))


def sample_reply(tokenizer, sampling: Sampling, logits_of, limit: int = 200) -> str:
    """Drive a Sampler with made-up logits until it picks end-of-sequence; the decoded reply."""
    sampler = Sampler(sampling)
    ids: list[int] = []
    for step in range(limit):
        token = sampler.next(logits_of(step))
        if token == tokenizer.eos_token_id:
            return tokenizer.decode(ids)
        ids.append(token)
    raise AssertionError(f"no end-of-sequence after {limit} tokens: {tokenizer.decode(ids)!r}")


def check_swatch(value: object) -> None:
    assert isinstance(value, dict) and set(value) == {"name", "size", "tags"}
    assert isinstance(value["name"], str) and len(value["name"]) <= 12
    assert isinstance(value["size"], int) and 1 <= value["size"] <= 9
    assert 1 <= len(value["tags"]) <= 3 and set(value["tags"]) <= {"warm", "cool"}


@pytest.mark.parametrize(("temperature", "penalty"), [(0.0, 1.0), (1.0, 1.1), (1.5, 2.0)])
def test_random_logits_still_give_json_matching_the_schema(tokenizer, guidance, temperature, penalty):
    constraint = JsonConstraint.compile(json.dumps(SWATCH), guidance)
    size = len(tokenizer)
    for seed in range(3):
        noise = np.random.default_rng(seed)
        sampling = Sampling(temperature, 0.9, seed, penalty, constraint)
        reply = sample_reply(tokenizer, sampling, lambda _, noise=noise: noise.normal(0, 5, size).astype(np.float32))
        check_swatch(json.loads(reply))


def test_the_grammar_beats_logits_that_want_something_else(tokenizer, guidance):
    # The model "wants" end-of-sequence and prose at every step; it still writes the object,
    # and a large repetition penalty on positive logits cannot unmask anything.
    constraint = JsonConstraint.compile(json.dumps(SWATCH), guidance)
    wants = np.full(len(tokenizer), -5.0, dtype=np.float32)
    wants[tokenizer.eos_token_id] = 50.0
    wants[tokenizer.encode("Sure", add_special_tokens=False)[0]] = 40.0
    reply = sample_reply(tokenizer, Sampling(0.0, 1.0, 0, 2.0, constraint), lambda _: wants)
    check_swatch(json.loads(reply))


def test_same_seed_same_constrained_reply(tokenizer, guidance):
    constraint = JsonConstraint.compile(json.dumps(SWATCH), guidance)
    logits = np.random.default_rng(5).normal(0, 3, len(tokenizer)).astype(np.float32)

    def reply(seed: int) -> str:
        return sample_reply(tokenizer, Sampling(1.0, 1.0, seed, 1.1, constraint), lambda _: logits)

    assert reply(11) == reply(11)


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "must be a JSON Schema object, not a JSON list"),
        ('{"type": "objekt"}', "cannot be compiled"),
        ('{"type": "number", "minimum": "low"}', "cannot be compiled"),
        ('{"type": "string", "description": "' + "x" * MAX_SCHEMA_CHARS + '"}', f"the limit is {MAX_SCHEMA_CHARS}"),
    ],
)
def test_bad_schemas_are_refused_with_a_reason(guidance, schema, problem):
    with pytest.raises(SchemaError, match=problem):
        JsonConstraint.compile(schema, guidance)


def test_a_grammar_that_gives_up_mid_reply_fails_the_job_as_the_schemas_fault(guidance):
    # The check refuses this pattern; built without it, llguidance gives up at the opening quote.
    import llguidance

    grammar = llguidance.LLMatcher.grammar_from_json_schema('{"type": "string", "pattern": "^a{1000000}$"}', defaults=JSON_OPTIONS)
    mask = JsonConstraint(guidance, grammar).mask()
    (quote,) = guidance.tokenize_str('"')
    assert np.isfinite(mask.apply(np.zeros(guidance.vocab_size, np.float32)))[quote]
    with pytest.raises(ArtForgeError) as error:
        mask.advance(quote)
    assert error.value.code is ErrorCode.INVALID_ARGUMENT
    assert error.value.message == f"json_schema: the grammar stopped at token {quote}: lexer error: too many expressions constructed"
