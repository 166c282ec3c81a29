"""A local stand-in for Entra ID in front of Redis: a managed-identity token endpoint and the cache's token check.

- The endpoint speaks App Service's managed-identity protocol, as `app.emulator.identity` does and as
  azure-identity's `ManagedIdentityCredential` calls it (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`):
  `GET ?api-version=2019-08-01&resource=...` with `X-IDENTITY-HEADER`, answering
  `{access_token, expires_on, resource, token_type, client_id}`. Tokens are JWT-shaped (unsigned)
  with an `oid` and an `exp` a few seconds ahead. The answer also carries `refresh_in` (Entra's
  token endpoint sends it; azure-identity honours it by fetching anew once it has passed): without
  it azure-identity serves its cached token until expiry to any caller who asked within 30 s, so a
  seconds-lived token could never be refreshed before it expires.
- Redis's side (Azure Cache / Managed Redis with Entra): an ACL user named by the `oid` whose
  passwords are exactly the unexpired, unrevoked tokens: each token is added with ACL SETUSER when
  issued and removed when it expires (or is revoked). Like Azure, which closes a connection whose
  token expired without a new AUTH, at each expiry every connection of that user that has not sent
  AUTH since the next token was issued is killed and recorded in `lapsed`. What each connection sent
  is read from MONITOR (AUTH arguments are redacted there; the time and client address are not).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import redis

API_VERSION = "2019-08-01"
CLIENT_ID = "00000000-0000-0000-0000-0000000ab1de"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issued:
    token: str
    issued_at: float
    expires_on: int
    revoked: bool = False


@dataclass
class Check:
    """One connection judged at one token's expiry: did it send AUTH while the next token was valid?"""

    token_index: int
    node: int
    addr: str
    ok: bool


class _Monitor(threading.Thread):
    """MONITOR on one node: the times each client address sent credentials, and markers to sync on."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True, name=f"monitor-{port}")
        self.port = port
        self.auths: dict[str, list[float]] = {}
        self._seen: set[str] = set()
        self._cv = threading.Condition()
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._file = self._sock.makefile("rb")
        if not self._file.readline().startswith(b"+OK"):
            raise RuntimeError("MONITOR refused")
        self._sock.settimeout(None)

    def run(self) -> None:
        try:
            for raw in self._file:
                line = raw.decode(errors="replace").strip()
                # +1700000000.123456 [0 127.0.0.1:54321] "AUTH" "(redacted)" "(redacted)"
                if not line.startswith("+") or "[" not in line:
                    continue
                stamp, rest = line[1:].split(" ", 1)
                where, _, command = rest.partition("] ")
                addr = where.split(" ")[-1]
                name = command.split(" ", 1)[0].strip('"').upper()
                with self._cv:
                    # A connection opens with `HELLO 3 AUTH user token` (RESP3) or AUTH; re-authenticates with AUTH.
                    if name == "AUTH" or (name == "HELLO" and '"AUTH"' in command.upper()):
                        self.auths.setdefault(addr, []).append(float(stamp))
                    elif name == "ECHO":
                        self._seen.add(command.split(" ", 1)[1].strip('"'))
                        self._cv.notify_all()
        except (OSError, ValueError):
            return

    def wait_marker(self, marker: str, timeout: float = 5.0) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: marker in self._seen, timeout):
                raise TimeoutError(f"MONITOR on {self.port} did not show {marker}")

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(timeout=5)
        self._file.close()
        self._sock.close()


@dataclass
class TokenIssuer:
    ports: list[int]
    lifetime_s: int = 3
    refresh_in_s: int = 1
    oid: str = field(default_factory=lambda: str(uuid.uuid4()))
    issued: list[Issued] = field(default_factory=list)
    lapsed: list[Check] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._markers = itertools.count()
        self.admins = [redis.Redis(port=p, decode_responses=True) for p in self.ports]
        self.monitors = [_Monitor(p) for p in self.ports]
        for admin in self.admins:
            # The user exists from the start, with no password until a token is issued.
            admin.execute_command("ACL", "SETUSER", self.oid, "reset", "on", "~*", "&*", "+@all")
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._threads = [
            threading.Thread(target=self._http.serve_forever, daemon=True, name="token-issuer"),
            threading.Thread(target=self._expire_forever, daemon=True, name="token-expiry"),
        ]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/msi/token"

    def start(self) -> TokenIssuer:
        for monitor in self.monitors:
            monitor.start()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._http.shutdown()
        self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        for monitor in self.monitors:
            monitor.close()
        for admin in self.admins:
            try:
                admin.execute_command("ACL", "DELUSER", self.oid)
            except redis.RedisError:
                pass
            admin.close()

    # -- tokens ----------------------------------------------------------------------------------

    def _mint(self) -> Issued:
        now = time.time()
        expires_on = math.ceil(now + self.lifetime_s)
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        claims = {"oid": self.oid, "aud": "https://redis.azure.com", "iat": int(now), "exp": expires_on}
        claims["jti"] = uuid.uuid4().hex
        token = f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(b'unsigned')}"
        for admin in self.admins:
            admin.execute_command("ACL", "SETUSER", self.oid, f">{token}")
        issued = Issued(token, time.time(), expires_on)
        with self._lock:
            self.issued.append(issued)
        self._wake.set()
        return issued

    def revoke(self, token: str) -> None:
        """Remove a token as a password now, before its expiry (open connections keep their session)."""
        with self._lock:
            for issued in self.issued:
                if issued.token == token:
                    issued.revoked = True
        for admin in self.admins:
            admin.execute_command("ACL", "SETUSER", self.oid, f"<{token}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path != "/msi/token":
                    return self._json(404, {"statusCode": 404, "message": "Not found"})
                if not self.headers.get("X-IDENTITY-HEADER", "").strip():
                    return self._json(401, {"statusCode": 401, "message": "X-IDENTITY-HEADER missing"})
                if query.get("api-version") != API_VERSION or not query.get("resource"):
                    return self._json(400, {"statusCode": 400, "message": "api-version and resource required"})
                issued = issuer._mint()
                self._json(
                    200,
                    {
                        "access_token": issued.token,
                        "expires_on": str(issued.expires_on),
                        "refresh_in": issuer.refresh_in_s,
                        "resource": query["resource"],
                        "token_type": "Bearer",
                        "client_id": query.get("client_id") or CLIENT_ID,
                    },
                )

        return Handler

    # -- expiry: Azure's side --------------------------------------------------------------------

    def _sync_monitors(self) -> None:
        """Every command run so far has reached the MONITOR readers (it comes before this marker)."""
        marker = f"sync-{next(self._markers)}"
        for admin, monitor in zip(self.admins, self.monitors, strict=True):
            admin.echo(marker)
            monitor.wait_marker(marker)

    def _expire_forever(self) -> None:
        done: set[int] = set()
        while not self._stop.is_set():
            with self._lock:
                pending = [(i, t) for i, t in enumerate(self.issued) if i not in done]
            if not pending:
                self._wake.wait()
                self._wake.clear()
                continue
            index, issued = min(pending, key=lambda p: p[1].expires_on)
            delay = issued.expires_on - time.time()
            if delay > 0:
                self._wake.wait(delay)
                self._wake.clear()
                continue
            self._expire(index, issued)
            done.add(index)

    def _expire(self, index: int, issued: Issued) -> None:
        with self._lock:
            successor = self.issued[index + 1] if index + 1 < len(self.issued) else None
        self._sync_monitors()
        since = successor.issued_at if successor is not None else math.inf
        for node, (admin, monitor) in enumerate(zip(self.admins, self.monitors, strict=True)):
            for client in admin.client_list():
                if client.get("user") != self.oid:
                    continue
                addr = client["addr"]
                with monitor._cv:
                    stamps = list(monitor.auths.get(addr, []))
                if not stamps or min(stamps) >= issued.expires_on:
                    continue  # opened after this token expired: not this token's connection
                ok = any(since <= s < issued.expires_on for s in stamps)
                check = Check(index, node, addr, ok)
                self.checks.append(check)
                if not ok:
                    self.lapsed.append(check)
                    admin.client_kill_filter(_id=client["id"])
            if not issued.revoked:
                admin.execute_command("ACL", "SETUSER", self.oid, f"<{issued.token}")

    # -- what the test reads ---------------------------------------------------------------------

    def connections(self) -> list[tuple[int, str]]:
        """(node, address) of every open connection authenticated as the identity."""
        return [
            (node, client["addr"])
            for node, admin in enumerate(self.admins)
            for client in admin.client_list()
            if client.get("user") == self.oid
        ]

    def ever_authenticated(self) -> set[tuple[int, str]]:
        self._sync_monitors()
        return {(node, addr) for node, monitor in enumerate(self.monitors) for addr in list(monitor.auths)}

    def auth_failures(self) -> list[dict[str, Any]]:
        return [
            entry
            for admin in self.admins
            for entry in admin.acl_log()
            if entry.get("reason") == "auth" or entry.get("username") == self.oid
        ]
