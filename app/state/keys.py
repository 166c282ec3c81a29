"""The key layout: every Redis key name the bridge writes, and which hash slot (bucket) it lives in.

Layout 2 (after the prefix, default `ab:`). `{bNNN}` is a hash tag: a thread's record, its lock,
its entry in the idle index and in its owner's index share one bucket, so every multi-key command
or script on a thread stays in one hash slot of a Redis Cluster.

- `thread:{bNNN}:<id>` (hash): route, backend, owner, created_at, last_used_at, turns, metadata.
- `lock:thread:{bNNN}:<id>` (string): the token of the turn holding the thread (SET NX PX).
- `idle:{bNNN}` (zset): the bucket's thread ids scored by last use; the janitor's work list.
- `owner:{bNNN}:<owner>` (set): an owner's thread ids in that bucket.
- `lease:janitor:{bNNN}` (string): the replica sweeping that bucket now.
- `conv:<owner>:<route>:<fp>`, `conv:<owner>:<route>:id:<conversation>` (string): a conversation's cursor.
- `call:<call_id>` (string), `resp:<id>` (string), `owned:conversation:<id>` (string), `owned:item:<id>`
  (string: the owner of a Foundry v2 output item), `file:<id>` (string: the route and owner of a file a
  turn showed, response TTL).
- `conversation:<id>` (hash): a conversation the bridge holds (`conv_<48 hex>`): owner, route, the thread
  behind it (Assistants routes) or its history (agent-endpoint routes), metadata.
- `history:<id>` (list): the items an agent-endpoint conversation or response chain holds, one JSON each.
- `item:<id>` (string): the agent-endpoint response whose output the item is (for `item_reference`).
- `bg:{<id>}` (hash), `bg:{<id>}:events` (stream), `bg:{<id>}:runner` (string): a background response's
  state, its event log and the lease of the replica running it (`app.state.run_log`); the response id is
  the hash tag, so the three share one slot.
- `lease:<name>` (string): other leases (the layout migration).
- `carried:{bNNN}:<id>` (string): the Foundry v2 conversation a thread was carried to, with its owner and
  route (`app.state.carry_store`); in the thread's bucket, so the switch is one transaction.
- `carry:<route>` (hash): conversations of a route carried and failed (the flip-back guard, metrics).
- `tools:<route>` (hash): function tool schemas clients sent on an Assistants route, by name (bounded).
- `probe:<name>` (string): the readiness probe's own key, seconds-lived.
- `usage:{u:<owner>}:<YYYY-MM-DD>` (hash, `<metric>:<route>` -> count): an owner's usage that day (UTC);
  `usage:owners` (set): every owner with usage. `rate:{u:<owner>}:m:<minute>` (hash: requests, tokens),
  `rate:{u:<owner>}:d:<YYYY-MM-DD>` (string: tokens) and `inflight:{u:<owner>}` (zset: turn tokens scored
  by when they lapse): a limited key's counters. An owner's keys share the hash tag `{u:<owner>}`, so a
  turn's admission and its end are one script each, in one slot (`app.state.accounting`).
- `registry` (hash): the registry marker, written once when the registry is created; its loss is a
  lost store (`app.state.marker`).

Layout 1 (before buckets) kept `thread:<id>`, `threads:idle` and `owner:<owner>:threads`;
`app.state.migrate` moves a registry from it.
"""

from __future__ import annotations

import zlib

BUCKETS = 256
"""Fixed: a thread's bucket is derived from its id, so changing this would lose every thread.
256 buckets keep each bucket's zset at ~40k entries for 10 million threads and spread over any
cluster of up to a few dozen shards."""


def bucket_of(thread_id: str) -> int:
    return zlib.crc32(thread_id.encode()) % BUCKETS


def tag(bucket: int) -> str:
    return f"{{b{bucket:03d}}}"


class Keys:
    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix must not contain '{' or '}' (they make hash tags)")
        self.prefix = prefix

    def raw(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def thread(self, thread_id: str) -> str:
        return f"{self.prefix}thread:{tag(bucket_of(thread_id))}:{thread_id}"

    def lock(self, thread_id: str) -> str:
        return f"{self.prefix}lock:thread:{tag(bucket_of(thread_id))}:{thread_id}"

    def idle(self, bucket: int) -> str:
        return f"{self.prefix}idle:{tag(bucket)}"

    def idle_of(self, thread_id: str) -> str:
        return self.idle(bucket_of(thread_id))

    def owner(self, bucket: int, owner: str) -> str:
        return f"{self.prefix}owner:{tag(bucket)}:{owner}"

    def janitor_lease(self, bucket: int) -> str:
        return f"{self.prefix}lease:janitor:{tag(bucket)}"

    def carried(self, thread_id: str) -> str:
        return f"{self.prefix}carried:{tag(bucket_of(thread_id))}:{thread_id}"

    # An owner's usage and limit counters: one hash tag per owner (owner names hold no braces).
    def usage(self, owner: str, day: str) -> str:
        return f"{self.prefix}usage:{{u:{owner}}}:{day}"

    def usage_owners(self) -> str:
        return f"{self.prefix}usage:owners"

    def rate_minute(self, owner: str, minute: int) -> str:
        return f"{self.prefix}rate:{{u:{owner}}}:m:{minute}"

    def rate_day(self, owner: str, day: str) -> str:
        return f"{self.prefix}rate:{{u:{owner}}}:d:{day}"

    def inflight(self, owner: str) -> str:
        return f"{self.prefix}inflight:{{u:{owner}}}"

    def conversation(self, conversation_id: str) -> str:
        return f"{self.prefix}conversation:{conversation_id}"

    def history(self, chain_id: str) -> str:
        return f"{self.prefix}history:{chain_id}"

    def item(self, item_id: str) -> str:
        return f"{self.prefix}item:{item_id}"

    def background(self, response_id: str) -> str:
        return f"{self.prefix}bg:{{{response_id}}}"

    def background_events(self, response_id: str) -> str:
        return f"{self.prefix}bg:{{{response_id}}}:events"

    def background_runner(self, response_id: str) -> str:
        return f"{self.prefix}bg:{{{response_id}}}:runner"

    def marker(self) -> str:
        return f"{self.prefix}registry"

    # Layout 1, read only by the migration.
    def v1_thread(self, thread_id: str) -> str:
        return self.raw("thread", thread_id)

    def v1_idle(self) -> str:
        return self.raw("threads", "idle")

    def v1_owner(self, owner: str) -> str:
        return self.raw("owner", owner, "threads")
