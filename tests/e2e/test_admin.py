"""The admin API and the operator CLI: list, show, delete, purge, reconcile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.bridge import Bridge, routes_for, running_bridge
from tests.support.servers import ServerThread

ADMIN = "admin-key-0123456789abcdef"
USER = "user-key-0123456789abcdef"
KEYS = [{"name": "ops", "key": ADMIN, "admin": True}, {"name": "team", "key": USER}]


def _chat(bridge: Bridge, key: str, model: str, text: str) -> str:
    raw = bridge.client(api_key=key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return str(raw.headers["x-thread-id"])


@pytest.fixture
def admin_bridge(emulator: ServerThread, redis_url: str, redis_prefix: str) -> Any:
    with running_bridge(emulator.url, redis_url, redis_prefix, keys=KEYS, threads={"janitor": False}) as bridge:
        yield bridge


def _admin(bridge: Bridge, key: str = ADMIN) -> httpx.Client:
    return httpx.Client(base_url=bridge.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_list_show_delete_with_filters_and_pages(admin_bridge: Bridge) -> None:
    bridge = admin_bridge
    ops = [_chat(bridge, ADMIN, "demo-assistant", f"ops {n}") for n in range(3)]
    team = [_chat(bridge, USER, "demo-assistant", f"team {n}") for n in range(4)]
    classic = [_chat(bridge, USER, "classic-assistant", "classic")]
    with _admin(bridge) as c:
        everything = c.get("/admin/threads").json()
        assert {t["thread_id"] for t in everything["data"]} == set(ops + team + classic)
        assert everything["next"] is None
        by_owner = c.get("/admin/threads", params={"owner": "team"}).json()["data"]
        assert {t["thread_id"] for t in by_owner} == set(team + classic)
        by_route = c.get("/admin/threads", params={"route": "classic-assistant"}).json()["data"]
        assert [t["thread_id"] for t in by_route] == classic
        assert c.get("/admin/threads", params={"idle_for": "1h"}).json()["data"] == []
        # Pages of 3 cover everything exactly once.
        seen: list[str] = []
        after = None
        while True:
            page = c.get("/admin/threads", params={"limit": 3, **({"after": after} if after else {})}).json()
            seen += [t["thread_id"] for t in page["data"]]
            after = page["next"]
            if after is None:
                break
        assert sorted(seen) == sorted(ops + team + classic)
        one = c.get(f"/admin/threads/{team[0]}").json()
        assert one["owner"] == "team" and one["route"] == "demo-assistant" and one["turns"] == 1
        assert c.delete(f"/admin/threads/{team[0]}").json()["deleted"] is True
        assert c.get(f"/admin/threads/{team[0]}").status_code == 404
        assert c.get("/admin/threads", params={"idle_for": "soon"}).status_code == 400
    deleted = {t["id"] for t in bridge.emulator_threads() if t["deleted"]}
    assert deleted == {team[0]}


def test_purge_reports_what_it_deleted(admin_bridge: Bridge) -> None:
    bridge = admin_bridge
    keep = _chat(bridge, ADMIN, "demo-assistant", "keep")
    gone = [_chat(bridge, USER, "demo-assistant", f"gone {n}") for n in range(3)]
    with _admin(bridge) as c:
        young = c.post("/admin/threads/purge", json={"owner": "team", "older_than": "1h"}).json()
        assert young == {"deleted": [], "failed": {}, "count": 0}
        report = c.post("/admin/threads/purge", json={"owner": "team"}).json()
        assert sorted(report["deleted"]) == sorted(gone) and report["count"] == 3
        assert [t["thread_id"] for t in c.get("/admin/threads").json()["data"]] == [keep]
    assert {t["id"] for t in bridge.emulator_threads() if t["deleted"]} == set(gone)


def test_non_admin_keys_get_403_and_no_key_401(admin_bridge: Bridge) -> None:
    with _admin(admin_bridge, USER) as c:
        for method, path in (("GET", "/admin/threads"), ("GET", "/admin/threads/x"), ("DELETE", "/admin/threads/x")):
            response = c.request(method, path)
            assert response.status_code == 403
            assert response.json()["error"]["type"] == "permission_error"
        assert c.post("/admin/threads/purge", json={}).status_code == 403
    assert httpx.get(f"{admin_bridge.url}/admin/threads").status_code == 401


def test_open_mode_never_grants_the_admin_api(bridge: Bridge) -> None:
    """A keyless bridge (open mode, asked for) serves every route to `anonymous`, and no admin at all."""
    thread_id = _chat(bridge, "anything", "demo-assistant", "mine")
    for key in (None, "anything", ADMIN):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(base_url=bridge.url, headers=headers, timeout=30) as c:
            for method, path in (
                ("GET", "/admin/threads"),
                ("GET", f"/admin/threads/{thread_id}"),
                ("DELETE", f"/admin/threads/{thread_id}"),
                ("POST", "/admin/threads/purge"),
            ):
                response = c.request(method, path, json={} if method == "POST" else None)
                assert response.status_code == 401, (method, path, response.text)
                error = response.json()["error"]
                assert error["type"] == "authentication_error" and "open mode" in error["message"]
                assert set(error) >= {"message", "type", "param", "code"}
    assert not any(t["deleted"] for t in bridge.emulator_threads() if t["id"] == thread_id)


def _cli(config: Path, redis_url: str, *args: str) -> Any:
    env = {**os.environ, "REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "threads", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _config(tmp_path: Path, emulator_url: str, prefix: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"redis_prefix": prefix, "routes": routes_for(emulator_url)}))
    return path


def test_cli_lists_shows_deletes_and_purges(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, threads={"janitor": False}) as bridge:
        ids = [_chat(bridge, "unused", "demo-assistant", f"cli {n}") for n in range(3)]
        config = _config(tmp_path, emulator.url, redis_prefix)
        listed = _cli(config, redis_url, "list", "--json")
        assert {t["thread_id"] for t in listed["data"]} == set(ids)
        assert _cli(config, redis_url, "list", "--json", "--limit", "2")["next"] is not None
        assert _cli(config, redis_url, "show", ids[0])["route"] == "demo-assistant"
        assert _cli(config, redis_url, "delete", ids[0]) == {"id": ids[0], "deleted": True}
        purged = _cli(config, redis_url, "purge", "--route", "demo-assistant")
        assert sorted(purged["deleted"]) == sorted(ids[1:])
        assert all(t["deleted"] for t in bridge.emulator_threads())
        assert _cli(config, redis_url, "list", "--json")["data"] == []


def test_reconcile_deletes_unrecorded_bridge_threads_only(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, threads={"janitor": False}) as bridge:
        lost = _chat(bridge, "unused", "classic-assistant", "I will be forgotten")
        kept = _chat(bridge, "unused", "classic-assistant", "I stay recorded")
        # A crash between create and record: the thread exists on Azure but not in the registry.
        bridge.server.call(bridge.state.store.forget_thread(lost))
        with bridge.emulator() as c:
            foreign = c.post(
                "/api/projects/demo/threads",
                params={"api-version": "v1"},
                headers={"Authorization": "Bearer t"},
                json={"metadata": {"created_by": "someone-else"}},
            ).json()["id"]
        config = _config(tmp_path, emulator.url, redis_prefix)
        dry = _cli(config, redis_url, "reconcile", "--dry-run")
        assert dry["orphans"] == [lost] and dry["deleted"] == []
        report = _cli(config, redis_url, "reconcile")
        assert report["orphans"] == [lost] and report["deleted"] == [lost]
        assert report["left_alone"] >= 1
        state = {t["id"]: t["deleted"] for t in bridge.emulator_threads()}
        assert state[lost] is True
        assert state[kept] is False
        assert state[foreign] is False
        time.sleep(0.01)
        assert _cli(config, redis_url, "reconcile")["orphans"] == []
