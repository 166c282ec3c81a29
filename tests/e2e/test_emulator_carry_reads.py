"""What a carry reads and writes, on the emulator through the official clients: classic messages and run steps
paged (`limit` <= 100, `order`, `after`, `before`), conversations created and filled 20 items at a time."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai import AzureOpenAI

from tests.support.servers import ServerThread

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")


@pytest.fixture
def aoai(emulator: ServerThread) -> Iterator[AzureOpenAI]:
    with AzureOpenAI(azure_endpoint=emulator.url, api_key="k", api_version="2024-05-01-preview", max_retries=0) as c:
        yield c


def test_thread_messages_page_in_both_orders_with_after_and_before(aoai: AzureOpenAI) -> None:
    thread = aoai.beta.threads.create(messages=[{"role": "user", "content": f"m{i}"} for i in range(125)])
    extra = [aoai.beta.threads.messages.create(thread.id, role="user", content=f"m{i}") for i in range(125, 130)]
    first = aoai.beta.threads.messages.list(thread.id, order="asc", limit=100)
    assert len(first.data) == 100 and first.has_more
    texts = [m.content[0].text.value for m in first]  # type: ignore[union-attr]
    assert texts == [f"m{i}" for i in range(130)]
    newest = aoai.beta.threads.messages.list(thread.id, limit=2)  # default order: desc
    assert [m.id for m in newest.data] == [extra[-1].id, extra[-2].id]
    before = aoai.beta.threads.messages.list(thread.id, order="asc", before=extra[0].id, limit=100)
    assert len(before.data) == 100 and not {m.id for m in before.data} & {m.id for m in extra}
    with pytest.raises(openai.BadRequestError, match="limit"):
        aoai.beta.threads.messages.list(thread.id, limit=101)


def test_conversations_take_at_most_twenty_items_per_create_and_per_add(emulator: ServerThread) -> None:
    from azure.ai.projects import AIProjectClient

    from tests.e2e.test_emulator_foundry_v2 import StaticCredential

    items = [{"type": "message", "role": "user", "content": f"i{n}"} for n in range(21)]
    project = AIProjectClient(endpoint=f"{emulator.url}/api/projects/demo", credential=StaticCredential())
    with project, project.get_openai_client() as client:
        with pytest.raises(openai.BadRequestError, match="maximum length 20"):
            client.conversations.create(items=items)  # type: ignore[arg-type]
        conversation = client.conversations.create(items=items[:20])  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match="maximum length 20"):
            client.conversations.items.create(conversation.id, items=items)  # type: ignore[arg-type]
        client.conversations.items.create(conversation.id, items=items[20:])  # type: ignore[arg-type]
        listed = list(client.conversations.items.list(conversation.id, order="asc", limit=100))
        assert len(listed) == 21
