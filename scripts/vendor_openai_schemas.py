"""Regenerate tests/schemas/openai-schemas.json from OpenAI's OpenAPI document.

Usage: python scripts/vendor_openai_schemas.py PATH_OR_URL_OF/openai-openapi.json

The tests validate what the bridge and the emulator emit against OpenAI's component schemas. The
repository must stand alone, so those schemas are vendored: this script keeps the document's
`info` and its whole `components.schemas` section, unchanged (the tests rewrite OpenAPI 3.0's
`nullable` at load time), sorted so a regeneration diffs cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "schemas" / "openai-schemas.json"


def load(source: str) -> dict[str, object]:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=60) as resp:
            return json.load(resp)  # type: ignore[no-any-return]
    return json.loads(Path(source).read_text())  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="openai-openapi.json: a file path or an https URL")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default: {OUT})")
    args = parser.parse_args(argv)
    document = load(args.source)
    components = document.get("components")
    if not isinstance(components, dict) or not isinstance(components.get("schemas"), dict):
        print(f"{args.source}: no components.schemas: is this OpenAI's OpenAPI document?", file=sys.stderr)
        return 2
    vendored = {
        "openapi": document.get("openapi"),
        "info": document.get("info"),
        "components": {"schemas": dict(sorted(components["schemas"].items()))},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(vendored, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(components['schemas'])} schemas to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
