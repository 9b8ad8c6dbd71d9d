"""factsync's settings: one typed object, read from `factsync.toml` and `FACTSYNC_*` environment variables.

A wrong or missing setting stops start-up with a `ConfigError` that names the setting.
"""

from __future__ import annotations

import base64
import difflib
import json
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from standardwebhooks import Webhook

from tasks.model import Administration, LedgerKind, Route
from tasks.protocol import Dialect
from worker import redisio
from worker.rawconfig import (
    CONFIG_ENV,
    DEFAULT_DATA_DIR,
    ConfigError,
    RawConfig,
    config_path,
    read_config,
)

__all__ = ["CONFIG_ENV", "ConfigError", "Settings", "load_settings"]


# A hook secret signs every hook: at least 24 random bytes (192 bits), as `factsync sandbox` makes them.
MIN_HOOK_SECRET_BYTES = 24
MIN_DASHBOARD_TOKEN_CHARS = 24
MAKE_HOOK_SECRET = (
    """python3 -c "import base64,os;print('whsec_'+base64.b64encode(os.urandom(24)).decode())\""""
)
# The placeholders the repository's examples ship (factsync.example.toml, the Kubernetes secret example,
# hooks.php's config example): never a working secret.
_PLACEHOLDER = re.compile(r"replace|example|changeme|change_me|\.\.\.", re.IGNORECASE)


def hook_secret_problem(value: str) -> str | None:
    """What is wrong with a hook secret, or None: "whsec_" + base64 of at least 24 bytes, no placeholder."""
    if not value.startswith("whsec_"):
        return "is not a Standard Webhooks secret ('whsec_' + base64)"
    if _PLACEHOLDER.search(value):
        return "is the placeholder of an example file, not a secret"
    try:
        raw = base64.b64decode(value.removeprefix("whsec_"), validate=True)
        Webhook(value)
    except Exception:
        return "is not a Standard Webhooks secret: no base64 after 'whsec_'"
    if len(raw) < MIN_HOOK_SECRET_BYTES:
        return f"holds {len(raw)} bytes; a hook secret needs at least {MIN_HOOK_SECRET_BYTES} random bytes"
    return None


class Section(BaseModel):
    """A table of settings: unknown keys refused, and a list or table given as JSON text read as one."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _tables_given_as_json(cls, value: Any, info: ValidationInfo) -> Any:
        # An environment variable can only carry text: FACTSYNC_SOURCES__X__HOOK_SECRETS='["whsec_..."]'.
        if not isinstance(value, str) or info.field_name is None:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if not _is_table(annotation):
            return value
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(
                'must be a list or table; in a variable, write it as JSON, e.g. ["a", "b"]'
            ) from None


def _is_table(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return typing.get_origin(annotation) in (list, dict)


class AdministrationSettings(Section):
    """How to reach one administration's API v2 endpoint, and how much of it factsync may use."""

    api_url: AnyHttpUrl
    # Required by every command that calls the API (load_settings(secrets=True)); the read-only operator
    # commands (status, events, failed, check) need only Redis and run without it.
    api_key: SecretStr | None = None
    dialect: Dialect
    rate_limit_per_minute: int = Field(gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    total_timeout: float = Field(default=30.0, gt=0)


class SourceSettings(AdministrationSettings):
    """A HostFact administration that sends hooks (through `hooks.php`) and answers API reads."""

    dialect: Dialect = "hostfact"
    rate_limit_per_minute: int = Field(default=300, gt=0)
    # Several at once so a secret can be rotated without dropping hooks signed with the old one. Required
    # like api_key, by the listener.
    hook_secrets: list[SecretStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _secrets_are_standard_webhooks_secrets(self) -> SourceSettings:
        for index, secret in enumerate(self.hook_secrets):
            problem = hook_secret_problem(secret.get_secret_value())
            if problem is not None:
                raise ValueError(f"hook_secrets[{index}] {problem}; make one with: {MAKE_HOOK_SECRET}")
        return self


class TargetSettings(AdministrationSettings):
    """A WeFact or HostFact administration that factsync writes to."""

    dialect: Dialect = "wefact"
    # WeFact publishes about 200-500 calls a minute per IP and bans on a breach: stay well under.
    rate_limit_per_minute: int = Field(default=150, gt=0)


class RouteSettings(Section):
    source: str
    target: str
    ledger: LedgerKind = "sales"
    creditors: dict[str, str] = Field(default_factory=dict)
    mirror_drafts: bool = False
    dry_run: bool = False


class RetrySettings(Section):
    """Exponential backoff with full jitter, bounded in tries and in time."""

    max_tries: int = Field(default=10, ge=1)
    base_delay: float = Field(default=1.0, gt=0)
    max_delay: float = Field(default=300.0, gt=0)
    # No event is retried longer than this after its first try; then it goes to the failed store.
    max_span: float = Field(default=6 * 3600.0, gt=0)


class DashboardSettings(Section):
    """The web dashboard under /dashboard: off unless a token or a username and password are set."""

    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    # Wrong sign-ins a client may make in a minute before it must wait the minute out.
    sign_in_limit: int = Field(default=5, gt=0)

    @property
    def enabled(self) -> bool:
        return self.token is not None or (self.username is not None and self.password is not None)

    @model_validator(mode="after")
    def _credentials_are_not_guessable(self) -> DashboardSettings:
        for name, secret in (("token", self.token), ("password", self.password)):
            if secret is None:
                continue
            value = secret.get_secret_value()
            if _PLACEHOLDER.search(value) or value.lower() == "a long random string":
                raise ValueError(f"{name} is the placeholder of an example file, not a secret")
            if len(value) < MIN_DASHBOARD_TOKEN_CHARS:
                raise ValueError(
                    f"{name} has {len(value)} characters; use at least {MIN_DASHBOARD_TOKEN_CHARS} random "
                    "ones "
                    """(python3 -c "import secrets;print(secrets.token_urlsafe(24))")"""
                )
        return self


class Settings(Section):
    """Everything factsync reads from factsync.toml and FACTSYNC_* variables; `load_settings` makes one."""

    # None: factsync starts an embedded Redis server with AOF in `data_dir`. The forms (a server, TLS, an
    # ACL user, a Sentinel group) are in worker/redisio.py and deploy/README.md.
    redis_url: str | None = None
    # How long a worker keeps trying a Redis command that found no primary (a failover under way, Redis
    # restarting) before the command fails; the listener does not wait, it answers 503.
    redis_reconnect_seconds: float = Field(default=120.0, gt=0)
    # A hook is acknowledged (202) only once this many replicas have it (Redis WAIT), so a failover to a
    # replica cannot lose it; not confirmed within redis_wait_timeout, the listener answers 503 and
    # hooks.php spools it. 0: no waiting (one Redis server, or a loss of the last writes accepted).
    redis_wait_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout: float = Field(default=0.5, gt=0)
    data_dir: Path = DEFAULT_DATA_DIR
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    timestamp_tolerance: int = Field(default=300, gt=0)
    # How long a webhook-id is remembered; resend.php may deliver a spooled hook days later.
    dedup_ttl: int = Field(default=30 * 24 * 3600, gt=0)
    poll_delay: float = Field(default=0.05, gt=0)
    job_timeout: float = Field(default=120.0, gt=0)
    # A document's lease, renewed every third of it while its sync runs: longer than a slow API call,
    # short enough that a dead worker's lease soon frees the document for another.
    lease_seconds: float = Field(default=60.0, gt=0)
    shutdown_grace: float = Field(default=20.0, ge=0)
    # Each worker beats this often; one silent for 5 beats is dead, and a live worker hands its jobs on.
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    max_jobs: int = Field(default=20, gt=0)
    # After a WeFact 403 (IP ban) no worker calls that administration for this many seconds.
    ban_pause: float = Field(default=900.0, gt=0)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    # Serve Prometheus metrics at /metrics on the listener.
    metrics: bool = True
    # Each worker process serves its own /metrics on listen_host at this port (0: off); the processes of
    # `factsync worker --processes N` take this port and the N - 1 after it.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    # `factsync worker` runs this many worker processes and restarts one that dies.
    worker_processes: int = Field(default=1, ge=1)
    sources: dict[str, SourceSettings] = Field(default_factory=dict)
    targets: dict[str, TargetSettings] = Field(default_factory=dict)
    routes: dict[str, RouteSettings] = Field(default_factory=dict)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_usable(cls, url: str | None) -> str | None:
        if url is not None:
            redisio.parse(url)  # a ValueError that names what is wrong, never the password
        return url

    @model_validator(mode="after")
    def _routes_name_known_administrations(self) -> Settings:
        for name, route in self.routes.items():
            if route.source not in self.sources:
                raise ValueError(f"routes.{name}.source: no source named {route.source!r} in [sources]")
            if route.target not in self.targets:
                raise ValueError(f"routes.{name}.target: no target named {route.target!r} in [targets]")
            if route.ledger == "purchase" and not route.creditors:
                raise ValueError(
                    f"routes.{name}.creditors: a purchase route needs a debtor code -> creditor code map"
                )
        return self

    @property
    def job_expiry_ms(self) -> int:
        """A queued job must outlive the whole retry span: arq drops a job whose key has expired."""
        return int((self.retry.max_span + 24 * 3600) * 1000)

    @property
    def sync_budget(self) -> float:
        """How long one sync may take before it is abandoned and retried: a margin inside job_timeout."""
        return max(self.job_timeout - 5, self.job_timeout * 0.8)

    @property
    def lease_ms(self) -> int:
        return int(self.lease_seconds * 1000)

    def secrets(self) -> list[str]:
        """Every key, hook secret and dashboard credential the configuration holds: logs and pages blank
        them wherever they appear."""
        keys = [a.api_key for a in (*self.sources.values(), *self.targets.values()) if a.api_key is not None]
        values = [key.get_secret_value() for key in keys]
        values += [h.get_secret_value() for s in self.sources.values() for h in s.hook_secrets]
        for secret in (self.dashboard.token, self.dashboard.password):
            if secret is not None:
                values.append(secret.get_secret_value())
        values += redisio.secrets_in(self.redis_url)
        return values

    def missing_secrets(self) -> list[str]:
        """The settings a command that calls the APIs or takes hooks needs and this configuration lacks."""
        missing = [f"sources.{name}.api_key" for name, s in self.sources.items() if s.api_key is None]
        missing += [f"sources.{name}.hook_secrets" for name, s in self.sources.items() if not s.hook_secrets]
        missing += [f"targets.{name}.api_key" for name, t in self.targets.items() if t.api_key is None]
        return missing

    def source(self, name: str) -> Administration:
        return _administration(name, self.sources[name])

    def target(self, name: str) -> Administration:
        return _administration(name, self.targets[name])

    def route(self, name: str) -> Route:
        r = self.routes[name]
        return Route(name=name, **r.model_dump())

    def routes_of(self, source: str) -> list[Route]:
        return [self.route(name) for name, r in self.routes.items() if r.source == source]


def _administration(name: str, settings: AdministrationSettings) -> Administration:
    if settings.api_key is None:
        # load_settings(secrets=True) refuses this first; a read-only command never builds a client.
        raise ConfigError(f"{name}: api_key is missing (required to call its API)")
    return Administration(name=name, **settings.model_dump(include=set(AdministrationSettings.model_fields)))


def load_settings(path: Path | str | None = None, *, secrets: bool = True, **overrides: Any) -> Settings:
    """Read the settings from ``path`` (or $FACTSYNC_CONFIG, or ./factsync.toml when it exists) and the env.

    ``secrets``: require every API key and hook secret (False: the read-only operator commands, which need
    only Redis). ``overrides`` (a command's options) win over both. Raises ConfigError naming the bad setting.
    """
    raw = read_config(config_path(path), Settings.model_fields)
    try:
        settings = Settings.model_validate(raw.values | overrides)
    except ValidationError as exc:
        raise _describe(exc, raw) from None
    missing = settings.missing_secrets() if secrets else []
    if missing:
        raise raw.error([f"{name}: missing (required)" for name in missing])
    return settings


def _describe(exc: ValidationError, raw: RawConfig) -> ConfigError:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "missing (required)"
        elif error["type"] == "extra_forbidden":
            message = "is not a setting"
            guess = _closest(loc)
            if guess:
                message += f"; did you mean {'.'.join([*loc[:-1], guess])}?"
        lines.append(f"{raw.named(tuple(loc))}: {message}" if loc else message)
    return raw.error(lines)


# The settings models by the path under which they sit ("*": a name chosen in the file, such as a source's).
_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): Settings,
    ("retry",): RetrySettings,
    ("dashboard",): DashboardSettings,
    ("sources", "*"): SourceSettings,
    ("targets", "*"): TargetSettings,
    ("routes", "*"): RouteSettings,
}


def _closest(loc: list[str]) -> str | None:
    """The setting a misspelt key most likely meant, from the fields of the model it sits in."""
    parent = tuple(loc[:-1])
    model = _MODELS.get(parent) or (_MODELS.get((parent[0], "*")) if len(parent) == 2 else None)
    if model is None:
        return None
    found = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return found[0] if found else None
