"""What every engine sees of its job, and what it hands back.

Engines run on a device's worker thread. They report through a JobContext (never touching
the queue, the event log or gRPC) and return a JobResult; the scheduler does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class JobContext(Protocol):
    device: str

    def is_cancelled(self) -> bool:
        """True once the job was cancelled or its deadline passed: stop at the next token/step."""

    def started(self, model: str, backend: str, seed: int) -> None: ...

    def progress(self, phase: str, step: int = 0, total: int = 0, message: str = "") -> None: ...

    def text(self, delta: str, completion_tokens: int) -> None: ...


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token_seconds: float = 0.0
    tokens_per_second: float = 0.0
    queued_seconds: float = 0.0
    run_seconds: float = 0.0


@dataclass
class JobResult:
    text: str = ""
    finish_reason: str = ""
    usage: Usage = field(default_factory=Usage)


class Engine(Protocol):
    kind: str

    def run(self, request: Any, job: JobContext) -> JobResult: ...

    def preload(self, model: str, device: str) -> None: ...

    def loaded_models(self) -> set[str]: ...
