"""The admin view at scale: owner filters find threads anywhere, pages end only at `next: null`,
purge asks on a terminal (pty), shows progress, and has a dry run."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.bridge import Bridge, routes_for, running_bridge
from tests.support.servers import ServerThread


def _chat(bridge: Bridge, text: str, key: str = "unused") -> str:
    raw = bridge.client(api_key=key).chat.completions.with_raw_response.create(
        model="demo-assistant", messages=[{"role": "user", "content": text}]
    )
    return str(raw.headers["x-thread-id"])


def _in_pty(args: list[str], env: dict[str, str], answer: bytes | None, timeout: float = 60) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as stdin, stdout and stderr; type `answer` at the prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    seen = b""
    answered = answer is None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:
                    break  # the child closed the terminal
                if not chunk:
                    break
                seen += chunk
                if not answered and b"[y/N]" in seen:
                    os.write(leader, answer or b"")
                    answered = True
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), seen.decode(errors="replace")
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()


def _cli(tmp_path: Path, emulator_url: str, redis_url: str, prefix: str) -> tuple[list[str], dict[str, str]]:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"redis_prefix": prefix, "routes": routes_for(emulator_url)}))
    return [sys.executable, "-m", "app.cli", "threads", "--config", str(config)], {**os.environ, "REDIS_URL": redis_url}


def test_purge_asks_on_a_terminal_and_shows_progress(
    emulator: ServerThread, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    with running_bridge(emulator.url, redis_url, redis_prefix, threads={"janitor": False}) as bridge:
        ids = [_chat(bridge, f"purge me {n}") for n in range(3)]
        cli, env = _cli(tmp_path, emulator.url, redis_url, redis_prefix)

        code, screen = _in_pty([*cli, "purge", "--route", "demo-assistant"], env, answer=b"n\n")
        assert code == 1, screen
        assert "route demo-assistant" in screen and "nothing deleted" in screen
        assert not any(t["deleted"] for t in bridge.emulator_threads())

        dry = subprocess.run([*cli, "purge", "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert sorted(yaml.safe_load(dry.stdout)["would_delete"]) == sorted(ids)
        assert not any(t["deleted"] for t in bridge.emulator_threads())

        code, screen = _in_pty([*cli, "purge", "--route", "demo-assistant"], env, answer=b"y\n")
        assert code == 0, screen
        assert "purging [" in screen and "100%" in screen  # the progress bar, drawn on the terminal
        assert {t["id"] for t in bridge.emulator_threads() if t["deleted"]} == set(ids)

        left = _chat(bridge, "scripted")
        code, screen = _in_pty([*cli, "purge", "--yes"], env, answer=None)
        assert code == 0 and "[y/N]" not in screen
        assert any(t["id"] == left and t["deleted"] for t in bridge.emulator_threads())


def test_owner_filter_finds_threads_anywhere_and_pages_go_on_past_empty_ones(
    emulator: ServerThread, redis_url: str, redis_prefix: str
) -> None:
    admin, user = "admin-key-0123456789abcdef", "user-key-0123456789abcdef"
    keys = [{"name": "ops", "key": admin, "admin": True}, {"name": "team", "key": user}]
    with running_bridge(emulator.url, redis_url, redis_prefix, keys=keys, threads={"janitor": False}) as bridge:
        mine = [_chat(bridge, f"ops {n}", key=admin) for n in range(30)]
        theirs = [_chat(bridge, "team's only one", key=user)]  # the least idle of all
        with httpx.Client(base_url=bridge.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as c:
            pages: list[dict[str, Any]] = []
            after = None
            while True:
                params: dict[str, Any] = {"owner": "team", "limit": 1, **({"after": after} if after else {})}
                page = c.get("/admin/threads", params=params).json()
                pages.append(page)
                after = page["next"]
                if after is None:
                    break
            found = [t["thread_id"] for p in pages for t in p["data"]]
            assert found == theirs
            purged = c.post("/admin/threads/purge", json={"owner": "team", "dry_run": True}).json()
            assert purged == {"dry_run": True, "would_delete": theirs, "count": 1}
            assert c.get("/admin/threads", params={"after": "not-a-cursor"}).status_code == 400
            # An unfiltered walk in small pages sees each thread exactly once.
            seen: list[str] = []
            after = None
            while True:
                page = c.get("/admin/threads", params={"limit": 7, **({"after": after} if after else {})}).json()
                assert len(page["data"]) <= 7
                seen += [t["thread_id"] for t in page["data"]]
                after = page["next"]
                if after is None:
                    break
            assert sorted(seen) == sorted(mine + theirs)
