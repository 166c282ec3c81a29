"""A turn's accounting: its admission under its key's limits before anything goes upstream, and its usage
counted once, at its one end (docs/usage-and-limits.md).

`Metered` wraps the outermost work of a turn (what `Turn` opens and closes) and adds no layer to its
events: the layers that already see the turn's last event write Azure's usage into the turn's `Account`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from app.core import tracing
from app.core.events import ThreadBound
from app.core.lifetime import Work
from app.errors import BridgeError, RateLimitError, RunFailedError, StoreUnavailableError
from app.settings import KeyLimits, RouteSettings, Settings

log = logging.getLogger("agent_bridge.limits")

E = TypeVar("E")

OTHER = "other"
"""The metric label of an owner or route that is not configured (labels stay bounded)."""


@dataclass(frozen=True, slots=True)
class Quota:
    """One key's effective limits; 0 means none."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    tokens_per_day: int = 0
    turns_in_flight: int = 0


def quotas(settings: Settings) -> dict[str, Quota]:
    """Each owner's quota (`keys[].limits` field by field over `limits.per_key`); owners without limits are absent."""
    default = settings.limits.per_key.model_dump(exclude_none=True)
    owners: list[tuple[str, KeyLimits | None]] = [(k.name, k.limits) for k in settings.keys]
    if not owners:
        owners = [("anonymous", None)]  # open mode: the one owner takes the default
    out: dict[str, Quota] = {}
    for name, own in owners:
        merged = dict(default)
        if own is not None:
            merged.update(own.model_dump(exclude_unset=True))
        values = {k: v for k, v in merged.items() if v}
        if values:
            out[name] = Quota(**values)
    return out


@dataclass(frozen=True, slots=True)
class Counts:
    """What the admission script saw (after counting this turn, when it was admitted)."""

    denied: int
    """0: admitted; 1: requests per minute; 2: tokens per minute; 3: tokens per day; 4: turns in flight."""
    requests: int
    minute_tokens: int
    day_tokens: int
    in_flight: int


@dataclass(slots=True)
class Account:
    """What one turn did, written by the layers that see it, read once at its end."""

    owner: str
    route: str
    tool_round: bool = False
    background: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    conversation_id: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    failed: str | None = None
    """The code of an error the turn ended with in its own events (a streamed `response.failed`)."""
    admitted: str | None = None
    """The turn's in-flight entry (a limited key with turns_in_flight), released at its end."""
    limited: bool = False

    def used(self, prompt: int | None, completion: int | None) -> None:
        self.input_tokens = prompt or 0
        self.output_tokens = completion or 0


class Ledger(Protocol):
    """Where limits are counted and usage is added up (the Redis side: `app.state.accounting`)."""

    async def admit(self, owner: str, quota: Quota, token: str, *, now: float) -> Counts: ...

    async def settle(self, account: Account, *, error: bool, now: float) -> None: ...


class MeterMetrics(Protocol):
    key_turns: Any  # labels: owner, route
    key_tokens: Any  # labels: owner, route, kind (input | output)
    key_errors: Any  # labels: owner, route, code
    key_tool_rounds: Any  # labels: owner, route
    key_background_turns: Any  # labels: owner, route
    rate_limited: Any  # labels: owner, limit


_LIMIT_NAMES = ("", "requests_per_minute", "tokens_per_minute", "tokens_per_day", "turns_in_flight")

RATE_HEADERS: ContextVar[dict[str, str] | None] = ContextVar("agent_bridge_rate_headers", default=None)
"""The x-ratelimit-* headers of the turn this request opened (set in the request's own task)."""


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes one: `20ms`, `1s`, `6m0s`, `1h2m3s` (Go's duration format)."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _until_minute(now: float) -> float:
    return 60.0 - (now % 60.0)


def _until_day(now: float) -> float:
    return 86400.0 - (now % 86400.0)


def rate_headers(quota: Quota, counts: Counts, now: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits this key has (requests: per minute; tokens: per
    minute, else per day)."""
    headers: dict[str, str] = {}
    if quota.requests_per_minute:
        headers["x-ratelimit-limit-requests"] = str(quota.requests_per_minute)
        headers["x-ratelimit-remaining-requests"] = str(max(0, quota.requests_per_minute - counts.requests))
        headers["x-ratelimit-reset-requests"] = duration(_until_minute(now))
    if quota.tokens_per_minute:
        headers["x-ratelimit-limit-tokens"] = str(quota.tokens_per_minute)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, quota.tokens_per_minute - counts.minute_tokens))
        headers["x-ratelimit-reset-tokens"] = duration(_until_minute(now))
    elif quota.tokens_per_day:
        headers["x-ratelimit-limit-tokens"] = str(quota.tokens_per_day)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, quota.tokens_per_day - counts.day_tokens))
        headers["x-ratelimit-reset-tokens"] = duration(_until_day(now))
    return headers


class KeyRateLimitError(RateLimitError, type="requests"):
    """A key past its requests or turns limit (OpenAI's 429 names the kind of limit as the error's type)."""


class KeyTokenLimitError(RateLimitError, type="tokens"):
    """A key past its tokens limit."""


def refusal(owner: str, quota: Quota, counts: Counts, now: float) -> RateLimitError:
    """The 429 of a refused turn, worded as OpenAI words one, with when to retry."""
    if counts.denied == 1:
        what, limit, used = "requests per min (RPM)", quota.requests_per_minute, counts.requests
        wait = _until_minute(now)
    elif counts.denied == 2:
        what, limit, used = "tokens per min (TPM)", quota.tokens_per_minute, counts.minute_tokens
        wait = _until_minute(now)
    elif counts.denied == 3:
        what, limit, used = "tokens per day (TPD)", quota.tokens_per_day, counts.day_tokens
        wait = _until_day(now)
    else:
        what, limit, used = "turns in flight", quota.turns_in_flight, counts.in_flight
        wait = 1.0
    message = (
        f"Rate limit reached for key '{owner}' on {what}: Limit {limit}, Used {used}, Requested 1. "
        f"Please try again in {duration(wait)}."
    )
    if counts.denied in (2, 3):
        message += " Tokens are counted when a turn ends, so a turn is refused once earlier turns spent the limit."
    cls = KeyTokenLimitError if counts.denied in (2, 3) else KeyRateLimitError
    error = cls(message, retry_after=math.ceil(wait))
    error.headers.update(rate_headers(quota, counts, now))
    return error


class Meter:
    """Limits and usage for every turn of this process: one per app."""

    def __init__(
        self,
        ledger: Ledger,
        settings: Settings,
        metrics: MeterMetrics,
    ) -> None:
        self.ledger = ledger
        self.quotas = quotas(settings)
        self.fail_open = settings.limits.on_store_error == "open"
        self.metrics = metrics
        self._owners = frozenset([k.name for k in settings.keys] or ["anonymous"])
        self._routes = frozenset(settings.routes)

    def labels(self, owner: str, route: str) -> tuple[str, str]:
        """Metric labels bounded by the configuration: an owner or route it does not name is `other`."""
        return (owner if owner in self._owners else OTHER, route if route in self._routes else OTHER)

    def account(
        self,
        owner: str,
        route: str,
        settings: RouteSettings,
        *,
        tool_round: bool = False,
        conversation_id: str | None = None,
        store: bool | None = None,
    ) -> Account:
        """A turn's account; a Foundry v2 turn runs as an Azure background response unless the route or
        the client's `store: false` says otherwise (`app.backends.foundry`)."""
        foundry = settings.backend == "foundry"
        return Account(
            owner=owner,
            route=route,
            tool_round=tool_round,
            background=foundry and settings.background and store is not False,
            conversation_id=conversation_id,
            agent_id=settings.assistant_id or _agent_id(settings),
            agent_name=settings.agent.name if settings.agent else None,
        )

    def wrap(self, work: Work[E], account: Account, *, operation: str) -> Metered[E]:
        return Metered(work, self, account, operation=operation)

    async def admit(self, account: Account) -> None:
        """Count the turn against its key's limits, or refuse it (429); one round trip, none without limits."""
        quota = self.quotas.get(account.owner)
        if quota is None:
            return
        account.limited = True
        token = secrets.token_hex(8) if quota.turns_in_flight else ""
        now = time.time()
        try:
            if tracing.ENABLED:
                with tracing.redis_span("limits.admit"):
                    counts = await self.ledger.admit(account.owner, quota, token, now=now)
            else:
                counts = await self.ledger.admit(account.owner, quota, token, now=now)
        except StoreUnavailableError:
            if self.fail_open:
                log.warning("limits: Redis unavailable; a turn of %s let through (on_store_error: open)", account.owner)
                account.limited = False
                return
            raise StoreUnavailableError(
                "The state store is unavailable, so this key's limits cannot be checked; try again shortly.",
                headers={"Retry-After": "1"},
            ) from None
        if counts.denied:
            owner, _ = self.labels(account.owner, account.route)
            self.metrics.rate_limited.labels(owner, _LIMIT_NAMES[counts.denied]).inc()
            raise refusal(account.owner, quota, counts, now)
        account.admitted = token or None
        RATE_HEADERS.set(rate_headers(quota, counts, now))

    async def settle(self, account: Account, ending: BaseException | None) -> None:
        """Count a turn that was admitted, once: Prometheus here, the day bucket in Redis."""
        error = ending is not None or account.failed is not None
        owner, route = self.labels(account.owner, account.route)
        m = self.metrics
        m.key_turns.labels(owner, route).inc()
        if account.input_tokens:
            m.key_tokens.labels(owner, route, "input").inc(account.input_tokens)
        if account.output_tokens:
            m.key_tokens.labels(owner, route, "output").inc(account.output_tokens)
        if error:
            m.key_errors.labels(owner, route, account.failed or error_code(ending)).inc()
        if account.tool_round:
            m.key_tool_rounds.labels(owner, route).inc()
        if account.background:
            m.key_background_turns.labels(owner, route).inc()
        try:
            if tracing.ENABLED:
                with tracing.redis_span("usage.settle"):
                    await self.ledger.settle(account, error=error, now=time.time())
            else:
                await self.ledger.settle(account, error=error, now=time.time())
        except StoreUnavailableError:
            log.warning("usage: a turn of %s on %s not counted (Redis unavailable)", account.owner, account.route)


def error_code(ending: BaseException | None) -> str:
    """A bounded code for an ending: the error class's own code (Azure's codes ride in the message)."""
    if isinstance(ending, BridgeError):
        return type(ending).default_code
    if isinstance(ending, asyncio.CancelledError):
        return "cancelled"
    return "internal_error"


class Metered(Generic[E]):
    """A turn's work, admitted under its key's limits before it opens and accounted once when it closes."""

    __slots__ = ("_admitted", "_span", "account", "meter", "operation", "work")

    def __init__(self, work: Work[E], meter: Meter, account: Account, *, operation: str) -> None:
        self.work = work
        self.meter = meter
        self.account = account
        self.operation = operation
        self._admitted = False
        self._span: Any = None

    async def open(self) -> ThreadBound:
        if tracing.ENABLED:
            self._span = tracing.start_turn(self.operation, self.account)
        await self.meter.admit(self.account)
        self._admitted = True
        bound = await self.work.open()
        if self._span is not None:
            tracing.bound(self._span, bound)
        return bound

    def events(self) -> AsyncIterator[E]:
        return self.work.events()

    def __getattr__(self, name: str) -> Any:
        # What a work offers beyond `Work` (a background turn's `created`, `upstream`, `detach`, `hand_over`:
        # `app.core.background_responses`) is the wrapped work's: metering adds to a turn, it hides nothing.
        return getattr(self.work, name)

    async def close(self, ending: BaseException | None) -> None:
        try:
            if self._admitted:
                # The count goes side by side with the backend's clean-up: its script is sent in the same
                # event-loop step as the backend's end-of-turn script, so the lean channel's auto-pipelining
                # writes both at once (`app.state.resp`): no round trip of its own on a standalone Redis.
                counted = asyncio.ensure_future(self.meter.settle(self.account, ending))
                try:
                    await self.work.close(ending)
                finally:
                    await counted
            else:
                await self.work.close(ending)
        finally:
            if self._span is not None:
                tracing.end_turn(self._span, self.account, ending)


def _agent_id(settings: RouteSettings) -> str | None:
    """A Foundry v2 agent as Azure names a version of it (`name:version`), or its name (its active version)."""
    agent = settings.agent
    if agent is None:
        return None
    return f"{agent.name}:{agent.version}" if agent.version else agent.name


def has_tool_outputs(items: Iterable[Mapping[str, Any]] | Any) -> bool:
    """A Responses input that answers function calls (or MCP approvals): a tool round."""
    if not isinstance(items, list):
        return False
    return any(
        isinstance(item, dict) and item.get("type") in ("function_call_output", "mcp_approval_response")
        for item in items
    )


def account_response(account: Account, response: Any) -> None:
    """Azure's usage and status of a relayed response, as its terminal event gave them."""
    if not isinstance(response, dict):
        return
    usage = response.get("usage")
    if isinstance(usage, dict):
        account.used(usage.get("input_tokens"), usage.get("output_tokens"))
    status = response.get("status")
    if isinstance(status, str):
        account.finish_reason = status
    if status == "failed":
        account.failed = RunFailedError.default_code  # Azure's own code is in the response the client gets
