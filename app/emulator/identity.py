"""Placeholder: to be implemented."""

from __future__ import annotations

from starlette.routing import BaseRoute

from app.emulator.hooks import EmulatorContext


def build(ctx: EmulatorContext) -> list[BaseRoute]:
    return []
