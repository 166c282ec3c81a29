"""`/v1/conversations` on Foundry v2 routes: relayed to the route's project, every id owner-checked.

A conversation id belongs to the key that created it through the bridge (or first used it); any
other key gets the 404 an unknown id gets. OpenAI's conversation calls name no model, so the project
is the one the key's Foundry v2 routes point at; a key with routes on several projects names one
with `model` (in the body, or `?model=` on the other calls).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from app.errors import InvalidRequestError, ModelNotFoundError, NotFoundError
from app.settings import Settings


class ConversationRelay(Protocol):
    """A route's way to its project's `/openai/v1/conversations` (`FoundryClient` fits)."""

    async def conversation_request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]: ...


class ConversationOwners(Protocol):
    async def claim_conversation(self, conversation_id: str, owner: str) -> bool: ...


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
    def __init__(self, settings: Settings, relays: Mapping[str, ConversationRelay], owners: ConversationOwners) -> None:
        self.settings = settings
        self.relays = relays
        self.owners = owners

    def _relay(self, may_use: Callable[[str], bool], model: str | None) -> ConversationRelay:
        return self.relays[project_route(self.settings, may_use, model)]

    async def _owned(self, conversation_id: str, owner: str) -> None:
        if not await self.owners.claim_conversation(conversation_id, owner):
            raise NotFoundError(f"Conversation with id '{conversation_id}' not found.", param="conversation_id")

    async def create(self, body: dict[str, Any], *, owner: str, may_use: Callable[[str], bool]) -> dict[str, Any]:
        model = body.pop("model", None)
        relay = self._relay(may_use, model if isinstance(model, str) else None)
        created = await relay.conversation_request("POST", "", json=body)
        await self.owners.claim_conversation(str(created["id"]), owner)
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
        """Any other conversation call (get, delete, items list and create), once the id is the owner's."""
        relay = self._relay(may_use, model)
        await self._owned(conversation_id, owner)
        return await relay.conversation_request(method, f"/{conversation_id}{suffix}", json=json, params=params)
