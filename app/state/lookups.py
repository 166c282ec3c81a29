"""Single-key lookups by id: conversation cursors, tool-call, response and file records (ownership: `ownership`).

Each record is one key, so none needs a hash tag; reads of several keys at once are split per slot
on a cluster (`_mget`). Response records are stored compact: no
null fields, no JSON whitespace.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from redis.commands.core import AsyncScript

from app.core.records import CallRecord, FileRecord, ResponseRecord
from app.core.turn import Usage
from app.state.ownership import Ownership
from app.state.store_base import translated


def _call_from(raw: str | None) -> CallRecord | None:
    if raw is None:
        return None
    data = json.loads(raw)
    data["sibling_ids"] = tuple(data["sibling_ids"])
    if data.get("reported") is not None:
        data["reported"] = Usage(**data["reported"])
    return CallRecord(**data)


# The longest remembered prefix, taken: the first key found from the longest is read and deleted in
# one step, so two branches of one prefix can never both continue the thread that ends there.
TAKE_CONVERSATION = """
for i = #KEYS, 1, -1 do
  local value = redis.call('GET', KEYS[i])
  if value then
    redis.call('DEL', KEYS[i])
    return {i - 1, value}
  end
end
return false
"""

_RESPONSE_DEFAULTS: dict[str, Any] = {"thread_id": None, "run_id": None, "upstream_id": None, "data": {}}


class Lookups(Ownership):
    thread_ttl_ms: int
    response_ttl_ms: int
    _take_script: AsyncScript

    # -- conversations ---------------------------------------------------------------------------

    @translated
    async def save_conversation(self, owner: str, route: str, fingerprint: str, value: str) -> None:
        key = self.key("conv", owner, route, fingerprint)
        await self.redis.set(key, value, px=self.thread_ttl_ms)

    @translated
    async def find_conversation(self, owner: str, route: str, fingerprints: Sequence[str]) -> tuple[int, str] | None:
        """One MGET (per slot on a cluster); the longest remembered prefix wins."""
        if not fingerprints:
            return None
        values = await self._mget([self.key("conv", owner, route, fp) for fp in fingerprints])
        for index in range(len(values) - 1, -1, -1):
            if values[index] is not None:
                return index, str(values[index])
        return None

    @translated
    async def take_conversation(self, owner: str, route: str, fingerprints: Sequence[str]) -> tuple[int, str] | None:
        """Like `find_conversation`, and the prefix found is forgotten: the turn that took it is the only
        one to continue its thread, and stores the thread's new end when it completes.

        Standalone: one EVALSHA. A cluster cannot run a script over keys in several slots, so there the
        longest prefix is found (per-slot MGET) and taken with GETDEL, a single-key step that only one
        caller wins; a loser looks again below what it lost."""
        if not fingerprints:
            return None
        keys = [self.key("conv", owner, route, fp) for fp in fingerprints]
        if not self.cluster:
            found = await self._take_script(keys=keys)
            return (int(found[0]), str(found[1])) if found else None
        values = await self._mget(keys)
        for index in range(len(values) - 1, -1, -1):
            if values[index] is None:
                continue
            taken = await self.redis.getdel(keys[index])
            if taken is not None:
                return index, str(taken)
        return None

    @translated
    async def bind_conversation_id(self, owner: str, route: str, conversation_id: str, value: str) -> None:
        key = self.key("conv", owner, route, "id", conversation_id)
        await self.redis.set(key, value, px=self.thread_ttl_ms)

    @translated
    async def conversation_by_id(self, owner: str, route: str, conversation_id: str) -> str | None:
        """The conversation's cursor; reading it renews its TTL (so a follow-up need not write it again)."""
        key = self.key("conv", owner, route, "id", conversation_id)
        value: str | None = await self.commands.call(("GETEX", key, "PX", self.thread_ttl_ms), key=key)
        return value

    @translated
    async def claim_items(self, item_ids: Sequence[str], owner: str) -> None:
        """Foundry v2 items belong to the owner whose turn produced them, or whose conversation call
        relayed them (SET NX: first owner wins)."""
        async with self.redis.pipeline(transaction=False) as pipe:  # per node on a cluster
            for item_id in item_ids:
                pipe.set(self.key("owned", "item", item_id), owner, nx=True, px=self.response_ttl_ms)
            await pipe.execute()

    # -- tool calls ------------------------------------------------------------------------------

    @translated
    async def save_calls(self, records: Sequence[CallRecord], ttl_s: float) -> None:
        # One transaction on a standalone Redis; on a cluster the keys sit in different slots, and
        # each SET is complete on its own (a caller that sees an error retries or fails the turn).
        async with self.redis.pipeline(transaction=not self.cluster) as pipe:
            for record in records:
                pipe.set(self.key("call", record.call_id), json.dumps(asdict(record)), px=int(ttl_s * 1000))
            await pipe.execute()

    @translated
    async def get_calls(self, call_ids: Sequence[str], owner: str) -> list[CallRecord | None]:
        raw = await self._mget([self.key("call", c) for c in call_ids])
        records = [_call_from(r) for r in raw]
        return [r if r is not None and r.owner == owner else None for r in records]

    async def get_call(self, call_id: str, owner: str) -> CallRecord | None:
        return (await self.get_calls([call_id], owner))[0]

    @translated
    async def delete_calls(self, call_ids: Sequence[str]) -> None:
        if call_ids:
            await self.redis.delete(*[self.key("call", c) for c in call_ids])  # per slot on a cluster

    # -- responses -------------------------------------------------------------------------------

    @translated
    async def save_response(self, rec: ResponseRecord) -> None:
        body = {k: v for k, v in asdict(rec).items() if _RESPONSE_DEFAULTS.get(k, ...) != v}
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        await self.redis.set(self.key("resp", rec.response_id), raw, px=self.response_ttl_ms)

    @translated
    async def get_response(self, response_id: str, owner: str) -> ResponseRecord | None:
        return (await self.get_responses([response_id], owner))[0]

    @translated
    async def get_responses(self, response_ids: Sequence[str], owner: str) -> list[ResponseRecord | None]:
        """Several records in one round trip (per node on a cluster), each None unless the owner's; each
        record found is renewed (a response in use keeps its record)."""
        raws = await self._renewed([self.key("resp", r) for r in response_ids])
        records = [None if raw is None else ResponseRecord(**(_RESPONSE_DEFAULTS | json.loads(raw))) for raw in raws]
        return [r if r is not None and r.owner == owner else None for r in records]

    @translated
    async def delete_response(self, response_id: str) -> None:
        await self.redis.delete(self.key("resp", response_id))

    # -- files -----------------------------------------------------------------------------------

    @translated
    async def save_files(self, records: Sequence[FileRecord]) -> None:
        """First owner wins (SET NX): a file id another owner's turn recorded is never taken over."""
        for record in records:  # one key each, in any slot; a turn shows a handful of files at most
            raw = json.dumps(asdict(record), separators=(",", ":"))
            await self.redis.set(self.key("file", record.file_id), raw, nx=True, px=self.response_ttl_ms)

    @translated
    async def get_file(self, file_id: str, owner: str) -> FileRecord | None:
        raw = (await self._renewed([self.key("file", file_id)]))[0]
        if raw is None:
            return None
        record = FileRecord(**json.loads(raw))
        return record if record.owner == owner else None
