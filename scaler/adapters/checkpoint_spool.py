"""A local spool in front of the Kafka checkpoint store: a final checkpoint survives a broker outage.

Each save writes every checkpoint to ``<dir>/<model, percent-encoded>.checkpoint`` first (a temporary
file, fsync, rename: a reader sees the old file or the new one, never half of one), then sends them to
the state topic within ``timeout_seconds``. A model's file is removed once the topic holds that
checkpoint, so a file left in the spool is one the broker never acknowledged. On load, a model's
spooled checkpoint wins when it is newer than its record on the topic (file mtime against the record's
timestamp): a daemon restarted after a shutdown with the broker down resumes from its own final state,
and a daemon that took a model over later (a newer record on the topic) is never overruled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import quote

import structlog
from prometheus_client import CollectorRegistry, Counter

log = structlog.get_logger("scaler.checkpoint_spool")

SUFFIX: Final = ".checkpoint"
MAX_SPOOL_FILE_BYTES: Final = 64 * 1024 * 1024  # a bigger file is not one of ours: refused, never read


class StampedStore(Protocol):
    """A checkpoint store that also says when each checkpoint was written (the Kafka store)."""

    async def load_stamped(self, models: frozenset[str]) -> dict[str, tuple[bytes, float]]:
        """Return model -> (checkpoint, unix time it was written) for each of ``models`` found."""

    async def save(self, checkpoints: Mapping[str, bytes]) -> None:
        """Store the checkpoints; raise ConnectionError if they could not be stored."""


def spool_path(directory: Path, model: str) -> Path:
    """Return the spool file of ``model`` (its name percent-encoded: no separators, no dot files)."""
    return directory / (quote(model, safe="") + SUFFIX)


def write_atomically(path: Path, data: bytes, *, mtime_ns: int) -> None:
    """Write ``data`` to ``path`` through a synced temporary file and a rename; set its mtime."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def read_spooled(directory: Path, models: frozenset[str]) -> dict[str, tuple[bytes, float]]:
    """Return model -> (checkpoint, mtime) of each of ``models`` with a regular spool file."""
    found: dict[str, tuple[bytes, float]] = {}
    for model in models:
        path = spool_path(directory, model)
        try:
            st = path.lstat()
            if not path.is_file() or path.is_symlink() or st.st_size > MAX_SPOOL_FILE_BYTES:
                log.warning("checkpoint_spool_file_refused", path=str(path), bytes=st.st_size)
                continue
            found[model] = (path.read_bytes(), st.st_mtime)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("checkpoint_spool_unreadable", path=str(path), error=str(exc))
    return found


class SpoolingCheckpointStore:
    """The ``CheckpointStore`` of the daemon with ``checkpoint_dir`` set: local files, then the topic."""

    def __init__(
        self,
        *,
        primary: StampedStore,
        directory: Path,
        timeout_seconds: float,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Create the store; raise ValueError if ``directory`` cannot be created or written."""
        self.primary = primary
        self.directory = directory
        self.timeout_seconds = timeout_seconds
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ValueError(f"checkpoint_dir {directory}: {exc.strerror or exc}") from None
        if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
            raise ValueError(f"checkpoint_dir {directory}: not a writable directory")
        self.spooled = Counter(
            "scaler_checkpoints_spooled",
            "Model checkpoints kept in the local spool because the state topic did not acknowledge them.",
            registry=registry,
        )

    async def save(self, checkpoints: Mapping[str, bytes]) -> None:
        """Spool every checkpoint, then send them to the topic; raise ConnectionError if neither holds them.

        A broker that is down or slow costs at most ``timeout_seconds``: the files stay, and the next
        start resumes from them.
        """
        if not checkpoints:
            return
        now = time.time_ns()
        try:
            await asyncio.to_thread(self._write, checkpoints, now)
            spooled = True
        except OSError as exc:
            log.error("checkpoint_spool_failed", error=str(exc), models=len(checkpoints))
            spooled = False
        try:
            await asyncio.wait_for(self.primary.save(checkpoints), self.timeout_seconds)
        except (ConnectionError, TimeoutError) as exc:
            if not spooled:
                raise ConnectionError(f"checkpoints neither spooled nor sent: {exc}") from exc
            self.spooled.inc(len(checkpoints))
            log.warning(
                "checkpoint_spooled",
                models=sorted(checkpoints),
                error=str(exc) or type(exc).__name__,
                directory=str(self.directory),
            )
            return
        if spooled:
            await asyncio.to_thread(self._remove, checkpoints, now)

    async def load(self, models: frozenset[str]) -> dict[str, bytes]:
        """Return the newest checkpoint of each of ``models``: the spooled one or the topic's."""
        if not models:
            return {}
        stamped = await self.primary.load_stamped(models)
        local = await asyncio.to_thread(read_spooled, self.directory, models)
        newest = {model: data for model, (data, _) in stamped.items()}
        for model, (data, mtime) in local.items():
            remote = stamped.get(model)
            if remote is None or mtime > remote[1]:
                newest[model] = data
                log.info("checkpoint_from_spool", model=model, bytes=len(data))
        return newest

    def _write(self, checkpoints: Mapping[str, bytes], now_ns: int) -> None:
        for model, data in checkpoints.items():
            write_atomically(spool_path(self.directory, model), data, mtime_ns=now_ns)

    def _remove(self, checkpoints: Mapping[str, bytes], now_ns: int) -> None:
        """Remove the files this save wrote (a later save's file, not yet acknowledged, stays)."""
        for model in checkpoints:
            path = spool_path(self.directory, model)
            with contextlib.suppress(OSError):
                if path.stat().st_mtime_ns == now_ns:
                    path.unlink()
