"""The Redis side of limits and usage (app/state/accounting.py) on a standalone Redis and on a cluster:
admission checks and counts in one script, a turn's end adds its usage, a crashed turn's in-flight entry
lapses, and the day buckets read back as rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.core.metering import Account, Quota
from app.state.accounting import Accounting, day_of
from app.state.connect import build

NOW = 1_796_600_000.0  # early in a minute (20 s in), so NOW + a few seconds is the same minute


@pytest.fixture(params=["standalone", "cluster"])
async def accounting(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Accounting]:
    url = request.getfixturevalue("redis_url" if request.param == "standalone" else "redis_cluster_url")
    connection = build(url)
    try:
        yield Accounting(connection.client, prefix=redis_prefix, in_flight_lapse_s=30.0, commands=connection.commands)
    finally:
        await connection.aclose()


async def test_admission_counts_and_refuses_at_the_limit(accounting: Accounting) -> None:
    quota = Quota(requests_per_minute=2, tokens_per_minute=10)
    first = await accounting.admit("alice", quota, "", now=NOW)
    second = await accounting.admit("alice", quota, "", now=NOW + 1)
    third = await accounting.admit("alice", quota, "", now=NOW + 2)
    assert (first.denied, first.requests, second.requests) == (0, 1, 2)
    assert (third.denied, third.requests) == (1, 2)  # refused, and not counted
    assert (await accounting.admit("alice", quota, "", now=NOW + 60)).denied == 0  # the next minute
    # Tokens are counted when a turn ends, in the minute and the day.
    account = Account(owner="bob", route="r", limited=True)
    account.used(7, 5)
    await accounting.settle(account, error=False, now=NOW)
    bob = await accounting.admit("bob", Quota(tokens_per_minute=10, tokens_per_day=100), "", now=NOW + 1)
    assert (bob.denied, bob.minute_tokens, bob.day_tokens) == (2, 12, 12)


async def test_a_turn_in_flight_is_released_at_its_end_and_lapses_if_it_never_ends(accounting: Accounting) -> None:
    quota = Quota(turns_in_flight=1)
    assert (await accounting.admit("carol", quota, "t1", now=NOW)).denied == 0
    assert (await accounting.admit("carol", quota, "t2", now=NOW + 1)).denied == 4
    await accounting.settle(Account(owner="carol", route="r", limited=True, admitted="t1"), error=False, now=NOW + 2)
    assert (await accounting.admit("carol", quota, "t3", now=NOW + 3)).in_flight == 1
    # t3's replica dies: nothing releases it, and it lapses after the lapse time (30 s here).
    assert (await accounting.admit("carol", quota, "t4", now=NOW + 20)).denied == 4
    assert (await accounting.admit("carol", quota, "t5", now=NOW + 34)).denied == 0


async def test_usage_rows_add_up_by_owner_and_route(accounting: Accounting) -> None:
    for owner, route, tokens, error in [("a", "x", (3, 4), False), ("a", "x", (1, 1), True), ("a", "y", (2, 0), False)]:
        account = Account(owner=owner, route=route, tool_round=error)
        account.used(*tokens)
        await accounting.settle(account, error=error, now=NOW)
    await accounting.settle(Account(owner="b", route="x", background=True), error=False, now=NOW + 86400)
    day, next_day = day_of(NOW), day_of(NOW + 86400)
    rows = await accounting.usage([day, next_day], group_by=("owner", "route"))
    assert rows == [
        {"owner": "a", "route": "x", "turns": 2, "input_tokens": 4, "output_tokens": 5, "total_tokens": 9,
         "errors": 1, "tool_rounds": 1, "background": 0},
        {"owner": "a", "route": "y", "turns": 1, "input_tokens": 2, "output_tokens": 0, "total_tokens": 2,
         "errors": 0, "tool_rounds": 0, "background": 0},
        {"owner": "b", "route": "x", "turns": 1, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
         "errors": 0, "tool_rounds": 0, "background": 1},
    ]  # fmt: skip
    by_route = await accounting.usage([day], group_by=("route",))
    assert [(r["owner"], r["route"], r["turns"]) for r in by_route] == [("*", "x", 2), ("*", "y", 1)]
