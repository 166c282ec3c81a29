"""A turn's Redis commands, each in a span of the turn's trace (used only while tracing is on)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.core import tracing
from app.state.commands import Commands, Script
from app.state.resp import Arg


class TracedCommands:
    """`Commands` whose every call and script is a child span of the turn's."""

    def __init__(self, inner: Commands) -> None:
        self.inner = inner

    async def call(self, command: Sequence[Arg], *, key: str) -> Any:
        with tracing.redis_span(str(command[0])):
            return await self.inner.call(command, key=key)

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        with tracing.redis_span("EVALSHA"):
            return await self.inner.script(script, keys, args)

    async def reauthenticate(self, user: str, token: str) -> None:
        await self.inner.reauthenticate(user, token)

    async def aclose(self) -> None:
        await self.inner.aclose()
