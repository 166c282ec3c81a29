"""The one HTTP client to Azure: an httpx.AsyncClient, its transport, limits and proxies from the environment.

Every upstream request (JSON calls, event streams, file contents, proxied routes) goes through the
client built here, with httpx's API: its exceptions, timeouts, limits and `trust_env` proxies. The
wire is aiohttp's (`httpx-aiohttp`'s transport) by default: httpx's own pool (httpcore) costs CPU that
grows with every open connection (encode/httpx#3215), measured in docs/performance-httpx.md.
`transport="httpx"` selects httpx's own.

Proxies: httpx reads HTTPS_PROXY/HTTP_PROXY/ALL_PROXY and NO_PROXY once, when the client is built
(`trust_env`), and matches each request's URL against them in memory. NO_PROXY as httpx reads it: a
name (`example.com`: it and its subdomains, as curl), an IPv4 or IPv6 address, `localhost`, `*` (no
proxy at all), `name:port`. Three forms it misreads are added here through httpx's own `mounts=`:
`.example.com` (Python's urllib: the name and its subdomains; httpx: only the subdomains),
`name:443`/`name:80` (an https/http URL on its default port has no port for httpx to match), and
`*.example.com`, the subdomains (not curl's syntax, whose one wildcard is a lone `*`, but what many
proxy settings write; httpx matches nothing). Not supported (the request goes through the proxy): CIDR ranges
(`10.0.0.0/8`, curl 7.86+), and an IP's subnet in any form. docs/reference/libraries.md has the sources.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from http.cookiejar import CookieJar
from typing import Any, Literal

import httpx

from app.backends import aiohttp_transport

Transport = Literal["aiohttp", "httpx"]

KEEPALIVE_S = 30.0
"""How long an idle connection to Azure stays in the pool (Azure's front ends keep theirs longer)."""
# Calls without a deadline (the janitor, the admin API) still may not hang.
TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=30.0)


_DEFAULT_PORTS = {"443": "https", "80": "http"}


class NoCookies(CookieJar):
    """A jar that keeps nothing: one client serves every route and key, so no cookie from one answer may
    ride on another request (httpx keeps them by default); and reading none saves its parse per answer."""

    def extract_cookies(self, response: object, request: object) -> None:
        pass

    def set_cookie(self, cookie: object) -> None:
        pass


class _Jarless(httpx.Cookies):
    """Cookies that are neither read from an answer nor sent: httpx wraps every answer and request in
    urllib's cookie objects before it asks the jar (about 60 us of CPU per request, `make profile`),
    even when the jar keeps nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


class _NoCookies:
    """A client whose `cookies` (httpx's public attribute, which `send` reads) is always empty and `_Jarless`."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _JARLESS

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        pass  # nothing is kept


_JARLESS = _Jarless()


class _AiohttpClient(_NoCookies, aiohttp_transport.Client):
    pass


class _HttpxClient(_NoCookies, httpx.AsyncClient):
    pass


def no_proxy_mounts(environ: Mapping[str, str] | None = None) -> dict[str, None]:
    """httpx mounts (None: no proxy) for the NO_PROXY entries httpx itself misreads (see the module's docstring)."""
    env = os.environ if environ is None else environ
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    mounts: dict[str, None] = {}
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry.startswith("*.") and len(entry) > 2:
            mounts[f"all://{entry}"] = None  # httpx's own pattern for exactly the subdomains
        elif entry.startswith(".") and len(entry) > 1:
            mounts[f"all://{entry[1:]}"] = None  # the name itself (httpx covers its subdomains)
        elif (name_port := entry.rpartition(":"))[1] and name_port[2] in _DEFAULT_PORTS and "]" not in entry:
            name = name_port[0].lstrip(".")
            mounts[f"{_DEFAULT_PORTS[name_port[2]]}://*{name}"] = None  # the URL omits its default port
    return mounts


def http_client(
    *,
    user_agent: str = "agent-bridge",
    max_connections: int = 2000,
    keepalive_s: float = KEEPALIVE_S,
    transport: Transport = "aiohttp",
) -> httpx.AsyncClient:
    """The client every route shares (build it inside the event loop that will use it).

    Redirects are not followed (httpx's default): the caller reports a 3xx as an error.
    """
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=keepalive_s
    )
    kind = _AiohttpClient if transport == "aiohttp" else _HttpxClient
    return kind(
        headers={"User-Agent": user_agent},
        cookies=NoCookies(),
        timeout=TIMEOUT,
        limits=limits,
        trust_env=True,
        mounts=no_proxy_mounts() or None,
        follow_redirects=False,
    )
