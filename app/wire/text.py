"""Text a request may carry: every string must encode as UTF-8 (no lone surrogates)."""

from __future__ import annotations

from typing import Any

from app.errors import InvalidRequestError


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def unencodable(value: Any, where: str = "") -> str | None:
    """The path (`messages[0].content`) of the first string in a parsed JSON body that UTF-8 cannot
    encode, or None. JSON's `\\ud800` escape parses to such a string; it would fail later, when the
    bridge encodes the text for Azure or hashes it."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode()
        except UnicodeEncodeError:
            return where or "body"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not key.isascii():
                try:
                    key.encode()
                except UnicodeEncodeError:
                    return where or "body"
            found = unencodable(item, _path(where, key))
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = unencodable(item, _path(where, index))
            if found is not None:
                return found
    return None


def check_text(body: Any) -> Any:
    """A `model_validator(mode="before")`: refuse a body holding text that cannot be encoded."""
    found = unencodable(body)
    if found is not None:
        raise InvalidRequestError(
            f"Invalid value for '{found}': the text holds a lone UTF-16 surrogate (such as \\ud800) "
            "and cannot be encoded as UTF-8; send valid Unicode text.",
            param=found,
            code="invalid_text",
        )
    return body
