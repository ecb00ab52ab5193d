"""Read small files an operator points Spillway at (policies, the config file, secrets) without ever blocking.

Only regular files (or links to one) are read. A FIFO, device, socket or directory is refused without
being opened for reading: the path is stat()ed first, then opened non-blocking and its descriptor
fstat()ed again, so a file swapped in between is refused too. The size is checked before reading.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class FileRefusedError(ValueError):
    """The path is not a regular file, or is over its size limit; the message says which (no path)."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _size(count: int) -> str:
    return f"{count / 1024 / 1024:.1f} MiB" if count >= 1024 * 1024 else f"{count / 1024:.0f} KiB"


def _check(mode: int, size: int, *, max_bytes: int, what: str) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise FileRefusedError(f"is {kind}, not a {what}")
    if size > max_bytes:
        raise FileRefusedError(f"file is {_size(size)}; {what}s are limited to {max_bytes // 1024} KiB")


def read_regular_file(path: Path, *, max_bytes: int, what: str) -> bytes:
    """Return the bytes of regular file ``path`` (``what`` names its role in messages, e.g. "policy file").

    Raises FileRefusedError for anything but a regular file of at most ``max_bytes``, OSError
    (FileNotFoundError, PermissionError, ...) when it cannot be read. Never blocks on a FIFO.
    """
    before = os.stat(path)
    _check(before.st_mode, before.st_size, max_bytes=max_bytes, what=what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        _check(opened.st_mode, opened.st_size, max_bytes=max_bytes, what=what)  # swapped after the stat
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise FileRefusedError(f"file is over {max_bytes // 1024} KiB; {what}s are limited to that")
    return data
