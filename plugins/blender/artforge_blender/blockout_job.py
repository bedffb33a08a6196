"""Asking the text engine for a block-out plan, with one retry: plain Python, no bpy.

`PlanAttempts` looks like one JobStream to `job_state.run_stream`: it streams the first reply,
and when that reply is not a valid plan it asks once more with the errors fed back (the first
reply in the history), hiding the first attempt's finished event so the job goes on. `result`
is the PlanResult of the last reply: valid, or the errors that stop the build. Each reply's
stream re-attaches by itself if the server goes away (artforge_client.JobStream); a reply the
restarted server writes again from the start drops what came before.

The conversation is the system prompt, the few-shot turns (`blockout_plan.SHOTS`), then the
artist's description. The retry samples differently (another seed, a higher temperature): with
the first try's settings the embedded model wrote the same reply again, error and all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import grpc

from artforge_client import ArtForgeError, Client, JobStream
from artforge_client.v1 import jobs_pb2

from .blockout_plan import (
    RETRY_TEMPERATURE,
    SUGGESTED_MAX_TOKENS,
    SUGGESTED_TEMPERATURE,
    SYSTEM_PROMPT,
    PlanResult,
    objects_for_budget,
    parse_plan,
    plan_schema,
    repair_prompt,
    shot_history,
    things_in,
)

ATTEMPTS = 2  # the first reply and one repair; with the schema the reply always parses, but
# validate_plan checks limits the schema cannot express, and a reply can still run out of tokens


class PlanAttempts:
    def __init__(
        self, client: Client, description: str, *, model: str = "", seed: int | None = None, max_tokens: int = SUGGESTED_MAX_TOKENS
    ) -> None:
        self._client = client
        self._description = description
        self._model = model
        self._seed = seed
        self._max_tokens = max_tokens
        self._schema = json.dumps(plan_schema(things_in(description), objects_for_budget(max_tokens)))
        self._stream: JobStream | None = None
        self._disconnected = False
        self.on_reconnecting: Callable[[str], None] | None = None  # handed to each reply's stream
        self.replies: list[str] = []
        self.result: PlanResult | None = None

    def __iter__(self) -> Iterator[jobs_pb2.JobEvent]:
        shots = shot_history()
        prompt, history = self._description, shots
        for attempt in range(1, ATTEMPTS + 1):
            if self._disconnected:  # cancelled between attempts: end the way a dropped call does
                raise ArtForgeError(grpc.StatusCode.CANCELLED, "cancelled")
            retry = attempt > 1
            self._stream = self._client.generate_text(
                prompt,
                model=self._model,
                history=history,
                system_prompt=SYSTEM_PROMPT,
                temperature=RETRY_TEMPERATURE if retry else SUGGESTED_TEMPERATURE,
                max_tokens=self._max_tokens,
                seed=None if self._seed is None else self._seed + attempt - 1,
                json_schema=self._schema,
            )
            self._stream.on_reconnecting = self.on_reconnecting
            pieces: list[str] = []
            for event in self._stream:
                if event.HasField("text"):
                    pieces.append(event.text.text)
                elif event.HasField("started") and event.started.attempt > 1:
                    pieces.clear()  # the server restarted and writes this reply again
                elif event.HasField("finished") and event.finished.state == jobs_pb2.JOB_STATE_SUCCEEDED:
                    reply = "".join(pieces)
                    self.replies.append(reply)
                    self.result = parse_plan(reply)
                    if not self.result.ok and attempt < ATTEMPTS:
                        history = (*shots, ("user", self._description), ("assistant", reply))
                        prompt = repair_prompt(self.result.errors)
                        break  # swallow this finished event: the job goes on with the retry
                yield event
            else:
                return

    def disconnect(self) -> None:
        self._disconnected = True
        if self._stream is not None:
            self._stream.disconnect()
