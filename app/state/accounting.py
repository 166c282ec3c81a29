"""Usage per owner and route by UTC day, and the counters of keys' limits, in Redis (one script per turn end,
one per limited turn's admission, each in the owner's slot: keys share the hash tag `{u:<owner>}`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.core.metering import Account, Counts, Quota
from app.state.commands import Commands, Script, pairs
from app.state.store_base import StoreBase, translated

USAGE_TTL_S = 400 * 86400
"""A day's usage is kept 400 days: a year back, and the same month a year ago."""
MINUTE_TTL_MS = 120_000
DAY_TTL_S = 2 * 86400
METRICS = ("turns", "input_tokens", "output_tokens", "errors", "tool_rounds", "background")

# KEYS: the minute hash, the day's tokens, the in-flight zset (one slot).
# ARGV: now (ms), rpm, tpm, tpd, turns in flight (0: no limit), the turn's in-flight token, its lapse (ms).
# Returns {denied (0: admitted; 1 rpm, 2 tpm, 3 tpd, 4 in flight), requests, minute tokens, day tokens, in flight}.
# Check and count in one step: two replicas cannot both take the last request of a minute.
_ADMIT = """
local now = tonumber(ARGV[1])
local rpm, tpm, tpd, tif = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local m = redis.call('hmget', KEYS[1], 'requests', 'tokens')
local req, tok = tonumber(m[1]) or 0, tonumber(m[2]) or 0
local day = tonumber(redis.call('get', KEYS[2])) or 0
local flying = 0
if tif > 0 then
  redis.call('zremrangebyscore', KEYS[3], '-inf', now)
  flying = redis.call('zcard', KEYS[3])
end
local denied = 0
if rpm > 0 and req >= rpm then denied = 1
elseif tpm > 0 and tok >= tpm then denied = 2
elseif tpd > 0 and day >= tpd then denied = 3
elseif tif > 0 and flying >= tif then denied = 4 end
if denied == 0 then
  req = redis.call('hincrby', KEYS[1], 'requests', 1)
  redis.call('pexpire', KEYS[1], 120000)
  if tif > 0 then
    redis.call('zadd', KEYS[3], now + tonumber(ARGV[7]), ARGV[6])
    redis.call('pexpire', KEYS[3], ARGV[7])
    flying = flying + 1
  end
end
return {denied, req, tok, day, flying}
"""

# The end of a turn: its usage into the owner's day hash and, for a limited key, its tokens into the
# minute and the day, and its in-flight entry released. KEYS: usage day hash, minute hash, day tokens,
# in-flight zset (one slot). ARGV: route, input, output, error, tool round, background (0/1), limited
# (0/1), in-flight token.
_SETTLE = f"""
local r = ARGV[1]
local input, output = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('hincrby', KEYS[1], 'turns:' .. r, 1)
if input > 0 then redis.call('hincrby', KEYS[1], 'input_tokens:' .. r, input) end
if output > 0 then redis.call('hincrby', KEYS[1], 'output_tokens:' .. r, output) end
if ARGV[4] == '1' then redis.call('hincrby', KEYS[1], 'errors:' .. r, 1) end
if ARGV[5] == '1' then redis.call('hincrby', KEYS[1], 'tool_rounds:' .. r, 1) end
if ARGV[6] == '1' then redis.call('hincrby', KEYS[1], 'background:' .. r, 1) end
redis.call('expire', KEYS[1], {USAGE_TTL_S})
if ARGV[7] == '1' then
  local total = input + output
  if total > 0 then
    redis.call('hincrby', KEYS[2], 'tokens', total)
    redis.call('pexpire', KEYS[2], {MINUTE_TTL_MS})
    redis.call('incrby', KEYS[3], total)
    redis.call('expire', KEYS[3], {DAY_TTL_S})
  end
  if ARGV[8] ~= '' then redis.call('zrem', KEYS[4], ARGV[8]) end
end
return 1
"""


def day_of(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


@dataclass
class UsageRow:
    owner: str
    route: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, 0))

    def as_dict(self) -> dict[str, Any]:
        c = self.counts
        return {
            "owner": self.owner,
            "route": self.route,
            "turns": c["turns"],
            "input_tokens": c["input_tokens"],
            "output_tokens": c["output_tokens"],
            "total_tokens": c["input_tokens"] + c["output_tokens"],
            "errors": c["errors"],
            "tool_rounds": c["tool_rounds"],
            "background": c["background"],
        }


class Accounting(StoreBase):
    """The `Ledger` of `app.core.metering`, and the reader of `GET /admin/usage`."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        prefix: str,
        in_flight_lapse_s: float,
        on_error: Callable[[], None] | None = None,
        commands: Commands | None = None,
    ) -> None:
        super().__init__(redis, prefix=prefix, on_error=on_error, commands=commands)
        self.lapse_ms = int(in_flight_lapse_s * 1000)
        self._admit = Script(_ADMIT)
        self._settle = Script(_SETTLE)
        self._known: set[tuple[str, str]] = set()
        """(owner, day) pairs this process has put in `usage:owners` already."""

    @translated
    async def admit(self, owner: str, quota: Quota, token: str, *, now: float) -> Counts:
        k = self.keys
        reply = await self.commands.script(
            self._admit,
            [k.rate_minute(owner, int(now // 60)), k.rate_day(owner, day_of(now)), k.inflight(owner)],
            [
                int(now * 1000),
                quota.requests_per_minute,
                quota.tokens_per_minute,
                quota.tokens_per_day,
                quota.turns_in_flight,
                token,
                self.lapse_ms,
            ],
        )
        return Counts(*(int(v) for v in reply))

    @translated
    async def settle(self, account: Account, *, error: bool, now: float) -> None:
        k, owner, day = self.keys, account.owner, day_of(now)
        await self.commands.script(
            self._settle,
            [k.usage(owner, day), k.rate_minute(owner, int(now // 60)), k.rate_day(owner, day), k.inflight(owner)],
            [
                account.route,
                account.input_tokens,
                account.output_tokens,
                int(error),
                int(account.tool_round),
                int(account.background),
                int(account.limited),
                account.admitted or "",
            ],
        )
        if (owner, day) not in self._known:
            # Once per owner and day in each process: the reader's list of owners (another slot).
            await self.commands.call(("SADD", k.usage_owners(), owner), key=k.usage_owners())
            self._known.add((owner, day))

    @translated
    async def usage(self, days: list[str], *, group_by: tuple[str, ...]) -> list[dict[str, Any]]:
        """Rows summed over `days`, grouped by owner and/or route (a dimension left out reads `*`)."""
        owners = sorted(await self.redis.smembers(self.keys.usage_owners()))
        wanted = [(owner, day) for owner in owners for day in days]
        replies: list[Any] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for owner, day in wanted:
                pipe.hgetall(self.keys.usage(owner, day))
            replies = await pipe.execute()
        rows: dict[tuple[str, str], UsageRow] = {}
        for (owner, _day), reply in zip(wanted, replies, strict=True):
            for name, value in pairs(reply).items():
                metric, _, route = name.partition(":")
                if metric not in METRICS:
                    continue
                key = (owner if "owner" in group_by else "*", route if "route" in group_by else "*")
                row = rows.get(key)
                if row is None:
                    row = rows[key] = UsageRow(*key)
                row.counts[metric] += int(value)
        return [rows[key].as_dict() for key in sorted(rows)]
