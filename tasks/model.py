"""The domain vocabulary the sync logic and the runtime share: administrations and routes."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr

from tasks.protocol import Dialect

# What a route's target keeps: mirrors of the sales invoices, or the customer's purchase invoices.
LedgerKind = Literal["sales", "purchase"]


class Administration(BaseModel):
    """One HostFact or WeFact administration reached through its API v2 endpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    dialect: Dialect = "hostfact"
    api_url: AnyHttpUrl
    api_key: SecretStr
    # Calls per minute this administration may receive from all factsync workers together.
    rate_limit_per_minute: int = Field(default=300, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    total_timeout: float = Field(default=30.0, gt=0)
    # No answer of this API should be larger; a bigger one is refused rather than read into memory.
    max_answer_bytes: int = Field(default=16 * 1024 * 1024, gt=0)


class Route(BaseModel):
    """A source administration, a target administration and the ledger the target keeps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source: str
    target: str
    ledger: LedgerKind = "sales"
    # Purchase routes only: source debtor code -> target creditor code.
    creditors: dict[str, str] = Field(default_factory=dict)
    # Mirror drafts before they get a number.
    mirror_drafts: bool = False
    dry_run: bool = False
