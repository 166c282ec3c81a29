"""Client keys: who is calling (the owner of what they create), which models they may use, admin or not.

Keys are kept only as SHA-256 digests and compared in constant time against every configured key, so
neither timing nor logs reveal one. No key configured means open mode: one `anonymous` owner.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from app.errors import AuthenticationError, ModelNotFoundError
from app.settings import KeySettings

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Principal:
    name: str
    models: frozenset[str] | None
    """None: every configured model."""
    admin: bool

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def check_model(self, model: str) -> None:
        """A model this key may not use looks exactly like a model that does not exist."""
        if not self.may_use(model):
            raise ModelNotFoundError(
                f"The model '{model}' does not exist or you do not have access to it.", param="model"
            )


OPEN = Principal(name=ANONYMOUS, models=None, admin=True)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    def __init__(self, keys: Iterable[KeySettings]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        for key in keys:
            hashed = bytes.fromhex(key.sha256) if key.sha256 else digest(key.key or "")
            models = None if "*" in key.models else frozenset(key.models)
            self._entries.append((hashed, Principal(name=key.name, models=models, admin=key.admin)))

    @property
    def open_mode(self) -> bool:
        return not self._entries

    def authenticate(self, authorization: str | None) -> Principal:
        """`Authorization: Bearer <key>` -> the key's principal; 401 when missing or unknown."""
        if self.open_mode:
            return OPEN
        if not authorization:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("Send the API key as 'Authorization: Bearer <key>'.", code="invalid_api_key")
        presented = digest(token)
        found: Principal | None = None
        for hashed, principal in self._entries:
            # Compare against every entry: the time taken does not depend on which one matches.
            if hmac.compare_digest(presented, hashed):
                found = principal
        if found is None:
            raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
        return found
