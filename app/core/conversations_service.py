"""`/v1/conversations` on every route: relayed to a Foundry v2 route's project, held by the bridge elsewhere.

A conversation id belongs to the key that created it through the bridge (or the owner an admin
adopted it for: `agent-bridge conversations adopt`); any other key, and any id the bridge never
recorded, gets the 404 an unknown id gets, and nothing reaches Azure. OpenAI's conversation calls
name no model: a create goes
to the project the key's Foundry v2 routes point at, or, for a key without any, to its only route;
a key with several places names one with `model` (in the body of a create). On an Assistants or
agent-endpoint route the bridge holds the conversation itself (`held_conversations`); every later
call finds it by its id, and any other id is relayed to the key's project (`?model=` picks one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from app.core import ids, ownership
from app.core.held_conversations import HeldConversations, item_not_found, not_found
from app.core.ownership import Kind, OwnerIndex
from app.errors import InvalidRequestError, ModelNotFoundError, NotFoundError
from app.settings import Settings


class ConversationRelay(Protocol):
    """A route's way to its project's `/openai/v1/conversations` (`FoundryClient` fits); the relay puts
    `conversation_id` into the URL as one encoded path segment."""

    async def conversation_request(
        self,
        method: str,
        conversation_id: str | None,
        suffix: str = "",
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]: ...


class ConversationOwners(OwnerIndex, Protocol):
    async def record_conversation(self, conversation_id: str, owner: str) -> bool: ...

    async def claim_items(self, item_ids: Sequence[str], owner: str) -> None: ...

    async def forget(self, kind: Kind, object_id: str) -> None: ...


def creation_route(settings: Settings, may_use: Callable[[str], bool], model: str | None) -> str:
    """Where a new conversation lives: the route `model` names, else the key's v2 project, else its only route."""
    if model is not None:
        if settings.route(model) is None or not may_use(model):
            raise ModelNotFoundError(
                f"The model '{model}' does not exist or you do not have access to it.", param="model"
            )
        return model
    if any(r.backend == "foundry" and may_use(n) for n, r in settings.routes.items()):
        return project_route(settings, may_use, None)
    others = [name for name, route in settings.routes.items() if may_use(name)]
    if len(others) != 1:
        raise InvalidRequestError(
            f"This key may use {len(others)} routes: name the one the conversation is for with 'model' "
            "(in the body of the create; with the openai client, extra_body={'model': ...}).",
            param="model",
            code="missing_required_parameter",
        )
    return others[0]


def project_route(settings: Settings, may_use: Callable[[str], bool], model: str | None) -> str:
    """The route whose project holds the key's conversations (named by `model`, or the only project)."""
    if model is not None:
        route = settings.route(model)
        if route is None or not may_use(model):
            raise ModelNotFoundError(
                f"The model '{model}' does not exist or you do not have access to it.", param="model"
            )
        if route.backend != "foundry":
            raise InvalidRequestError(
                f"The model '{model}' is an Assistants route: conversations are available on Foundry v2 routes; "
                "on Assistants routes continue a conversation with previous_response_id.",
                param="model",
                code="unsupported_on_route",
            )
        return model
    projects: dict[str, str] = {}
    for name, route in settings.routes.items():
        if route.backend == "foundry" and may_use(name):
            projects.setdefault(route.endpoint.rstrip("/"), name)
    if not projects:
        raise InvalidRequestError(
            "Conversations are available on Foundry v2 routes, and this key may use none.", code="no_foundry_route"
        )
    if len(projects) > 1:
        raise InvalidRequestError(
            f"This key's Foundry v2 routes are on {len(projects)} projects: name one with 'model' "
            "(in the body of a create, as ?model= otherwise).",
            param="model",
            code="missing_required_parameter",
        )
    return next(iter(projects.values()))


class ConversationsService:
    def __init__(
        self,
        settings: Settings,
        relays: Mapping[str, ConversationRelay],
        owners: ConversationOwners,
        held: HeldConversations | None = None,
    ) -> None:
        self.settings = settings
        self.relays = relays
        self.owners = owners
        self.held = held
        self.rules = ids.rules_of(settings.limits)

    def _relay(self, may_use: Callable[[str], bool], model: str | None) -> ConversationRelay:
        return self.relays[project_route(self.settings, may_use, model)]

    async def _items_checked(self, body: dict[str, Any], owner: str) -> None:
        """The items of a create or add-items body: grammar, bounds, and every item or file they name the
        owner's (Azure resolves an `item_reference` across the whole project)."""
        keyed = bool(self.settings.keys)
        refs = ownership.input_refs(body.get("items"), "items", self.rules)
        await ownership.check(self.owners, refs if keyed else [], owner=owner)

    async def _record_items(self, answer: dict[str, Any], owner: str) -> None:
        """Items the bridge relayed to their conversation's owner are that owner's (to reference later)."""
        found = ownership.listed(answer, self.rules.max_length) if self.settings.keys else []
        if found:
            await self.owners.claim_items(found, owner)

    async def create(self, body: dict[str, Any], *, owner: str, may_use: Callable[[str], bool]) -> dict[str, Any]:
        model = body.pop("model", None)
        name = creation_route(self.settings, may_use, model if isinstance(model, str) else None)
        # Grammar and bounds on every route; ownership of what the items name where Azure would resolve it.
        await self._items_checked(body, owner)
        backend = self.settings.routes[name].backend
        if backend != "foundry":
            assert self.held is not None
            return await self.held.create(body, route=name, backend=backend, owner=owner)
        created = await self.relays[name].conversation_request("POST", None, json=body)
        await self.owners.record_conversation(str(created["id"]), owner)
        return created

    async def call(
        self,
        method: str,
        conversation_id: str,
        suffix: str = "",
        *,
        owner: str,
        may_use: Callable[[str], bool],
        model: str | None,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Any other conversation call (get, update, delete, items list, add, get, delete), once the id is the
        owner's: on the conversation the bridge holds under that id, else relayed to the key's project.

        An id outside the grammar or without the owner's record is the 404 of an unknown conversation,
        before anything else is read or relayed; nothing is written for it."""
        ids.path_id(conversation_id, self.rules.max_length, not_found)
        item = suffix.removeprefix("/items/")
        if item != suffix:
            ids.path_id(item, self.rules.max_length, item_not_found)
        if params is not None:
            params = ids.list_params(dict(params), self.rules.max_length)
        json_refs = ownership.input_refs(json.get("items"), "items", self.rules) if isinstance(json, dict) else []
        if self.held is not None:
            record = await self.held.store.held_conversation(conversation_id)
            if record is not None:
                if record.owner != owner:
                    raise not_found(conversation_id)
                return await self.held.call(record, method, suffix, json=json, params=params)
        try:
            relay = self._relay(may_use, model)
        except InvalidRequestError as exc:
            if exc.code == "no_foundry_route":  # no project to ask: an id the bridge does not hold is unknown
                raise not_found(conversation_id) from exc
            raise
        ref = ownership.Ref("conversation", conversation_id, "conversation_id")
        keyed = bool(self.settings.keys)
        await ownership.check(self.owners, [ref, *(json_refs if keyed else [])], owner=owner)
        deleting = method == "DELETE" and not suffix
        try:
            answer = await relay.conversation_request(method, conversation_id, suffix, json=json, params=params)
        except NotFoundError as exc:
            if deleting:  # Azure no longer has it: nor does its owner
                await self.owners.forget("conversation", conversation_id)
            # The body the bridge gives for an id it holds not, on every route kind (Azure's code differs).
            if item != suffix and "item" in exc.message.lower():
                raise item_not_found(item) from exc
            raise not_found(conversation_id) from exc
        if deleting:
            await self.owners.forget("conversation", conversation_id)
        else:
            await self._record_items(answer, owner)
        return answer

    async def adopt(self, conversation_id: str, *, owner: str, route: str) -> dict[str, Any]:
        """An admin's act: a conversation made outside the bridge becomes `owner`'s, once Azure confirms it
        exists on `route`'s project. Never done by first use (`call` refuses ids without a record)."""
        ids.body_id(conversation_id, "conversation_id", self.rules.max_length)
        names = {key.name for key in self.settings.keys}
        if names and owner not in names:
            raise InvalidRequestError(f"No client key is named '{owner}'.", param="owner")
        project = project_route(self.settings, lambda name: name == route, route)
        found = await self.relays[project].conversation_request("GET", conversation_id)
        if not await self.owners.record_conversation(conversation_id, owner):
            raise InvalidRequestError(
                f"Conversation '{conversation_id}' belongs to another owner already.", param="conversation_id"
            )
        return found
