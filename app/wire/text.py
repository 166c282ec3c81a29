"""Text a request may carry: every string must encode as UTF-8 (no lone surrogates)."""

from __future__ import annotations

from typing import Any

from app.errors import InvalidRequestError


def _bad(value: str) -> bool:
    if value.isascii():
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


def _first_bad(value: Any) -> list[str | int] | None:
    """The keys down to the first unencodable string, innermost first; None when all text encodes.
    The path is built only on the way out of a failure: a valid body (nearly every one) costs one
    walk and no string formatting."""
    if isinstance(value, str):
        return [] if _bad(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _bad(key):
                return []
            found = _first_bad(item)
            if found is not None:
                found.append(key)
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_bad(item)
            if found is not None:
                found.append(index)
                return found
    return None


def unencodable(value: Any, where: str = "") -> str | None:
    """The path (`messages[0].content`) of the first string in a parsed JSON body that UTF-8 cannot
    encode, or None. JSON's `\\ud800` escape parses to such a string; it would fail later, when the
    bridge encodes the text for Azure or hashes it."""
    keys = _first_bad(value)
    if keys is None:
        return None
    path = where
    for key in reversed(keys):
        path = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
    return path or "body"


PARSED_AS_JSON: dict[str, Any] = {"text": "parsed as JSON by pydantic"}
"""The validation context of a body given to `model_validate_json` as bytes: pydantic's JSON parser
refuses lone surrogates and invalid UTF-8, so its strings always encode and `check_text` skips its walk."""


def check_text(body: Any, context: Any = None) -> Any:
    """A `model_validator(mode="before")`: refuse a body holding text that cannot be encoded."""
    if context is PARSED_AS_JSON:
        return body
    found = unencodable(body)
    if found is not None:
        raise InvalidRequestError(
            f"Invalid value for '{found}': the text holds a lone UTF-16 surrogate (such as \\ud800) "
            "and cannot be encoded as UTF-8; send valid Unicode text.",
            param=found,
            code="invalid_text",
        )
    return body
