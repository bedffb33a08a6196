"""The docker's status line in plain Python (no `krita` import): the newest news from the artist's actions.

The docker's timer hands it every job on every tick. A job's message counts as news only when it
differs from what that job said on the last tick (a new job, a new phase, a finish), so a job
that finished long ago cannot overwrite a later refusal or another job's outcome by repeating
its "Done" ten times a second.
"""

from __future__ import annotations

from artforge_krita.jobs import Job


class StatusLine:
    def __init__(self) -> None:
        self.text = ""
        self._seen: dict[str, tuple[Job, str]] = {}  # per slot ("image", "prompt", ...): the job and its last message

    def say(self, message: str) -> None:
        """A sentence of the docker's own (a refusal, a hint): shown at once, until there is news."""
        self.text = message

    def watch(self, slot: str, job: Job | None) -> None:
        """Show `job`'s message if it is news: the slot holds another job now, or the message changed."""
        if job is None:
            return
        message = job.state.snapshot().message
        seen = self._seen.get(slot)
        if seen is not None and seen[0] is job and seen[1] == message:
            return
        self._seen[slot] = (job, message)
        if message:
            self.text = message
