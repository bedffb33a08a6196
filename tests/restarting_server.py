"""A real server that comes back after a SIGKILL, as the same server: same port, same folder.

Tests kill it mid-job (`kill()` here, or a check inside Blender or Krita with os.kill on `pid`);
a watcher thread then starts it again with tests.conftest.start_server and the same arguments,
the way a service manager brings a crashed server back. start_server keeps the job store in the
folder (`--data-dir WORKDIR/data`), so the restarted server has the jobs of the killed one.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from artforge_client import Client
from tests.conftest import TEST_CONFIG, start_server, stop_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again; the server binds it next


class RestartingServer:
    def __init__(self, models_dir: Path, workdir: Path, *extra: str, config: str = TEST_CONFIG, env: dict | None = None) -> None:
        self._args = (models_dir, workdir, "--port", str(free_port()), *extra)
        self._options = {"config": config, "env": env}
        self.current = start_server(*self._args, **self._options)
        self.address = self.current.address
        self.restarts = 0
        self.restarted = threading.Event()  # set once a restarted server serves
        self.restart_error = ""
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="restart-server", daemon=True)
        self._watcher.start()

    @property
    def pid(self) -> int:
        return self.current.process.pid

    def client(self, **kwargs: object) -> Client:
        return Client(self.address, **kwargs)

    def log(self) -> str:
        return self.current.log()

    def kill(self) -> None:
        """SIGKILL, as a crash or an out-of-memory kill would: no shutdown code runs."""
        self.current.process.kill()
        self.current.process.wait()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            self.current.process.wait()
            if self._stopping.is_set():
                return
            try:
                self.current = start_server(*self._args, **self._options)
            except RuntimeError as error:  # the start's own sentence, with the end of its log
                self.restart_error = str(error)
                return
            self.restarts += 1
            self.restarted.set()

    def stop(self) -> None:
        self._stopping.set()
        stop_server(self.current)
        self._watcher.join(timeout=600)  # a restart under way finishes first
        stop_server(self.current)
