"""The id grammar: which client-supplied ids the bridge will look up, record or relay, and how many.

Azure's object ids (`resp_…`, `conv_…`, `msg_…`, `fc_…`, `call_…`, `thread_…`, `assistant-…`,
`cntr_…`, `cfile_…`) are made of ASCII letters, digits, `_` and `-`. Every id a client sends (in a
path, a query or a body) is checked against that grammar and a length cap *before* any lookup,
claim or upstream call: a path id that fails is the 404 an unknown id gets (the caller learns
nothing more), a body id that fails is a 400 naming its `param`. `X-Conversation-Id` is the
client's own name for a conversation, never sent to Azure: it has its own, wider grammar.

An id that passed is still put into upstream URLs through `segment` (one percent-encoded path
segment), so no id can ever become a `/`, `?`, `#` or `..` of an upstream URL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import quote

from app.errors import BridgeError, InvalidRequestError
from app.settings import LimitSettings

AZURE_ID = re.compile(r"[A-Za-z0-9_-]+")
"""Azure's ids: ASCII letters, digits, `_`, `-` (nothing a URL or a Redis key pattern reads specially)."""

CONVERSATION_NAME = re.compile(r"[A-Za-z0-9._:@+=/-]+")
"""`X-Conversation-Id`: a client's own name (a UUID, an e-mail, `tenant/chat-7`); printable ASCII
without spaces, quotes, braces (Redis hash tags), `*?[]` (key patterns), `%`, `#` or `\\`."""

CONVERSATION_NAME_MAX = 256

LIST_LIMIT_MAX = 100
"""OpenAI's list endpoints take `limit` from 1 to 100."""


@dataclass(frozen=True)
class IdRules:
    """The bounds a request is held to (from `limits` in the settings)."""

    max_length: int = 128
    max_input_items: int = 1000
    max_referenced_ids: int = 100


def is_id(value: object, max_length: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_length and AZURE_ID.fullmatch(value) is not None


def shown(value: str, max_length: int) -> str:
    """An id as an error message may echo it: never longer than the cap (an overlong id is cut)."""
    return value if len(value) <= max_length else value[:max_length] + "…"


def body_id(value: object, param: str, max_length: int) -> str:
    """A body or query id: the id, or a 400 naming `param`."""
    if isinstance(value, str) and is_id(value, max_length):
        return value
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"Invalid '{param}': expected an id string.", param=param, code="invalid_id")
    if len(value) > max_length:
        raise InvalidRequestError(
            f"Invalid '{param}': ids are at most {max_length} characters; this one has {len(value)}.",
            param=param,
            code="id_too_long",
        )
    raise InvalidRequestError(
        f"Invalid '{param}': '{shown(value, max_length)}' is not an id (ids are letters, digits, '_' and '-').",
        param=param,
        code="invalid_id",
    )


def path_id(value: str, max_length: int, unknown: Callable[[str], BridgeError]) -> str:
    """A path id: the id, or exactly the error an unknown id gets (`unknown(shown id)`)."""
    if not is_id(value, max_length):
        raise unknown(shown(value, max_length))
    return value


def conversation_name(value: str | None) -> str | None:
    """`X-Conversation-Id`, checked against its own grammar (a 400 naming the header)."""
    if value is None:
        return None
    if 0 < len(value) <= CONVERSATION_NAME_MAX and CONVERSATION_NAME.fullmatch(value):
        return value
    raise InvalidRequestError(
        f"Invalid X-Conversation-Id: 1 to {CONVERSATION_NAME_MAX} characters of letters, digits and ._:@+=/-",
        param="X-Conversation-Id",
        code="invalid_conversation_id",
    )


def segment(value: str) -> str:
    """An id as one upstream URL path segment: `/`, `?`, `#`, `%` and `.` can never reshape the URL."""
    encoded = quote(value, safe="")
    # `quote` leaves `.` alone; a segment of only dots would still walk up the path.
    return encoded.replace(".", "%2E") if encoded.strip(".") == "" else encoded


def too_many(what: str, count: int, bound: int, param: str) -> NoReturn:
    raise InvalidRequestError(
        f"Too many {what}: {count}; this bridge accepts at most {bound} per request.",
        param=param,
        code=f"too_many_{what.replace(' ', '_')}",
    )


def list_limit(raw: str | None, *, default: int = 20) -> int:
    """A list endpoint's `limit`: an integer from 1 to 100 in ASCII digits, else a 400."""
    if raw is None:
        return default
    if raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= LIST_LIMIT_MAX:
        return int(raw)
    raise InvalidRequestError(
        f"Invalid value for 'limit': expected an integer from 1 to {LIST_LIMIT_MAX}.",
        param="limit",
        code="invalid_limit",
    )


def list_params(params: dict[str, str], max_length: int) -> dict[str, str]:
    """A list endpoint's query, checked: `limit` an integer, `after`/`before` ids, `order` asc or desc."""
    if "limit" in params:
        params["limit"] = str(list_limit(params["limit"]))
    for cursor in ("after", "before"):
        if cursor in params:
            body_id(params[cursor], cursor, max_length)
    if params.get("order", "asc") not in ("asc", "desc"):
        raise InvalidRequestError("Invalid value for 'order': expected 'asc' or 'desc'.", param="order")
    return params


def rules_of(limits: LimitSettings) -> IdRules:
    return IdRules(
        max_length=limits.max_id_length,
        max_input_items=limits.max_input_items,
        max_referenced_ids=limits.max_referenced_ids,
    )
