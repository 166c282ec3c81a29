"""Clients on the emulator's Assistants surfaces, shared by the emulator's integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import ServerThread

VERSION = {"api-version": "2024-05-01-preview"}


@pytest.fixture
def aoai(emulator: ServerThread) -> Iterator[httpx.Client]:
    """The Azure OpenAI Assistants paths, with an api-key and the api-version every call needs."""
    with httpx.Client(base_url=f"{emulator.url}/openai", headers={"api-key": "k"}, params=VERSION) as c:
        yield c
