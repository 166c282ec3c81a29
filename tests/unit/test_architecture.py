"""DESIGN §2's dependency rules, checked on the source: dependencies point inward."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str = "") -> dict[str, set[str]]:
    root = APP / package if package else APP
    return {str(p.relative_to(APP)): _imports(p) for p in root.rglob("*.py")}


def _uses(imports: set[str], top: str) -> bool:
    return any(name == top or name.startswith(top + ".") for name in imports)


def test_only_the_api_package_imports_fastapi() -> None:
    offenders = [m for m, imports in _modules().items() if _uses(imports, "fastapi") and not m.startswith("api/")]
    assert offenders == []


def test_core_imports_no_fastapi_httpx_or_redis() -> None:
    for module, imports in _modules("core").items():
        for library in ("fastapi", "starlette", "httpx", "redis", "app.api", "app.backends", "app.state"):
            assert not _uses(imports, library), f"core/{module} imports {library}"


def test_the_emulator_imports_nothing_else_from_app() -> None:
    for module, imports in _modules("emulator").items():
        foreign = {n for n in imports if n.startswith("app.") and not n.startswith("app.emulator")}
        assert foreign == set(), f"emulator/{module} imports {foreign}"


def test_nothing_but_the_cli_imports_the_emulator() -> None:
    importers = [
        m
        for m, imports in _modules().items()
        if _uses(imports, "app.emulator") and not m.startswith("emulator/") and m != "cli.py"
    ]
    assert importers == []


def test_the_api_never_calls_azure() -> None:
    for module, imports in _modules("api").items():
        assert not _uses(imports, "httpx"), f"api/{module} imports httpx"
        assert not _uses(imports, "app.backends.upstream"), f"api/{module} talks to Azure"


def test_one_http_client_to_azure_and_no_http_parsing_of_our_own() -> None:
    """httpx is the upstream API; aiohttp only as its transport; no HTTP/1.1 parser used directly."""
    for module, imports in _modules().items():
        if module != "backends/aiohttp_transport.py":
            assert not _uses(imports, "aiohttp"), f"{module} imports aiohttp (only the transport adapter may)"
        for parser in ("httptools", "h11", "httpcore"):
            assert not _uses(imports, parser), f"{module} imports {parser}: HTTP is parsed by the libraries"
        if not module.startswith("backends/"):
            assert not _uses(imports, "httpx"), f"{module} imports httpx: Azure is reached from app/backends/ only"
