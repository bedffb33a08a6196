"""Help me write this: an artist's short idea turned into an image prompt by the server's text model.

The embedded SmolLM2-135M, asked for a prompt in free text (the prompt_expand task), wanders off
the subject and invents words ("BANACA-DOREY-KIRELANDA"). Measured on the 20 ideas of
tests/test_prompt_help.py, other shapes of JSON reply failed too: free-text fields held to
lowercase words still ran words together or made them up ("yellowumbrella", "grooze") in 5 to 9
ideas of 20; a setting written from a fixed list of place words contradicted the idea in 5 of 16
(a beach for "a red fox in a meadow"); adjectives from a fixed list were random ("proud" pears).
So the model only picks: a style, a lighting, a palette and a composition, each from a curated
list (a JSON Schema enum), and no option names a time of day, weather or place, so no pick can
contradict an idea like "at dusk" or "in the desert". The prompt is assembled here from the idea,
first and as typed, so its subject is always kept, and the picks.

Plain Python over artforge_client, shared by the plugins:

    stream = prompt_help.start(client, "a cozy cabin in snow", seed=1)
    prompt = prompt_help.prompt_from_reply("a cozy cabin in snow", stream.wait().text)
"""

from __future__ import annotations

import json
from typing import Any

from artforge_client.client import Client, JobStream

STYLES = (
    "digital painting",
    "oil painting",
    "watercolor",
    "pencil sketch",
    "ink drawing",
    "photograph",
    "concept art",
    "fantasy illustration",
    "storybook illustration",
    "anime",
    "pixel art",
    "charcoal drawing",
)
LIGHTING = (
    "soft diffused light",
    "warm glowing light",
    "cool ambient light",
    "dramatic rim light",
    "backlit silhouette",
    "volumetric light rays",
    "gentle natural light",
    "high contrast shadows",
)
PALETTES = ("warm tones", "cool tones", "earthy tones", "pastel colors", "vivid colors", "muted colors", "monochrome", "rich jewel tones")
COMPOSITIONS = ("wide shot", "medium shot", "closeup", "low angle", "aerial view", "centered composition", "side view", "rule of thirds")
CHOICES = {"style": STYLES, "lighting": LIGHTING, "palette": PALETTES, "composition": COMPOSITIONS}

SYSTEM_PROMPT = (
    "You help an artist write a prompt for an image generator. The user gives a short idea. "
    "Reply with one JSON object that fits a picture of exactly that idea: the art style, the lighting, "
    "the colour palette and the composition."
)
# Few-shot turns: ideas unlike the test ideas, their picks spread over the lists so that no one
# value is the example to copy.
EXAMPLES = (
    ("a windmill at sunset", ("oil painting", "backlit silhouette", "warm tones", "wide shot")),
    ("a teapot on a kitchen table", ("photograph", "gentle natural light", "earthy tones", "closeup")),
    ("a mermaid on a rock", ("fantasy illustration", "dramatic rim light", "cool tones", "low angle")),
    ("a deer in the woods", ("digital painting", "volumetric light rays", "muted colors", "side view")),
    ("a street musician", ("watercolor", "soft diffused light", "vivid colors", "medium shot")),
)
# Every option suits every idea, so sampling costs no correctness and gives another prompt on
# another press. On the 20 ideas, 0.3 gave 16 of them "photograph" and 16 "soft diffused light";
# 0.6 spread the picks (4 to 7 values per field, none above 11 of 20).
TEMPERATURE = 0.6
# The longest reply the lists allow is 35 tokens as the tokenizer splits it; the model may split
# words differently (38 tokens measured), so leave room: a cut reply only asks to try again.
MAX_TOKENS = 64


def schema() -> dict[str, Any]:
    """The reply's JSON Schema: one pick from each list."""
    properties = {name: {"enum": list(options)} for name, options in CHOICES.items()}
    return {"type": "object", "properties": properties, "required": list(CHOICES), "additionalProperties": False}


def history() -> list[tuple[str, str]]:
    turns = []
    for idea, values in EXAMPLES:
        turns += [("user", idea), ("assistant", json.dumps(dict(zip(CHOICES, values, strict=True))))]
    return turns


def start(client: Client, idea: str, seed: int | None = None) -> JobStream:
    """Submit the idea; the finished job's text is the JSON reply for prompt_from_reply. The same
    seed gives the same reply; None lets the server pick one."""
    return client.generate_text(
        idea,
        system_prompt=SYSTEM_PROMPT,
        history=history(),
        json_schema=json.dumps(schema()),
        temperature=TEMPERATURE,
        max_tokens=MAX_TOKENS,
        seed=seed,
    )


def prompt_from_reply(idea: str, reply: str) -> str:
    """The image prompt, comma-separated: the idea as typed (spaces and end punctuation tidied),
    then the picked style, lighting, palette and composition.

    Raises ValueError with a sentence for the artist when the reply is not a complete answer.
    """
    try:
        value = json.loads(reply)
    except ValueError:
        raise ValueError("The text model's answer was cut short or is not JSON; try again.") from None
    if not isinstance(value, dict):
        raise ValueError("The text model's answer is not a JSON object; try again.")
    # The server holds the reply to the schema; checking again keeps the promise of real words
    # even from a server that did not.
    for name, options in CHOICES.items():
        if value.get(name) not in options:
            raise ValueError(f"The text model's {name} {value.get(name)!r} is not one of the offered options; try again.")
    return ", ".join([" ".join(idea.split()).rstrip(" .,;:!"), *(value[name] for name in CHOICES)])
