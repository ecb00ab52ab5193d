"""Framing shared by the checkpoints: magic, a 4-byte big-endian header length, a JSON header, a payload.

Safe on untrusted bytes: nothing is unpickled, and every way the bytes can be wrong is a ValueError.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

_LENGTH = struct.Struct(">I")


def frame(magic: bytes, header: Mapping[str, object], payload: bytes) -> bytes:
    """Return ``magic``, the length of the JSON ``header``, the header, then ``payload``."""
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return magic + _LENGTH.pack(len(raw)) + raw + payload


def unframe(data: bytes, magic: bytes) -> tuple[dict[str, Any], bytes]:
    """Return (header, payload) of framed ``data``.

    Raises ValueError saying "bad magic", "header is truncated", "header is not JSON: ..." or
    "header is not an object".
    """
    start = len(magic) + _LENGTH.size
    if len(data) < start or not data.startswith(magic):
        raise ValueError("bad magic")
    (size,) = _LENGTH.unpack_from(data, len(magic))
    if start + size > len(data):
        raise ValueError("header is truncated")
    try:
        header = json.loads(data[start : start + size])
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValueError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    return header, data[start + size :]
