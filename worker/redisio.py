"""Redis for factsync: the one place where the configured URL becomes a client, and glue for redis-py.

`Settings.redis_url` takes one of these forms (`parse` checks it, and says what is wrong without echoing a
password):

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]          a Redis server; USER:PASSWORD for an ACL user
    rediss://...                                        the same over TLS
    unix:///PATH/redis.sock[?db=DB]                     a local socket
    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]
                                                        a Sentinel group: the sentinels (port 26379 unless
                                                        given) and the service (the name they monitor);
                                                        USER:PASSWORD is for the Redis servers
    rediss+sentinel://...                               the same, TLS to the sentinels and the servers

Options after `?`: `db`; with TLS `ssl_ca_certs` (a CA file), `ssl_certfile` and `ssl_keyfile` (a client
certificate), `ssl_cert_reqs` (required, the default; optional; none) and `ssl_check_hostname` (true, the
default, or false); with Sentinel `sentinel_username` and `sentinel_password` (the sentinels' own ACL user
or password, when they ask for one).

A client retries a command that failed for want of a connection (the primary gone, a failover under way,
a connection the server closed) until its `retry_for` seconds have passed, asking the sentinels for the
primary again before each try: the workers ride out a failover with a long one; the listener, which must
answer hooks.php within its 2 s, takes a short one and answers 503 after it.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import EqualJitterBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConnectionError,
    ReadOnlyError,
    RedisError,
    TimeoutError,
)

T = TypeVar("T")
R = TypeVar("R", bound=Redis)

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_CERT_REQS = ("required", "optional", "none")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
_DIGITS = re.compile("[0-9]+")

# The listener answers within hooks.php's 2 s (FACTSYNC_TIMEOUT): a moment to replace a connection the
# server closed (a restart, a failover that has finished), then 503, and hooks.php spools the hook.
LISTENER_RETRY_FOR = 1.0
LISTENER_CONNECT_TIMEOUT = 1.0
# An operator's command says Redis cannot be reached rather than waiting out a failover.
COMMAND_RETRY_FOR = 5.0
# Long enough for a Lua script on a busy server; short enough that a primary cut off without a reset
# (a network partition) is given up for the one the sentinels name within a failover's time.
SOCKET_TIMEOUT = 15.0
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class RedisAddress:
    """A parsed `redis_url`: where the Redis servers (or the sentinels) are and how to talk to them."""

    scheme: str
    hosts: tuple[tuple[str, int], ...] = ()
    socket_path: str | None = None
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: dict[str, Any] | None = None
    sentinel_auth: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def sentinel(self) -> bool:
        return self.service is not None

    def secrets(self) -> list[str]:
        """The passwords this address holds, for the logs and pages to blank."""
        values = [v for v in (self.password, self.sentinel_auth.get("password")) if v]
        # As written in the URL too (%40 for @), where a log line quotes the URL.
        return values + [quote(v, safe="") for v in values if quote(v, safe="") != v]

    def describe(self) -> str:
        """The address as a person may read it: passwords as ***."""
        auth = ""
        if self.username or self.password:
            auth = quote(self.username or "", safe="") + (":***" if self.password else "") + "@"
        if self.socket_path is not None:
            return f"unix://{auth}{self.socket_path}?db={self.db}"
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        path = f"/{self.service}/{self.db}" if self.sentinel else f"/{self.db}"
        return f"{self.scheme}://{auth}{hosts}{path}"


def parse(url: str) -> RedisAddress:
    """Read a `redis_url`; a ValueError says what is wrong with it (never the password)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise ValueError(f"is not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not one factsync knows: use "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if parts.fragment or "@" in parts.path + parts.query:
        # Said without quoting the URL: the part that went astray is most likely the password.
        raise ValueError(
            "has a '#', or an '@' after the host: a password with '/', '?' or '#' must be written "
            "%2F, %3F or %23"
        )
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = _userinfo(userinfo)
    options = _options(parts.query)
    sentinel = scheme.endswith("+sentinel")
    tls = scheme.startswith("rediss")
    db = _db(options.pop("db")) if "db" in options else None

    tls_options = {name: options.pop(name) for name in TLS_OPTIONS if name in options}
    sentinel_options = {name: options.pop(name) for name in SENTINEL_OPTIONS if name in options}
    if options:
        known = ["db", *TLS_OPTIONS, *SENTINEL_OPTIONS]
        raise ValueError(f"option {sorted(options)[0]!r} is not one factsync knows ({', '.join(known)})")
    if tls_options and not tls:
        raise ValueError(f"option {sorted(tls_options)[0]!r} is for TLS: use rediss:// or rediss+sentinel://")
    if sentinel_options and not sentinel:
        raise ValueError(f"option {sorted(sentinel_options)[0]!r} is for redis+sentinel:// only")

    if scheme == "unix":
        if hostlist:
            raise ValueError("unix:// takes a path (unix:///run/redis.sock), not a host")
        if not parts.path:
            raise ValueError("unix:// needs the socket's path: unix:///run/redis.sock")
        return RedisAddress(scheme, socket_path=parts.path, db=db or 0, username=username, password=password)

    hosts = _hosts(hostlist, DEFAULT_SENTINEL_PORT if sentinel else DEFAULT_PORT)
    path = [unquote(p) for p in parts.path.split("/")[1:]]
    if path and path[-1] == "":
        path.pop()
    service = None
    if sentinel:
        if not path or not path[0]:
            raise ValueError(
                "names no service: redis+sentinel://HOST:26379,HOST:26379/SERVICE (the name in the "
                "sentinels' `sentinel monitor`)"
            )
        service, path = path[0], path[1:]
    elif len(hosts) > 1:
        raise ValueError("names several hosts: that is a Sentinel group, write redis+sentinel://")
    if len(path) > 1:
        raise ValueError(f"path {parts.path!r} has more than the database number")
    if path:
        if db is not None:
            raise ValueError("gives the database twice (in the path and as ?db=)")
        db = _db(path[0])
    return RedisAddress(
        scheme,
        hosts=hosts,
        service=service,
        db=db or 0,
        username=username,
        password=password,
        tls=_tls(tls_options) if tls else None,
        sentinel_auth={name.removeprefix("sentinel_"): value for name, value in sentinel_options.items()},
    )


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) if colon else None


def _options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in options:
            raise ValueError(f"gives option {name!r} twice")
        options[name] = value
    return options


def _db(text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"database {text!r} is not a number (0, 1, ...)")
    return int(text)


def _hosts(hostlist: str, default_port: int) -> tuple[tuple[str, int], ...]:
    if not hostlist:
        raise ValueError("names no host")
    hosts = []
    for item in hostlist.split(","):
        if item.startswith("["):  # [::1]:26379
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError(f"host {item!r} has no name")
        port = default_port
        if port_text:
            if not _DIGITS.fullmatch(port_text) or not 0 < int(port_text) < 65536:
                raise ValueError(f"port {port_text!r} of host {host} is not a port number")
            port = int(port_text)
        hosts.append((host, port))
    return tuple(hosts)


def _tls(options: dict[str, str]) -> dict[str, Any]:
    """redis-py's ssl_* keyword arguments. The host name is checked unless told not to: a certificate
    from the right CA for another host is not the server."""
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in options and not Path(options[name]).is_file():
            raise ValueError(f"option {name}: no file at {options[name]}")
    reqs = options.get("ssl_cert_reqs", "required").lower()
    if reqs not in _CERT_REQS:
        raise ValueError(f"option ssl_cert_reqs is {reqs!r}; use one of {', '.join(_CERT_REQS)}")
    check = options.get("ssl_check_hostname", "true" if reqs != "none" else "false").lower()
    if check not in _TRUE + _FALSE:
        raise ValueError(f"option ssl_check_hostname is {check!r}; use true or false")
    if check in _TRUE and reqs == "none":
        raise ValueError("ssl_check_hostname=true needs a certificate: not with ssl_cert_reqs=none")
    kwargs: dict[str, Any] = {"ssl_cert_reqs": reqs, "ssl_check_hostname": check in _TRUE}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in options:
            kwargs[name] = options[name]
    return kwargs


def describe(url: str) -> str:
    """A URL as a person may read it (passwords as ***), even one that does not parse."""
    try:
        return parse(url).describe()
    except ValueError:
        return "(a redis_url that does not parse)"


class RetryFor(Retry):
    """redis-py's Retry bounded in time rather than in tries, and at least one more try.

    redis-py nests retries (a command's around its connection's connect, a Sentinel connection's around
    asking the sentinels): a nested one ends with the one around it.
    A wrong password or a refused ACL user is not retried.
    """

    __slots__ = ("_seconds",)

    def __init__(self, seconds: float) -> None:
        # Half to all of 0.05, 0.1, 0.2, ... 1 s between tries: quick for a closed connection, and many
        # workers do not hit a new primary in step.
        super().__init__(EqualJitterBackoff(cap=1.0, base=0.05), retries=-1)
        self._seconds = seconds

    async def call_with_retry(self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]) -> T:
        self._backoff.reset()  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + self._seconds
        outer = _retry_deadline.get()
        if outer is not None:
            deadline = min(deadline, outer)
        token = _retry_deadline.set(deadline)
        try:
            failures = 0
            while True:
                try:
                    return await do()
                except self._supported_errors as error:
                    failures += 1
                    await fail(error)
                    if isinstance(error, AuthenticationError | AuthorizationError):
                        raise
                    left = deadline - time.monotonic()
                    if failures > 1 and left <= 0:
                        raise
                    await asyncio.sleep(max(0.0, min(self._backoff.compute(failures), left)))
        finally:
            _retry_deadline.reset(token)


# The deadline of the retry a nested one runs inside (in the same task): it ends no later.
_retry_deadline: ContextVar[float | None] = ContextVar("factsync_redis_retry_deadline", default=None)


class _Reconnecting:
    """A connection to one address that tries again to connect, as a Sentinel one does (asking the
    sentinels each time): the pool opens a new connection outside the command's retry, and redis-py tries
    that only once."""

    retry: Retry

    async def connect(self) -> None:
        await self.retry.call_with_retry(super().connect, lambda error: asyncio.sleep(0))  # type: ignore[misc]


class _TcpConnection(_Reconnecting, Connection):
    pass


class _TlsConnection(_Reconnecting, SSLConnection):
    pass


class _UnixConnection(_Reconnecting, UnixDomainSocketConnection):
    pass


class _SentinelPool(SentinelConnectionPool):
    """Closing the client closes its connections to the sentinels too."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # a client closing (a new primary disconnects only the idle ones)
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.connection_pool.disconnect()


@overload
def connect(url: str, *, retry_for: float, connect_timeout: float = ..., timeout: float = ...) -> Redis: ...


@overload
def connect(
    url: str,
    *,
    retry_for: float,
    connect_timeout: float = ...,
    timeout: float = ...,
    client_class: type[R],
) -> R: ...


def connect(
    url: str,
    *,
    retry_for: float,
    connect_timeout: float = CONNECT_TIMEOUT,
    timeout: float = SOCKET_TIMEOUT,
    client_class: type[Redis] = Redis,
) -> Redis:
    """A redis.asyncio client (of ``client_class``: arq's ArqRedis for the worker) for ``url``.

    It connects on first use; a command that finds no connection (or a demoted primary: READONLY) is
    tried again until ``retry_for`` seconds have passed.
    """
    address = parse(url)
    kwargs: dict[str, Any] = {
        "db": address.db,
        "username": address.username,
        "password": address.password,
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        "socket_keepalive": True,
        "retry": RetryFor(retry_for),
        # READONLY: a primary demoted to a replica; the connection is dropped and the next one asks the
        # sentinels (or the DNS name of a managed service) for the primary again.
        "retry_on_error": [ConnectionError, TimeoutError, ReadOnlyError],
    }
    if address.socket_path is not None:
        pool = ConnectionPool(connection_class=_UnixConnection, path=address.socket_path, **kwargs)
        return client_class.from_pool(pool)
    if address.service is None:
        host, port = address.hosts[0]
        connection_class: type[Connection] = _TcpConnection
        if address.tls is not None:
            connection_class = _TlsConnection
            kwargs |= address.tls
        pool = ConnectionPool(connection_class=connection_class, host=host, port=port, **kwargs)
        return client_class.from_pool(pool)
    if address.tls is not None:
        kwargs |= {"ssl": True, **address.tls}
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        **address.sentinel_auth,
    }
    if address.tls is not None:
        sentinel_kwargs |= {"ssl": True, **address.tls}
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(address.hosts), sentinel_kwargs=sentinel_kwargs, **kwargs
    )
    client: Redis = sentinels.master_for(
        address.service, redis_class=client_class, connection_pool_class=_SentinelPool
    )
    return client


async def done(result: Awaitable[T] | T) -> T:
    """Await a redis.asyncio command's result, whatever its annotation says."""
    if inspect.isawaitable(result):
        return await result
    return result


def text(value: object) -> str:
    """A Redis reply as text, whether the client decodes replies or not; None is ""."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def secrets_in(url: str | None) -> list[str]:
    """The passwords a `redis_url` holds (none when it does not parse: config refuses it first)."""
    if not url:
        return []
    try:
        return parse(url).secrets()
    except ValueError:
        return []
