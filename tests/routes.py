"""Fixtures for a whole factsync with one route, into each target dialect: `sales` and `purchase`.

Registered for every test module by conftest's ``pytest_plugins``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.stack import Stack, running_stack

DIALECTS = ["wefact", "hostfact"]


@pytest.fixture(params=DIALECTS)
async def sales(request: pytest.FixtureRequest, redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    """A sales route from a simulated HostFact into a WeFact, then a HostFact target."""
    async with running_stack(redis_url, target_dialect=request.param, ledger="sales") as stack:
        yield stack


@pytest.fixture(params=DIALECTS)
async def purchase(request: pytest.FixtureRequest, redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    """A purchase route: debtor DB0001's invoices become purchase invoices of creditor CD0001."""
    async with running_stack(
        redis_url, target_dialect=request.param, ledger="purchase", creditors={"DB0001": "CD0001"}
    ) as stack:
        stack.target.add_creditor(CompanyName="Our supplier B.V.")
        yield stack
