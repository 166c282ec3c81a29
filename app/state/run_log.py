"""A background response's state in Redis: its fields, its stream events and the lease of the replica running it.

Three keys that share the response id as their hash tag (`Keys.background*`), so every write is one
batch in one slot: the state hash, the event log (a stream whose entry ids are `0-<sequence_number + 1>`,
so `starting_after=N` is an XREAD after `0-<N + 1>`; entry `1-0` marks the end and wakes every
follower), and the runner's lease. Every write renews the TTL of the state and the log.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from app.state.commands import pairs, truthy
from app.state.store_base import StoreBase, translated

END_ENTRY = "1-0"
"""Above every event's entry id (`0-n`): written once, when the response has ended."""

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class RedisRunLog(StoreBase):
    """The Redis side of `app.core.background_runs` (its `RunLog`)."""

    def __init__(self, store: StoreBase, *, ttl_s: float) -> None:
        super().__init__(store.redis, prefix=store.prefix, on_error=store.on_error, commands=store.commands)
        self.gate = store.gate
        self.ttl_ms = int(ttl_s * 1000)
        self._release = self.redis.register_script(_RELEASE)
        self._extend = self.redis.register_script(_EXTEND)

    @translated
    async def create(self, response_id: str, fields: Mapping[str, str], lease_ms: int) -> str:
        """The state of a new background response, and its runner's lease (held by the caller)."""
        state, runner = self.keys.background(response_id), self.keys.background_runner(response_id)
        token = secrets.token_hex(16)
        flat = [part for pair in fields.items() for part in pair]
        await self._pipelined(
            [("HSET", state, *flat), ("PEXPIRE", state, self.ttl_ms), ("SET", runner, token, "PX", lease_ms)],
            transaction=True,
        )
        return token

    @translated
    async def write(
        self, response_id: str, events: Sequence[dict[str, Any]], fields: Mapping[str, str], *, end: bool = False
    ) -> None:
        """Append events (each under its sequence number), update fields and, at the end, mark it."""
        state, log = self.keys.background(response_id), self.keys.background_events(response_id)
        commands: list[tuple[Any, ...]] = [
            ("XADD", log, f"0-{int(event['sequence_number']) + 1}", "e", _dump(event)) for event in events
        ]
        if end:
            commands.append(("XADD", log, END_ENTRY, "end", fields.get("status", "")))
        if fields:
            commands.append(("HSET", state, *[part for pair in fields.items() for part in pair]))
        if commands:
            commands += [("PEXPIRE", state, self.ttl_ms), ("PEXPIRE", log, self.ttl_ms)]
            await self._pipelined(commands, transaction=False)

    @translated
    async def state(self, response_id: str) -> dict[str, str]:
        state = self.keys.background(response_id)
        return pairs(await self.commands.call(("HGETALL", state), key=state))

    @translated
    async def set_fields(self, response_id: str, fields: Mapping[str, str]) -> None:
        state = self.keys.background(response_id)
        await self.commands.call(("HSET", state, *[p for pair in fields.items() for p in pair]), key=state)

    @translated
    async def cancelling(self, response_id: str) -> bool:
        state = self.keys.background(response_id)
        return await self.commands.call(("HGET", state, "cancel"), key=state) in ("1", b"1")

    @translated
    async def read(self, response_id: str, after: int, *, block_ms: int | None) -> tuple[list[dict[str, Any]], bool]:
        """The events after sequence number `after` (waiting up to `block_ms` for one), and whether the
        log's end mark was among them."""
        log = self.keys.background_events(response_id)
        start = f"0-{after + 1}"
        if block_ms is None:
            rows = await self.redis.xrange(log, min=f"({start}", count=1000)
        else:
            found = await self.redis.xread({log: start}, block=block_ms, count=1000)
            rows = _entries(found)
        events: list[dict[str, Any]] = []
        ended = False
        for entry_id, data in rows:
            if entry_id == END_ENTRY:
                ended = True
            elif "e" in data:
                events.append(json.loads(data["e"]))
        return events, ended

    @translated
    async def all_events(self, response_id: str) -> list[dict[str, Any]]:
        rows = await self.redis.xrange(self.keys.background_events(response_id), max="0-18446744073709551615")
        return [json.loads(data["e"]) for _, data in rows if "e" in data]

    # -- the runner's lease ------------------------------------------------------------------------

    @translated
    async def take_runner(self, response_id: str, lease_ms: int) -> str | None:
        """The lease of a response nobody runs (its runner ended or died): one replica gets it."""
        key, token = self.keys.background_runner(response_id), secrets.token_hex(16)
        return token if truthy(await self.commands.call(("SET", key, token, "NX", "PX", lease_ms), key=key)) else None

    @translated
    async def renew_runner(self, response_id: str, token: str, lease_ms: int) -> bool:
        key = self.keys.background_runner(response_id)
        return bool(await self._extend(keys=[key], args=[token, lease_ms]))

    @translated
    async def release_runner(self, response_id: str, token: str) -> None:
        await self._release(keys=[self.keys.background_runner(response_id)], args=[token])


def _entries(found: Any) -> list[tuple[str, dict[str, str]]]:
    """XREAD's RESP2 reply (the protocol the bridge speaks), `[[stream, entries]]`, as one stream's entries."""
    return [entry for _stream, entries in found or () for entry in entries]
