"""Help me write this (artforge_client.prompt_help) on the embedded SmolLM2 model, through a real server.

The check of issue 12: on 20 fixed ideas with fixed seeds, every prompt names its idea's subject
and every word of it is in a real dictionary, Debian's wamerican-large word list
(installers/setup-words.sh; installers/run-tests.sh runs it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from artforge_client import prompt_help

DICTIONARY = Path("/usr/share/dict/american-english-large")

# (idea, its subject noun as the idea writes it); none of them is a few-shot example.
IDEAS = [
    ("a cozy cabin in snow", "cabin"),
    ("a lighthouse in fog", "lighthouse"),
    ("a dragon over a harbor", "dragon"),
    ("an old fisherman mending nets", "fisherman"),
    ("a red fox in a meadow", "fox"),
    ("a castle on a cliff at dusk", "castle"),
    ("a robot reading in a library", "robot"),
    ("a girl with a yellow umbrella in the rain", "girl"),
    ("a steam train crossing a bridge", "train"),
    ("a bowl of ripe pears", "pears"),
    ("a knight resting under an oak tree", "knight"),
    ("a sleeping cat on a windowsill", "cat"),
    ("an astronaut on a purple planet", "astronaut"),
    ("a wizard's tower in the clouds", "tower"),
    ("a sunflower field at noon", "sunflower"),
    ("a whale under the ice", "whale"),
    ("a portrait of an old sailor", "sailor"),
    ("ruins of a temple in the desert", "temple"),
    ("two owls on a branch", "owls"),
    ("a bakery window at dawn", "bakery"),
]
SEEDS = [index + 1 for index in range(len(IDEAS))]
REPLY = {"style": "watercolor", "lighting": "soft diffused light", "palette": "warm tones", "composition": "wide shot"}


@pytest.fixture(scope="module")
def dictionary() -> set[str]:
    if not DICTIONARY.is_file():
        pytest.fail(f"{DICTIONARY} is missing: run installers/setup-words.sh (installers/run-tests.sh does)")
    return {word.lower() for word in DICTIONARY.read_text(encoding="utf-8").split()}


def unknown_words(text: str, dictionary: set[str]) -> list[str]:
    """Words of `text` not in the dictionary; "wizard's" counts as "wizard" when only that is listed."""
    words = re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower())
    return sorted({w for w in words if w not in dictionary and w.split("'")[0] not in dictionary})


def names(text: str, subject: str) -> bool:
    return re.search(rf"\b{re.escape(subject)}\b", text.lower()) is not None


@pytest.fixture(scope="module")
def helped(server) -> list[tuple[str, str, str, str]]:
    """(idea, subject, finish_reason, prompt or the ValueError's sentence) for each idea."""
    results = []
    with server.client() as client:
        for (idea, subject), seed in zip(IDEAS, SEEDS, strict=True):
            finished = prompt_help.start(client, idea, seed=seed).wait()
            try:
                prompt = prompt_help.prompt_from_reply(idea, finished.text)
            except ValueError as error:
                prompt = str(error)
            results.append((idea, subject, finished.finish_reason, prompt))
    return results


def test_the_ideas_themselves_are_dictionary_words(dictionary):
    # So that an unknown word in a prompt is one the model wrote, never the idea's.
    assert {idea: unknown_words(idea, dictionary) for idea, _ in IDEAS if unknown_words(idea, dictionary)} == {}
    assert all(names(idea, subject) for idea, subject in IDEAS)


def test_every_reply_is_complete_json(helped):
    assert [(idea, reason) for idea, _, reason, _ in helped if reason != "eos"] == [], "max_tokens cut a reply"


def test_every_prompt_names_its_subject(helped):
    assert [(idea, prompt) for idea, subject, _, prompt in helped if not names(prompt, subject)] == []


def test_every_word_is_in_the_dictionary(helped, dictionary):
    assert {prompt: unknown_words(prompt, dictionary) for *_, prompt in helped if unknown_words(prompt, dictionary)} == {}


def test_no_prompt_copies_a_few_shot_example(helped):
    examples = [", " + ", ".join(picks) for _, picks in prompt_help.EXAMPLES]
    assert [prompt for *_, prompt in helped if prompt.endswith(tuple(examples))] == []


def test_same_seed_same_prompt(server, helped):
    idea, _, _, first = helped[0]
    with server.client() as client:
        again = prompt_help.prompt_from_reply(idea, prompt_help.start(client, idea, seed=SEEDS[0]).wait().text)
    assert again == first


# -- prompt_from_reply without a server ------------------------------------------------------


def test_prompt_is_the_idea_then_the_picks():
    reply = json.dumps(REPLY)
    assert prompt_help.prompt_from_reply("  a cozy   cabin in snow. ", reply) == (
        "a cozy cabin in snow, watercolor, soft diffused light, warm tones, wide shot"
    )


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (json.dumps(REPLY)[:30], "cut short"),  # what max_tokens leaves
        ("", "cut short"),
        ('["watercolor"]', "not a JSON object"),
        (json.dumps({**REPLY, "style": "BANACA-DOREY"}), "style 'BANACA-DOREY' is not one of"),
        (json.dumps({k: v for k, v in REPLY.items() if k != "palette"}), "palette None is not one of"),
    ],
    ids=["cut", "empty", "array", "unknown-option", "missing-field"],
)
def test_a_bad_reply_is_a_sentence_for_the_artist(reply, says):
    with pytest.raises(ValueError, match="try again") as error:
        prompt_help.prompt_from_reply("a cozy cabin in snow", reply)
    assert says in str(error.value)


def test_the_examples_are_valid_replies_and_every_option_is_a_dictionary_word(dictionary):
    turns = prompt_help.history()
    assert [role for role, _ in turns] == ["user", "assistant"] * len(prompt_help.EXAMPLES)
    for (_, idea), (_, reply) in zip(turns[::2], turns[1::2], strict=True):
        prompt_help.prompt_from_reply(idea, reply)
    options = [option for options in prompt_help.CHOICES.values() for option in options]
    assert {option: unknown_words(option, dictionary) for option in options if unknown_words(option, dictionary)} == {}
