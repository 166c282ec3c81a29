"""Client keys: config and env sources, sha256 entries, constant-time lookup, model scoping."""

from __future__ import annotations

import hashlib

import pytest

from app.core.keys import ANONYMOUS, KeyRing
from app.errors import AuthenticationError, ConfigError, ModelNotFoundError
from app.settings import load_settings

ROUTES = {
    "a": {"endpoint": "http://x", "assistant_id": "asst_1", "auth": {"type": "api_key", "api_key": "k"}},
    "b": {"endpoint": "http://x", "assistant_id": "asst_2", "auth": {"type": "api_key", "api_key": "k"}},
}


def test_open_mode_is_one_anonymous_admin_owner() -> None:
    ring = KeyRing([])
    assert ring.open_mode
    principal = ring.authenticate(None)
    assert principal.name == ANONYMOUS and principal.admin and principal.may_use("anything")


def test_config_keys_by_value_or_digest_and_env_keys() -> None:
    digest = hashlib.sha256(b"ops-key-0123456789abcdef").hexdigest()
    settings = load_settings(
        None,
        env={"AGENT_BRIDGE_API_KEYS": "team-x:team-x-key-0123456789, team-y:team-y-key-0123456789"},
        routes=ROUTES,
        keys=[
            {"name": "scoped", "key": "scoped-key-0123456789", "models": ["a"]},
            {"name": "ops", "sha256": digest, "admin": True},
        ],
    )
    ring = KeyRing(settings.keys)
    assert ring.authenticate("Bearer ops-key-0123456789abcdef").admin
    scoped = ring.authenticate("bearer scoped-key-0123456789")
    assert scoped.may_use("a") and not scoped.may_use("b")
    with pytest.raises(ModelNotFoundError):
        scoped.check_model("b")
    assert ring.authenticate("Bearer team-y-key-0123456789").name == "team-y"
    for bad in (None, "", "Bearer", "Basic scoped-key-0123456789", "Bearer nope"):
        with pytest.raises(AuthenticationError):
            ring.authenticate(bad)
    assert "scoped-key" not in repr(settings)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([{"name": "x", "key": "short"}], "at least 16"),
        ([{"name": "x", "key": "k" * 20, "sha256": "0" * 64}], "exactly one of key or sha256"),
        ([{"name": "x", "key": "k" * 20}, {"name": "x", "key": "j" * 20}], "unique"),
        ([{"name": "x", "key": "k" * 20, "models": ["ghost"]}], "unknown models ['ghost']"),
    ],
)
def test_invalid_keys_are_config_errors(keys: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={}, routes=ROUTES, keys=keys)
    assert message in str(info.value)


def test_malformed_env_keys() -> None:
    with pytest.raises(ConfigError):
        load_settings(None, env={"AGENT_BRIDGE_API_KEYS": "no-colon-here"}, routes=ROUTES)
