"""Who may use which id: the one place that decides, failing closed.

An id a client names (a previous response, a conversation, an item, a file) is usable by a key only
when the bridge recorded it as that key's. An id with no record (made outside the bridge, by
another key, while the bridge ran without keys, or whose record expired) is answered exactly as
Azure answers an unknown id, and never reaches Azure. All the ids of one request are looked up
together (`OwnerIndex.owners`: one Redis round trip, which also renews each record found).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from app.core import ids
from app.errors import BridgeError, InvalidRequestError, NotFoundError

Kind = Literal["response", "conversation", "item", "file"]


@dataclass(frozen=True)
class Owned:
    """What an ownership record says: the owner, and the route where the record names one."""

    owner: str
    route: str | None = None


@dataclass(frozen=True)
class Ref:
    """One id a request names, and the `param` an error about it names."""

    kind: Kind
    id: str
    param: str


class OwnerIndex(Protocol):
    async def owners(self, refs: Sequence[tuple[Kind, str]]) -> list[Owned | None]:
        """Each ref's record (None: none), renewed, in one round trip."""
        ...


def unknown(ref: Ref) -> BridgeError:
    """The answer to an id that is not the caller's: Azure's answer to an id it does not know."""
    if ref.kind == "response":
        return NotFoundError(
            f"Previous response with id '{ref.id}' not found.", param=ref.param, code="previous_response_not_found"
        )
    if ref.kind == "conversation":
        return NotFoundError(f"Conversation with id '{ref.id}' not found.", param=ref.param)
    if ref.kind == "file":
        return InvalidRequestError(f"File with id '{ref.id}' not found.", param=ref.param, code="file_not_found")
    return InvalidRequestError(f"Item with id '{ref.id}' not found.", param=ref.param)


async def check(index: OwnerIndex, refs: Sequence[Ref], *, owner: str, route: str | None = None) -> list[Owned]:
    """Every ref is the owner's (and, where its record names a route, on `route`), else `unknown(ref)`."""
    if not refs:
        return []
    found = await index.owners([(r.kind, r.id) for r in refs])
    for ref, record in zip(refs, found, strict=True):
        if record is None or record.owner != owner or (route is not None and record.route not in (None, route)):
            raise unknown(ref)
    return [r for r in found if r is not None]


_SKIP = object()


def input_refs(items: Any, where: str, rules: ids.IdRules, *, stored_items: bool = True) -> list[Ref]:
    """The ids a list of Responses input items names, each checked against the grammar (a 400 naming it),
    within the bounds: item references and stored items by `id` (`stored_items`), files by `file_id`.

    Call ids (`call_id`, `approval_request_id`) are checked for grammar only: Azure resolves them within
    the response or conversation the request continues, which is checked itself."""
    if not isinstance(items, list):
        return []
    if len(items) > rules.max_input_items:
        ids.too_many("input items", len(items), rules.max_input_items, where)
    refs = list(_walk(items, where, rules, stored_items))
    if len(refs) > rules.max_referenced_ids:
        ids.too_many("referenced ids", len(refs), rules.max_referenced_ids, where)
    return refs


def _walk(items: list[Any], where: str, rules: ids.IdRules, stored_items: bool) -> Iterator[Ref]:
    for i, raw in enumerate(items):
        if not isinstance(raw, dict):
            continue
        at = f"{where}[{i}]"
        if "id" in raw and raw.get("id") is not None:
            item_id = ids.body_id(raw["id"], f"{at}.id", rules.max_length)
            if stored_items or raw.get("type") == "item_reference":
                yield Ref("item", item_id, f"{at}.id")
        for field in ("call_id", "approval_request_id"):
            if raw.get(field) is not None:
                ids.body_id(raw[field], f"{at}.{field}", rules.max_length)
        content = raw.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("file_id") is not None:
                    param = f"{at}.content[{j}].file_id"
                    yield Ref("file", ids.body_id(part["file_id"], param, rules.max_length), param)


def tool_ids(tools: Any, rules: ids.IdRules) -> None:
    """Ids inside a Responses body's tools (a code-interpreter `container` and its `file_ids`, file
    search's `vector_store_ids`): grammar only, as the bridge never relays a client's tools to a
    Foundry v2 agent (it declares its own: `backends/foundry/overrides.py`)."""
    if not isinstance(tools, list):
        return
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            continue
        container = tool.get("container")
        if isinstance(container, str):
            ids.body_id(container, f"tools[{i}].container", rules.max_length)
        listed_ids = {"vector_store_ids": tool.get("vector_store_ids")}
        if isinstance(container, dict):
            listed_ids["container.file_ids"] = container.get("file_ids")
        for name, values in listed_ids.items():
            for j, value in enumerate(values if isinstance(values, list) else []):
                ids.body_id(value, f"tools[{i}].{name}[{j}]", rules.max_length)


def conversation_of(value: Any, rules: ids.IdRules) -> Ref | None:
    """The `conversation` of a Responses body (an id, or `{"id": ...}`), checked against the grammar."""
    if value is None:
        return None
    raw = value.get("id") if isinstance(value, dict) else value
    param = "conversation.id" if isinstance(value, dict) else "conversation"
    return Ref("conversation", ids.body_id(raw, param, rules.max_length), param)


def listed(answer: Any, max_length: int) -> list[str]:
    """The ids of a list answer's items (`{"data": [{"id": ...}, ...]}`): what a listing showed its caller."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        return []
    return [i["id"] for i in data if isinstance(i, dict) and ids.is_id(i.get("id"), max_length)]
