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


def classic_client(emulator: ServerThread, project: str) -> httpx.Client:
    """A Foundry project's classic Assistants paths, with an Entra bearer token and `api-version=v1`."""
    return httpx.Client(
        base_url=f"{emulator.url}/api/projects/{project}",
        headers={"Authorization": "Bearer t"},
        params={"api-version": "v1"},
    )


@pytest.fixture
def classic(emulator: ServerThread) -> Iterator[httpx.Client]:
    """The classic paths of the project `demo`."""
    with classic_client(emulator, "demo") as c:
        yield c
