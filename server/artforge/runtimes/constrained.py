"""Grammar-constrained decoding: a reply held, token by token, to one JSON value matching a schema.

llguidance compiles the JSON Schema to a grammar and, at every step, says which tokens may come
next; the sampler masks every other logit to -inf before choosing, so the reply always parses.
Once the value is complete only an end-of-sequence token is allowed, which ends the reply.
The tokenizer llguidance needs is built once per model (about half a second); a schema is
compiled per request, when the request is checked, and each job gets its own matcher.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

MAX_SCHEMA_CHARS = 16_000

# Compact separators and no free whitespace: a small model cannot drift into endless blank
# lines, and the reply reads like the examples in our prompts. A schema's own "x-guidance"
# options still override these.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class SchemaError(ValueError):
    """A schema that cannot constrain a reply; the message says why, for the person who wrote it."""


def guidance_tokenizer(hf_tokenizer: object, eos_ids: frozenset[int]) -> object:
    """llguidance's view of a Hugging Face tokenizer; expensive, so build it once per model."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(hf_tokenizer, eos_token=sorted(eos_ids))


@dataclass(frozen=True)
class JsonConstraint:
    """A compiled schema for one model's tokenizer; `mask()` gives each job its own state."""

    tokenizer: object  # llguidance.LLTokenizer
    grammar: str

    @classmethod
    def compile(cls, schema_text: str, tokenizer: object) -> JsonConstraint:
        """Raises SchemaError for text that is too long, not JSON, or not a schema llguidance can follow."""
        import llguidance

        if len(schema_text) > MAX_SCHEMA_CHARS:
            raise SchemaError(f"is {len(schema_text)} characters; the limit is {MAX_SCHEMA_CHARS}")
        try:
            schema = json.loads(schema_text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(schema, (dict, bool)):
            raise SchemaError(f"must be a JSON Schema object, not a JSON {type(schema).__name__}")
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema_text, defaults=JSON_OPTIONS)
        except ValueError as exc:
            raise SchemaError(f"cannot be compiled: {exc}") from None
        if problem := llguidance.LLMatcher.validate_grammar(grammar, tokenizer):
            raise SchemaError(f"cannot be compiled: {problem}")
        return cls(tokenizer, grammar)

    def mask(self) -> TokenMask:
        return TokenMask(self)


class TokenMask:
    """One job's place in the grammar: which tokens may come next, advanced by each chosen token."""

    def __init__(self, constraint: JsonConstraint) -> None:
        import llguidance
        from llguidance.numpy import allocate_token_bitmask

        self.matcher = llguidance.LLMatcher(constraint.tokenizer, constraint.grammar, log_level=0)
        self.bitmask = allocate_token_bitmask(1, constraint.tokenizer.vocab_size)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """`logits` with every token the grammar forbids at -inf (a copy; tokens past the tokenizer's vocabulary are forbidden)."""
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self.bitmask)
        bits = np.unpackbits(self.bitmask[0].view(np.uint8), bitorder="little")
        allowed = np.zeros(logits.size, dtype=bool)
        known = min(logits.size, bits.size)
        allowed[:known] = bits[:known].astype(bool)
        return np.where(allowed, logits, -np.inf).astype(logits.dtype, copy=False)

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"the grammar refused token {token}: {self.matcher.get_error()}")
