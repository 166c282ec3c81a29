"""The proxy a route's requests go through: resolved once from the environment, as curl reads it."""

from __future__ import annotations

import pytest

from app.backends.upstream import proxy_for


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"HTTPS_PROXY": "http://proxy.corp:3128"}, "http://proxy.corp:3128"),
        ({"https_proxy": "http://lower:1", "ALL_PROXY": "http://all:2"}, "http://lower:1"),
        ({"ALL_PROXY": "http://all:2"}, "http://all:2"),
        ({"HTTP_PROXY": "http://plain:3"}, None),  # an https endpoint does not use the http proxy
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "localhost,.azure.com"}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "openai.azure.com:443"}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "other.example,azure.co"}, "http://p:1"),
    ],
)
def test_proxy_for_reads_the_environment_like_curl(environ: dict[str, str], expected: str | None) -> None:
    assert proxy_for("https://my-resource.openai.azure.com/openai", environ) == expected
