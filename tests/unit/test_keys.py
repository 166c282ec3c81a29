"""Client keys: config and env sources, sha256 entries, constant-time lookup, model scoping."""

from __future__ import annotations

import hashlib

import pytest

from app.core.keys import ANONYMOUS, KeyRing, keys_problem
from app.errors import AuthenticationError, ConfigError, ModelNotFoundError
from app.main import create_app
from app.settings import load_settings

ROUTES = {
    "a": {"endpoint": "http://x", "assistant_id": "asst_1", "auth": {"type": "api_key", "api_key": "k"}},
    "b": {"endpoint": "http://x", "assistant_id": "asst_2", "auth": {"type": "api_key", "api_key": "k"}},
}


def test_open_mode_is_one_anonymous_owner_and_never_an_admin() -> None:
    ring = KeyRing([])
    assert ring.open_mode
    principal = ring.authenticate(None)
    assert principal.name == ANONYMOUS and not principal.admin and principal.may_use("anything")
    with pytest.raises(AuthenticationError, match="open mode"):
        ring.authenticate_admin("Bearer anything-at-all-0123456789", "The admin API")


def test_without_keys_only_the_explicit_setting_lets_a_bridge_serve() -> None:
    refused = load_settings(None, env={}, routes=ROUTES)
    problem = keys_problem(refused)
    assert problem is not None and "open_mode: true" in problem and "AGENT_BRIDGE_API_KEYS" in problem
    with pytest.raises(ConfigError, match="refusing to start: no client keys"):
        create_app(refused)
    assert keys_problem(load_settings(None, env={}, routes=ROUTES, open_mode=True)) is None
    keyed = load_settings(None, env={"AGENT_BRIDGE_API_KEYS": "a:a-key-0123456789abcdef"}, routes=ROUTES)
    assert keys_problem(keyed) is None


@pytest.mark.parametrize("bad", ["a-key-0123456789abcdef\n", " a-key-0123456789abcdef", "a-key-01234\r\n56789abc"])
def test_secrets_with_whitespace_or_control_characters_are_refused_at_load(bad: str) -> None:
    routes = {"a": {**ROUTES["a"], "auth": {"type": "api_key", "api_key": bad}}}
    with pytest.raises(ConfigError, match=r"routes\.a\.auth\.api_key: has leading or trailing whitespace"):
        load_settings(None, env={}, routes=routes, open_mode=True)
    with pytest.raises(ConfigError, match=r"keys\[0\]\.key: has leading or trailing whitespace"):
        load_settings(None, env={}, routes=ROUTES, keys=[{"name": "a", "key": bad}])
    with pytest.raises(ConfigError, match=r"redis\.auth\.access_key: has leading"):
        load_settings(None, env={}, routes=ROUTES, open_mode=True, redis={"auth": {"access_key": bad}})


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
