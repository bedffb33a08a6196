"""Grammar-constrained decoding: a reply held, token by token, to one JSON value matching a schema.

llguidance compiles the JSON Schema to a grammar and, at every step, says which tokens may come
next; the sampler masks every other logit to -inf before choosing, so the reply always parses.
Once the value is complete only an end-of-sequence token is allowed, which ends the reply.
The tokenizer llguidance needs is built once per model (about half a second); a schema is
compiled per request, when the request is checked, and each job gets its own matcher.

What is known to break llguidance is tried when the request is checked, so that a job does not
fail on its schema: the schema's size and nesting are bounded before it is parsed (Python's
parser recurses), and its string patterns are built as llguidance builds them, lazily, once a
string starts (a pattern such as `^a{1000000}$` compiles, then fails at the first character).
Should llguidance still give up mid-reply, the job fails INVALID_ARGUMENT naming json_schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from artforge.errors import ArtForgeError, ErrorCode, shown

MAX_SCHEMA_CHARS = 16_000
# Real schemas nest a few levels (Blender's block-out plan: 9); JSON nested thousands deep
# would exhaust Python's recursion in json.loads.
MAX_SCHEMA_DEPTH = 32
# Keys whose values are data, not schemas: a "pattern" inside them is not a regex.
_DATA_KEYS = frozenset({"const", "enum", "default", "examples"})

# Compact separators and no free whitespace: a small model cannot drift into endless blank
# lines, and the reply reads like the examples in our prompts. A schema's own "x-guidance"
# options still override these.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class SchemaError(ValueError):
    """A schema that cannot constrain a reply; the message says why, for the person who wrote it."""


def _matcher(tokenizer: object, grammar: str) -> object:
    """A matcher whose errors say what failed without a dump of its state (the schema included)."""
    import llguidance

    return llguidance.LLMatcher(tokenizer, grammar, log_level=0, limits=llguidance.LLParserLimits(verbose_errors=False))


def _error(matcher: object) -> str:
    """What went wrong in a matcher ("" if nothing), without the placeholder line for the state dump."""
    return matcher.get_error().split("\n", 1)[0]


def _nesting(text: str) -> int:
    """How deep the arrays and objects of JSON text nest, counted in one pass without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:  # brackets in strings do not nest
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _patterns(schema: object) -> Iterator[str]:
    """Every regex in a schema: "pattern" values and "patternProperties" keys."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                yield node["pattern"]
            if isinstance(node.get("patternProperties"), dict):
                yield from node["patternProperties"]
            stack.extend(value for key, value in node.items() if key not in _DATA_KEYS)


def _patterns_problem(patterns: list[str], tokenizer: object) -> str:
    """Why llguidance cannot build the lexers of `patterns` ("" if it can): start a JSON string that
    may match any of them, so that all are built at once, within one bounded amount of work (one
    at a time, 300 patterns that each nearly reach the bound took 37 s here)."""
    import llguidance
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

    schema = {"anyOf": [{"type": "string", "pattern": pattern} for pattern in patterns]}
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_OPTIONS)
    except ValueError as exc:
        return str(exc)
    matcher = _matcher(tokenizer, grammar)
    bitmask = allocate_token_bitmask(1, tokenizer.vocab_size)
    # As in a job: a mask, then the opening quote (where the pattern's lexer is built), then a mask.
    fill_next_token_bitmask(matcher, bitmask)
    if matcher.consume_tokens(tokenizer.tokenize_str('"')):
        fill_next_token_bitmask(matcher, bitmask)
    return _error(matcher)


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
        if (depth := _nesting(schema_text)) > MAX_SCHEMA_DEPTH:
            raise SchemaError(f"nests {depth} levels deep; the limit is {MAX_SCHEMA_DEPTH}")
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
        if (patterns := list(_patterns(schema))) and (problem := _patterns_problem(patterns, tokenizer)):
            if len(patterns) == 1:
                raise SchemaError(f"the pattern {shown(patterns[0])} cannot be followed ({problem}); simplify it")
            raise SchemaError(f"its {len(patterns)} string patterns are more than can be followed at once ({problem}); simplify them")
        return cls(tokenizer, grammar)

    def mask(self) -> TokenMask:
        return TokenMask(self)


class TokenMask:
    """One job's place in the grammar: which tokens may come next, advanced by each chosen token."""

    def __init__(self, constraint: JsonConstraint) -> None:
        from llguidance.numpy import allocate_token_bitmask

        self.matcher = _matcher(constraint.tokenizer, constraint.grammar)
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
            # Only a limit of llguidance's can get here (the mask allows no other token): the schema's fault.
            raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"json_schema: the grammar stopped at token {token}: {_error(self.matcher)}")
