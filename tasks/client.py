"""The async HostFact/WeFact API v2 client: one POST per call, the JSON envelope, and failure classification.

It never retries: it raises a ``tasks.errors`` class and the runtime's single retry loop decides what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self
from urllib.parse import urlencode

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from tasks.errors import ApiError, BannedError, PermanentError, RateLimited, TransientError
from tasks.model import Administration
from tasks.protocol import Dialect, encode_form
from tasks.redact import Redactor

logger = logging.getLogger(__name__)

Row = dict[str, Any]
Rows = list[Row]

# How much of a response body an exchange keeps: enough to read an HTML error page's title or an envelope.
EXCERPT_CHARS: Final = 2048

# Body fields the client owns; a caller passing one would either leak or override the credentials.
_RESERVED: Final = frozenset({"api_key", "controller", "action"})


# The singular `code` parameter of `show` per controller; HostFact falls back to the lowercase key otherwise.
_CODE_PARAMS: Final = {
    "invoice": "InvoiceCode",
    "creditinvoice": "CreditInvoiceCode",
    "debtor": "DebtorCode",
    "creditor": "CreditorCode",
    "product": "ProductCode",
    "pricequote": "PriceQuoteCode",
}


@dataclass(frozen=True, slots=True)
class DialectTraits:
    """What the transport has to know about a product; ledger adapters keep the field-level differences."""

    # WeFact sends API-RateLimit-* headers on every response; self-hosted HostFact has no rate limiting.
    rate_limit_headers: bool
    # WeFact answers a rate-limit breach with HTTP 403, an IP firewall ban; retrying only prolongs it.
    bans_with_403: bool
    # The language asked for in the URL's query: HostFact answers in Dutch unless ``?language=en_EN``
    # (Pro/config.php), and its en_EN texts are public (Pro/includes/language/en_EN/en_EN.php). WeFact
    # documents no such parameter; nothing factsync decides hangs on a WeFact message.
    language: str | None = None
    # Error texts (in ``language``) that mean "the same call later will most likely pass": HostFact's API
    # lock, held by another write for 5 s (hostfactapi.class.php::checkLogin, en_EN
    # "api too many concurrent calls"). Matched at the start of a message.
    transient_messages: tuple[str, ...] = ()


DIALECTS: Final[Mapping[Dialect, DialectTraits]] = {
    "hostfact": DialectTraits(
        rate_limit_headers=False,
        bans_with_403=False,
        language="en_EN",
        transient_messages=("API has concurrent calls, but the queue was not able to fix them",),
    ),
    "wefact": DialectTraits(rate_limit_headers=True, bans_with_403=True),
}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """WeFact's ``API-RateLimit-*`` headers from one response; resets are unix timestamps in seconds."""

    remaining_minute: int | None = None
    remaining_hour: int | None = None
    reset_minute: float | None = None
    reset_hour: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit | None:
        """Read the four headers; ``None`` when the response carried none of them."""
        limit = cls(
            remaining_minute=_header_int(headers, "API-RateLimit-Remaining-Minute"),
            remaining_hour=_header_int(headers, "API-RateLimit-Remaining-Hour"),
            reset_minute=_header_float(headers, "API-RateLimit-Reset-Minute"),
            reset_hour=_header_float(headers, "API-RateLimit-Reset-Hour"),
        )
        return None if limit == cls() else limit


def _header_float(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    return _as_float(raw.strip())


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = _header_float(headers, name)
    return None if value is None else int(value)


ApiOutcome = Literal["success", "error", "transient", "rate_limited", "banned"]


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One call that was sent, for an observer (metrics): names from the configuration and the code only."""

    administration: str
    controller: str
    action: str
    outcome: ApiOutcome
    # The HTTP exchange only: time spent waiting for the throttle is not in it.
    elapsed: float
    http_status: int | None


def _outcome(exc: ApiError | None) -> ApiOutcome:
    if exc is None:
        return "success"
    if isinstance(exc, BannedError):
        return "banned"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, TransientError):
        return "transient"
    return "error"


class Throttle(Protocol):
    """The runtime's shared per-administration rate limiter (Redis-backed), consulted around every request."""

    async def acquire(self, administration: str) -> None:
        """Wait for (or refuse with ``RateLimited``) one request slot for the administration."""

    def observe(self, administration: str, rate_limit: RateLimit) -> None:
        """Learn the budget the server reports, so the shared limiter can slow down before a 403 ban."""


def api_session(**options: Any) -> aiohttp.ClientSession:
    """The HTTP session for API clients: it keeps no cookies. HostFact starts a PHP session on every API call
    (Pro/config.php); sent back, its cookie would serialise concurrent calls on PHP's session lock and carry
    session caches (tax rates, language) from one call into the next."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), **options)


class ApiClient:
    """Talks to one administration. Share one ``aiohttp.ClientSession`` between clients where possible."""

    def __init__(
        self,
        admin: Administration,
        *,
        session: aiohttp.ClientSession | None = None,
        throttle: Throttle | None = None,
        on_call: Callable[[ApiCall], None] | None = None,
    ) -> None:
        self.admin = admin
        # Told about every call sent, whatever its outcome: how the runtime counts calls without this
        # package knowing about metrics.
        self.on_call = on_call
        self.traits = DIALECTS[admin.dialect]
        self.rate_limit: RateLimit | None = None
        self.last_exchange: dict[str, Any] | None = None
        self._session = session
        self._owns_session = session is None
        self._throttle = throttle
        self._redactor = Redactor([admin.api_key.get_secret_value()])
        url = URL(str(admin.api_url))
        self._url = url if self.traits.language is None else url.update_query(language=self.traits.language)
        # Per request rather than per session, so a shared session still honours this administration's limits.
        self._timeout = aiohttp.ClientTimeout(connect=admin.connect_timeout, total=admin.total_timeout)

    @property
    def name(self) -> str:
        return self.admin.name

    @property
    def dialect(self) -> Dialect:
        return self.admin.dialect

    def __repr__(self) -> str:
        return f"ApiClient(name={self.admin.name!r}, dialect={self.admin.dialect!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it; a session passed in belongs to the caller."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, controller: str, action: str, params: Mapping[str, Any] | None = None) -> Row:
        """POST one call; return the envelope of a ``success``, raise a ``tasks.errors`` class otherwise."""
        params = dict(params or {})
        clash = _RESERVED.intersection(params)
        if clash:
            raise ValueError(f"params may not set {sorted(clash)}: the client fills them in")

        if self._throttle is not None:
            await self._throttle.acquire(self.admin.name)
        session = self._get_session()
        exchange = self._exchange(controller, action, params)
        started = time.monotonic()
        try:
            try:
                async with session.post(
                    self._url,
                    # Built inline, so no frame of a traceback (nor a crash reporter's locals) holds the key.
                    data=self._form_body(controller, action, params),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                    timeout=self._timeout,
                    # A redirect would turn the POST into a bodyless GET: the api_url is wrong, say so.
                    allow_redirects=False,
                ) as response:
                    raw = await self._read_capped(response)
                    status, headers = response.status, response.headers
            except TimeoutError as exc:
                if isinstance(exc, aiohttp.ConnectionTimeoutError):
                    detail = f"no connection within {self.admin.connect_timeout:g} s"
                else:
                    detail = f"no answer within {self.admin.total_timeout:g} s"
                exchange["error"] = detail
                raise TransientError(self._message(controller, action, detail), exchange=exchange) from None
            except (aiohttp.ClientError, OSError) as exc:
                # The request may or may not have reached the server; callers re-read state before writing.
                detail = self._scrub(f"{type(exc).__name__}: {exc}")
                exchange["error"] = detail
                # "from None": the aiohttp frames below hold the request body in their locals.
                raise TransientError(self._message(controller, action, detail), exchange=exchange) from None
            finally:
                exchange["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
            exchange["http_status"] = status
            exchange["response"] = self._excerpt(raw)
            self._observe(headers)
            envelope = self._classify(controller, action, status, headers, raw, exchange)
        except ApiError as exc:
            self.last_exchange = exchange
            self._tell(controller, action, exchange, exc)
            logger.debug(
                "api %s %s on %s failed: %s http=%s in %s ms",
                controller,
                action,
                self.admin.name,
                type(exc).__name__,
                exchange["http_status"],
                exchange["elapsed_ms"],
                extra=_log_extra(exchange, type(exc).__name__),
            )
            raise
        self.last_exchange = exchange
        self._tell(controller, action, exchange, None)
        logger.debug(
            "api %s %s on %s: success http=%s in %s ms",
            controller,
            action,
            self.admin.name,
            exchange["http_status"],
            exchange["elapsed_ms"],
            extra=_log_extra(exchange, "success"),
        )
        return envelope

    async def show(
        self, controller: str, *, identifier: int | str | None = None, code: str | None = None
    ) -> Row:
        """Return the ``controller`` object of a ``show`` by Identifier (which wins) or by its exact code."""
        if identifier is None and code is None:
            raise ValueError("show needs an identifier or a code")
        params: dict[str, Any] = {}
        if identifier is not None:
            params["Identifier"] = identifier
        if code is not None:
            params[_CODE_PARAMS.get(controller, f"{controller.capitalize()}Code")] = code
        envelope = await self.call(controller, "show", params)
        item = envelope.get(controller)
        if not isinstance(item, dict):
            raise TransientError(
                self._message(controller, "show", f"success envelope without a {controller!r} object"),
                exchange=self.last_exchange,
            )
        return item

    async def list(
        self, controller: str, *, page_size: int = 1000, concurrency: int = 1, **filters: Any
    ) -> Rows:
        """Page through ``list`` with offset/limit and return every row (an empty list omits the plural key).

        Offset paging over a live table can repeat rows when others insert meanwhile; rows are de-duplicated
        by Identifier. Filters are the API's own lowercase names (``status``, ``searchat``, ``modified``...).
        ``concurrency``: once the first page told ``totalresults``, read up to this many further pages at
        once (each still through the throttle). Offsets stay multiples of ``page_size``: HostFact turns the
        offset into a page number, offset / limit + 1 (invoice_api_controller::list_api_action).
        """
        if page_size <= 0 or concurrency <= 0:
            raise ValueError("page_size and concurrency must be positive")
        rows: Rows = []
        seen: set[str] = set()

        def keep(page: Rows) -> None:
            for row in page:
                ident = row.get("Identifier") if isinstance(row, dict) else None
                if ident is not None:
                    if str(ident) in seen:
                        continue
                    seen.add(str(ident))
                rows.append(row)

        page, total = await self._page(controller, filters, 0, page_size)
        keep(page)
        offset = len(page)
        if concurrency > 1 and total is not None and len(page) == page_size and total > offset:
            offsets = list(range(page_size, total, page_size))
            gate = asyncio.Semaphore(concurrency)

            async def read(at: int) -> tuple[Rows, int | None]:
                async with gate:
                    return await self._page(controller, filters, at, page_size)

            pages = await asyncio.gather(*(read(at) for at in offsets))
            for got, _ in pages:
                keep(got)
            last, last_total = pages[-1]
            offset = offsets[-1] + len(last)
            page, total = last, last_total if last_total is not None else total
        # Sequentially from here: every page when not concurrent, and rows added while the pages were read.
        while not (len(page) < page_size or (total is not None and offset >= total)):
            page, total = await self._page(controller, filters, offset, page_size)
            keep(page)
            offset += len(page)
        return rows

    async def _page(
        self, controller: str, filters: Mapping[str, Any], offset: int, page_size: int
    ) -> tuple[Rows, int | None]:
        """One page of ``list`` and the ``totalresults`` it announced."""
        plural = f"{controller}s"
        envelope = await self.call(controller, "list", {**filters, "offset": offset, "limit": page_size})
        page = envelope.get(plural, [])
        total = _as_int(envelope.get("totalresults"))
        if not isinstance(page, list):
            raise TransientError(
                self._message(controller, "list", f"{plural!r} is not a list"),
                exchange=self.last_exchange,
            )
        # More rows announced than received, yet none under the key: the plural is not `controller + "s"`.
        if not page and total is not None and offset < total:
            raise PermanentError(
                self._message(controller, "list", f"totalresults {total} but no {plural!r} rows"),
                exchange=self.last_exchange,
            )
        return page, total

    # -- internals -----------------------------------------------------------------------------------------

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, unless it is larger than any answer of this API should be (a runaway or hostile server
        would otherwise cost the worker its memory)."""
        limit = self.admin.max_answer_bytes
        if response.content_length is not None and response.content_length > limit:
            raise aiohttp.ClientPayloadError(f"answer of {response.content_length} bytes, over {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise aiohttp.ClientPayloadError(f"answer over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _tell(self, controller: str, action: str, exchange: Mapping[str, Any], exc: ApiError | None) -> None:
        if self.on_call is None:
            return
        call = ApiCall(
            administration=self.admin.name,
            controller=controller,
            action=action,
            outcome=_outcome(exc),
            elapsed=(exchange["elapsed_ms"] or 0.0) / 1000,
            http_status=exchange["http_status"],
        )
        try:
            self.on_call(call)
        except Exception:
            # An observer is bookkeeping: its failure must not turn a call that worked into one that failed.
            logger.exception("the on_call observer of %s failed", self.admin.name)

    def _form_body(self, controller: str, action: str, params: Mapping[str, Any]) -> str:
        pairs = encode_form({**params, "controller": controller, "action": action})
        pairs.append(("api_key", self.admin.api_key.get_secret_value()))
        return urlencode(pairs)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("the session passed to ApiClient is closed")
            self._session = api_session(timeout=self._timeout)
        return self._session

    def _observe(self, headers: CIMultiDictProxy[str]) -> None:
        if not self.traits.rate_limit_headers:
            return
        limit = RateLimit.from_headers(headers)
        if limit is None:
            return
        self.rate_limit = limit
        if self._throttle is not None:
            self._throttle.observe(self.admin.name, limit)

    def _classify(
        self,
        controller: str,
        action: str,
        status: int,
        headers: CIMultiDictProxy[str],
        raw: bytes,
        exchange: dict[str, Any],
    ) -> Row:
        def fail(cls: type[ApiError], detail: str) -> ApiError:
            exchange["error"] = self._scrub(detail)
            return cls(self._message(controller, action, detail), exchange=exchange)

        if status == 403 and self.traits.bans_with_403:
            raise fail(BannedError, "HTTP 403: the server's firewall bans this IP; pause all calls to it")
        if status == 429:
            # Neither product sends 429 (WeFact bans with 403), but a proxy in front of either may.
            exchange["error"] = "HTTP 429"
            raise RateLimited(
                self._message(controller, action, "HTTP 429 Too Many Requests"),
                retry_after=self._retry_after(headers),
                exchange=exchange,
            )
        if status >= 500 or status == 408:
            raise fail(TransientError, f"HTTP {status}")
        if 300 <= status < 400:
            location = headers.get("Location", "?")
            raise fail(PermanentError, f"HTTP {status} redirect to {location}: fix the api_url")
        if status >= 400 or status < 200:
            raise fail(PermanentError, f"HTTP {status}")

        # HostFact answers 200 with an HTML error page or nothing at all when PHP dies mid-request.
        try:
            envelope = json.loads(raw)
        except ValueError:
            kind = "an empty body" if not raw.strip() else "a body that is not JSON"
            raise fail(TransientError, f"HTTP {status} with {kind}") from None
        if not isinstance(envelope, dict) or envelope.get("status") not in ("success", "error"):
            raise fail(TransientError, f"HTTP {status} with JSON that is not the API envelope")

        if envelope["status"] == "success":
            exchange["error"] = None
            return envelope

        errors = _messages(envelope.get("errors")) or ["status error without a message"]
        errors = [self._scrub(message) for message in errors]
        joined = "; ".join(errors)
        exchange["error"] = joined
        if any(message.startswith(self.traits.transient_messages) for message in errors):
            raise TransientError(self._message(controller, action, joined), exchange=exchange)
        raise PermanentError(self._message(controller, action, joined), errors=errors, exchange=exchange)

    def _retry_after(self, headers: CIMultiDictProxy[str]) -> float:
        seconds = _as_float(headers.get("Retry-After"))
        if seconds is not None:
            return max(0.0, seconds)
        reset = self.rate_limit.reset_minute if self.rate_limit is not None else None
        return 60.0 if reset is None else max(0.0, reset - time.time())

    def _exchange(self, controller: str, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "administration": self.admin.name,
            "dialect": self.admin.dialect,
            "controller": controller,
            "action": action,
            "params": self._redact(params),
            "http_status": None,
            "response": "",
            "elapsed_ms": None,
            "error": None,
        }

    def _excerpt(self, raw: bytes) -> str:
        # Scrub before cutting, so a key straddling the cut cannot leave a recognisable prefix behind.
        head = raw[: 4 * (EXCERPT_CHARS + len(self.admin.api_key.get_secret_value()))]
        return self._scrub(head.decode("utf-8", "replace"))[:EXCERPT_CHARS]

    def _message(self, controller: str, action: str, detail: str) -> str:
        return self._scrub(f"{controller} {action} on {self.admin.name}: {detail}")

    def _scrub(self, text: str) -> str:
        # Belt and braces: the key is never sent back on purpose, but a server or proxy may echo the body.
        return self._redactor.text(text)

    def _redact(self, value: Any) -> Any:
        # Decimals, dates and the like become text: the runtime stores exchanges as JSON.
        if isinstance(value, Mapping):
            return self._redactor.value({str(key): self._redact(item) for key, item in value.items()})
        if isinstance(value, list | tuple):
            return [self._redact(item) for item in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self._scrub(str(value))


def _messages(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(item) for item in value if item not in (None, "")]
    return [str(value)]


def _as_float(value: Any) -> float | None:
    try:
        number = None if value is None else float(value)
    except (TypeError, ValueError):
        return None
    # "nan" and "inf" parse as floats but are no count or timestamp.
    return number if number is not None and math.isfinite(number) else None


def _as_int(value: Any) -> int | None:
    number = _as_float(value)
    return None if number is None else int(number)


def _log_extra(exchange: Mapping[str, Any], outcome: str) -> dict[str, Any]:
    # Structured fields for a structlog/JSON formatter; params stay out of logs even though they are redacted.
    return {
        "administration": exchange["administration"],
        "controller": exchange["controller"],
        "action": exchange["action"],
        "outcome": outcome,
        "http_status": exchange["http_status"],
        "elapsed_ms": exchange["elapsed_ms"],
    }
