"""NO_PROXY entries httpx misreads, handed to it as mounts (see app/backends/http_client.py)."""

from __future__ import annotations

import pytest

from app.backends.http_client import no_proxy_mounts


@pytest.mark.parametrize(
    ("no_proxy", "mounts"),
    [
        ("", {}),
        ("localhost,10.0.0.1,example.com,::1", {}),  # httpx reads these itself
        ("*.azure.com", {"all://*.azure.com": None}),
        (".azure.com", {"all://azure.com": None}),
        ("openai.azure.com:443", {"https://*openai.azure.com": None}),
        ("plain.test:80, *.Corp.Example ", {"http://*plain.test": None, "all://*.corp.example": None}),
        ("host:8443,*.", {}),  # not a default port; a bare `*.`
    ],
)
def test_no_proxy_mounts(no_proxy: str, mounts: dict[str, None]) -> None:
    assert no_proxy_mounts({"NO_PROXY": no_proxy}) == mounts


def test_the_lower_case_variable_wins_as_in_urllib() -> None:
    assert no_proxy_mounts({"no_proxy": "*.a.test", "NO_PROXY": "*.b.test"}) == {"all://*.a.test": None}
