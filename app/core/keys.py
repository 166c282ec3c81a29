"""Client keys: who is calling (the owner of what they create), which models they may use, admin or not.

Keys are kept only as SHA-256 digests and compared in constant time against every configured key, so
neither timing nor logs reveal one. No key configured means open mode, only when asked for in so many
words (`open_mode: true`): one `anonymous` owner, never an admin.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from app.errors import AuthenticationError, ModelNotFoundError, PermissionDeniedError
from app.settings import KeySettings, Settings

ANONYMOUS = "anonymous"

NO_KEYS = (
    "no client keys are configured. Set `keys` in the config file (or AGENT_BRIDGE_API_KEYS="
    '"name:key,..."), or, to run without keys (every caller is the one owner "anonymous" and the admin '
    "API stays closed), set `open_mode: true` (env AGENT_BRIDGE_OPEN_MODE=true)"
)


def keys_problem(settings: Settings) -> str | None:
    """Why this config must not serve: no keys and open mode not asked for (None when it may)."""
    if settings.keys or settings.open_mode:
        return None
    return NO_KEYS


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


OPEN = Principal(name=ANONYMOUS, models=None, admin=False)


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

    def authenticate_admin(self, authorization: str | None, what: str) -> Principal:
        """An admin key's principal. Open mode has none: every caller gets 401, whatever it sends."""
        if self.open_mode:
            raise AuthenticationError(
                f"{what} needs an admin key, and this bridge runs in open mode (no keys are configured). "
                "Configure an admin key (`keys: [{name, key, admin: true}]`) to use it.",
                code="invalid_api_key",
            )
        principal = self.authenticate(authorization)
        if not principal.admin:
            raise PermissionDeniedError(f"{what} needs an admin key.")
        return principal
