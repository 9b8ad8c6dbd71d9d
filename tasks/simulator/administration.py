"""One simulated HostFact or WeFact administration: ledger, API key, faults, call log, hooks and firewall."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from typing import Any

from tasks.protocol import Dialect
from tasks.simulator import invoices
from tasks.simulator.calls import CallRecord
from tasks.simulator.dispatch import ACTIONS
from tasks.simulator.envelope import ApiFailure, Outcome, Record
from tasks.simulator.faults import FaultPlan
from tasks.simulator.hooks import FORWARDED_HOOKS, HookDelivery, HookMode, HookSender
from tasks.simulator.params import Params
from tasks.simulator.ratelimit import Firewall
from tasks.simulator.render import relation_show
from tasks.simulator.store import Store

# What a person does in HostFact's screens that the API cannot.
BACKOFFICE: dict[str, Callable[..., Outcome]] = {"credit_partly": invoices.credit_partly}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
DEFAULT_BAN_SECONDS = 600.0
CONCURRENCY_WAIT = 5.0


class SimAdministration:
    """A HostFact or WeFact administration the simulator serves at ``/{name}/api/v2/``.

    State lives in ``store`` (records keyed by Identifier, typed: ints, Decimals, strings). ``faults`` holds
    the injected fault rules, ``calls`` the call log, ``hooks_fired`` the hooks sent to ``hooks_url``
    (HostFact only).
    WeFact always sends API-RateLimit-* headers; limits are off unless given (live WeFact: 500/min, 5000/h,
    ``ratelimit.WEFACT_PER_MINUTE`` / ``WEFACT_PER_HOUR``), so shared test runs are not banned by surprise.
    """

    def __init__(
        self,
        name: str,
        dialect: Dialect,
        api_key: str,
        *,
        hooks_url: str | None = None,
        hook_secret: str | None = None,
        rate_limit_per_minute: int | None = None,
        rate_limit_per_hour: int | None = None,
        seed: int = 0,
        hook_delivery: HookMode = "inline",
        ban_seconds: float = DEFAULT_BAN_SECONDS,
    ) -> None:
        if not _NAME.fullmatch(name) or name.startswith("_"):
            raise ValueError(f"administration name {name!r} must be URL-safe and not start with '_'")
        if dialect not in ("hostfact", "wefact"):
            raise ValueError(f"unknown dialect {dialect!r}")
        if dialect == "wefact" and hooks_url:
            raise ValueError("WeFact sends no hooks; give hooks_url to a hostfact administration")
        if dialect == "hostfact" and (rate_limit_per_minute or rate_limit_per_hour):
            raise ValueError("self-hosted HostFact has no rate limit; rate limits are a wefact setting")
        self.name = name
        self.dialect: Dialect = dialect
        self.api_key = api_key
        self.seed = seed
        self.store = Store(dialect)
        self.faults = FaultPlan(seed)
        self.calls: list[CallRecord] = []
        self.hooks = HookSender(hooks_url, hook_secret, mode=hook_delivery)
        # Which hooks leave HostFact: those factsync's hooks.php registers. None forwards every hook HostFact
        # fires, debtor_is_created/_edited included.
        self.forwarded_hooks: frozenset[str] | None = FORWARDED_HOOKS
        wefact = dialect == "wefact"
        self.firewall = Firewall(
            per_minute=rate_limit_per_minute if wefact else None,
            per_hour=rate_limit_per_hour if wefact else None,
            ban_seconds=ban_seconds,
            headers=wefact,
        )
        # HostFact's other login checks, off by default: API_ACTIVE and the API_ACCESS whitelist (IPs, CIDRs).
        self.api_access_enabled = True
        self.allowed_ips: list[str] | None = None
        # How long a HostFact write waits for another write's lock before "API has concurrent calls".
        self.concurrency_wait = CONCURRENCY_WAIT
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"SimAdministration({self.name!r}, {self.dialect!r})"

    # -- the rules -------------------------------------------------------------------------------------------

    def execute(self, controller: str, action: str, params: Mapping[str, Any]) -> Outcome:
        """Carry out one API action on the state, without HTTP, hooks or the call log.

        Raises ApiFailure (its ``errors`` are the API's messages) or EmptyAnswer, as the API would answer.
        """
        actions = ACTIONS.get(controller)
        if actions is None:
            raise ApiFailure("Invalid controller")
        handler = actions.get(action)
        if handler is None:
            raise ApiFailure("Invalid action")
        return handler(self.store, Params(params))

    # -- seeding helpers: the API's own actions, quietly (no hooks, no call log) ---

    def add_debtor(self, **fields: Any) -> Record:
        """Add a debtor through ``debtor add``; returns the stored record (live, typed)."""
        return self._seed("debtor", fields)

    def add_creditor(self, **fields: Any) -> Record:
        return self._seed("creditor", fields)

    def add_invoice(self, **fields: Any) -> Record:
        """Add an invoice through ``invoice add`` (``Status`` 0 or absent makes a draft)."""
        return self._seed("invoice", fields)

    def add_creditinvoice(self, **fields: Any) -> Record:
        return self._seed("creditinvoice", fields)

    def _seed(self, controller: str, fields: Mapping[str, Any]) -> Record:
        outcome = self.execute(controller, "add", fields)
        assert outcome.record is not None
        return outcome.record

    # -- the back office: what a person does in HostFact's screens, firing the hooks HostFact fires ---

    async def credit_partly(self, identifier: int, numbers: Mapping[int, Any]) -> Record:
        """Credit part of an invoice as HostFact's back office does (invoice::createCreditInvoice, "partly"):
        ``numbers`` maps the original's line Identifiers to the number of each to credit. Fires the hooks
        HostFact fires; returns the new credit invoice."""
        if self.dialect != "hostfact":
            raise ValueError("partial credits are HostFact's back-office action")
        outcome = self.backoffice("credit_partly", identifier=identifier, numbers=numbers)
        await self.fire(outcome)
        assert outcome.record is not None
        return outcome.record

    def backoffice(self, action: str, **params: Any) -> Outcome:
        """Carry out one back-office action on the state, without hooks: what ``execute`` is to the API."""
        return BACKOFFICE[action](self.store, **params)

    async def fire(self, outcome: Outcome) -> None:
        """Send the hooks ``outcome`` fired (HostFact only, and only those factsync's hooks.php forwards)."""
        forwarded = self.forwarded_hooks
        hooks = [hook for hook in outcome.hooks if forwarded is None or hook[0] in forwarded]
        if self.dialect != "hostfact" or not hooks:
            return
        deliveries = self.hooks.record(hooks)
        if self.hooks.mode == "background":
            self.hooks.deliver_later(deliveries)
            return
        # Inline, like HostFact: hooks run inside the request, before the answer, the new row uncommitted.
        if outcome.uncommitted is not None:
            self.store.hidden.add(outcome.uncommitted)
        try:
            await self.hooks.deliver(deliveries)
        finally:
            if outcome.uncommitted is not None:
                self.store.hidden.discard(outcome.uncommitted)

    # -- reading the state -----------------------------------------------------------------------------------

    @property
    def invoices(self) -> dict[int, Record]:
        return self.store.invoices

    @property
    def creditinvoices(self) -> dict[int, Record]:
        return self.store.creditinvoices

    @property
    def debtors(self) -> dict[int, Record]:
        return self.store.debtors

    @property
    def creditors(self) -> dict[int, Record]:
        return self.store.creditors

    def invoice(self, identifier: int) -> Record:
        """The stored invoice with this Identifier (KeyError if none)."""
        return self.store.invoices[identifier]

    def invoice_by_code(self, code: str) -> Record:
        """The stored invoice with exactly this InvoiceCode (KeyError if none)."""
        found = self.store.find("invoices", "InvoiceCode", code)
        if found is None:
            raise KeyError(code)
        return found

    def creditinvoice(self, identifier: int) -> Record:
        return self.store.creditinvoices[identifier]

    def creditinvoice_by_code(self, code: str) -> Record:
        """The stored purchase invoice with this CreditInvoiceCode (our number, not the supplier's)."""
        found = self.store.find("creditinvoices", "CreditInvoiceCode", code)
        if found is None:
            raise KeyError(code)
        return found

    def debtor(self, identifier: int) -> Record:
        return self.store.debtors[identifier]

    def creditor(self, identifier: int) -> Record:
        return self.store.creditors[identifier]

    @property
    def hooks_fired(self) -> list[HookDelivery]:
        return self.hooks.fired

    def count_calls(
        self, controller: str | None = None, action: str | None = None, *, writes_only: bool = False
    ) -> int:
        """How many API calls arrived, optionally of one controller/action, or only writes."""
        return sum(
            1
            for call in self.calls
            if (controller is None or call.controller == controller)
            and (action is None or call.action == action)
            and (not writes_only or call.action not in ("show", "list"))
        )

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-able data (Decimals become strings via the simulator's JSON encoder)."""
        return {
            "name": self.name,
            "dialect": self.dialect,
            "invoices": list(self.store.invoices.values()),
            "creditinvoices": list(self.store.creditinvoices.values()),
            "debtors": [relation_show(r) for r in self.store.debtors.values()],
            "creditors": [relation_show(r) for r in self.store.creditors.values()],
        }

    # -- lifecycle -------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty the ledger, call log, hook log and fault rules; keep the configuration."""
        self.store.reset()
        self.calls.clear()
        self.hooks.reset()
        self.faults.clear()
        self.firewall.reset()

    async def drain_hooks(self) -> None:
        """Wait until every hook fired so far has been delivered (background mode) or has failed."""
        await self.hooks.drain()

    def write_lock(self) -> asyncio.Lock:
        """HostFact's API_IS_RUNNING flag: held by an API write while it runs, inline hooks included."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock
