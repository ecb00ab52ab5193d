"""Generate the shipped event JSON Schemas from the event structs, so the two cannot drift apart.

python -m scaler.schemas.generate          # rewrite scaler/schemas/*.schema.json
python -m scaler.schemas.generate --check  # exit 1 if a committed file differs from the generated one
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

import msgspec

from scaler.core.events import RATE_FIELDS, MetricEvent, RequestEvent

DIRECTORY: Final = Path(__file__).resolve().parent
BASE_URL: Final = "https://spillway.dev/schemas/"
FILES: Final[dict[str, type[msgspec.Struct]]] = {
    "request-event.schema.json": RequestEvent,
    "metric-event.schema.json": MetricEvent,
}


def schema(file_name: str) -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) shipped as ``file_name``; raise KeyError for an unknown name."""
    generated = msgspec.json.schema(FILES[file_name])
    name = generated["$ref"].rsplit("/", 1)[-1]
    body = generated["$defs"][name]  # an event has no nested structs: inline its one definition
    if FILES[file_name] is MetricEvent:  # what MetricEvent.__post_init__ checks: the rates come together
        body["dependentRequired"] = {
            name: [other for other in RATE_FIELDS if other != name] for name in RATE_FIELDS
        }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": BASE_URL + file_name, **body}


def render(file_name: str) -> str:
    """Return the text of ``file_name`` as it must be committed."""
    return json.dumps(schema(file_name), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) every schema file; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m scaler.schemas.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for file_name in FILES:
        path = DIRECTORY / file_name
        text = render(file_name)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(file_name)
        else:
            path.write_text(text, encoding="utf-8")
    for file_name in stale:
        print(f"{DIRECTORY / file_name}: stale; run python -m scaler.schemas.generate", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
