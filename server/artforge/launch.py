"""Start `artforge serve` as a child process on a free port and wait until it serves.

Used by `artforge bench` (which measures a real server, gRPC included) and by the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from artforge_client import Client

READY_PREFIX = "artforge: serving on "


class ServerProcess:
    def __init__(self, *serve_args: str, log_path: Path, env: dict[str, str] | None = None, start_timeout: float = 300) -> None:
        """Run `artforge serve --port 0 SERVE_ARGS...`, logging to `log_path`; wait for ready.

        Its job store is the `data` folder beside the log (never the user's own server's), so a
        server started again with the same log path resumes the jobs of the one before."""
        self.log_path = log_path
        self.data_dir = log_path.parent / "data"
        command = [sys.executable, "-m", "artforge", "serve", "--port", "0", "--data-dir", str(self.data_dir), *serve_args]
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
            )
        ready: list[str] = []

        def read_ready_line() -> None:
            for line in self.process.stdout:
                if line.startswith(READY_PREFIX):
                    ready.append(line[len(READY_PREFIX) :].strip())
                    return

        reader = threading.Thread(target=read_ready_line, daemon=True)
        reader.start()
        reader.join(start_timeout)
        if not ready:
            self.process.kill()
            raise RuntimeError(f"the server did not start; the end of its log:\n{self.log()[-4000:]}")
        self.address = ready[0]

    def client(self, **kwargs: object) -> Client:
        return Client(self.address, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
