"""Fixtures of the end-to-end fault tests that run the bridge (and its CLI) as processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.bridge import managed_identity
from tests.support.servers import ServerThread


@pytest.fixture
def process_identity(emulator: ServerThread) -> Iterator[None]:
    """Bridge processes (and the CLI) inherit the environment: their Entra credential on project
    routes comes from the emulator's managed identity, as in-process bridges' does."""
    with managed_identity(emulator.url):
        yield
