"""A turn's Redis commands, each in a span of the turn's trace (used only while tracing is on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.core import tracing
from app.state.commands import Commands, Script
from app.state.resp import Command


class TracedCommands:
    """`Commands` whose every call, batch, transaction and script is a child span of the turn's."""

    def __init__(self, inner: Commands) -> None:
        self.inner = inner

    async def call(self, command: Command, *, key: str) -> Any:
        with tracing.redis_span(str(command[0])):
            return await self.inner.call(command, key=key)

    async def batch(self, commands: Sequence[Command], *, key: str) -> list[Any]:
        with tracing.redis_span("pipeline " + " ".join(sorted({str(c[0]) for c in commands}))):
            return await self.inner.batch(commands, key=key)

    async def transaction(self, commands: Sequence[Command], *, key: str) -> list[Any]:
        with tracing.redis_span("MULTI " + " ".join(sorted({str(c[0]) for c in commands}))):
            return await self.inner.transaction(commands, key=key)

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        with tracing.redis_span("EVALSHA"):
            return await self.inner.script(script, keys, args)

    async def reauthenticate(self, user: str, token: str) -> None:
        await self.inner.reauthenticate(user, token)

    async def aclose(self) -> None:
        await self.inner.aclose()
