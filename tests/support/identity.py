"""azure-identity's App Service managed identity pointed at an endpoint the tests run (the emulator's
`/msi/token` or a token issuer), with every other credential source azure-identity would try cleared."""

from __future__ import annotations

import pytest

OTHER_IDENTITY_ENV = (
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_USERNAME",
)
"""What DefaultAzureCredential would try before managed identity, or instead of App Service's endpoint."""


def point_managed_identity(monkeypatch: pytest.MonkeyPatch, endpoint: str, header: str) -> None:
    """Set `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` and clear the rest, until `monkeypatch` undoes it."""
    for name in OTHER_IDENTITY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", header)
