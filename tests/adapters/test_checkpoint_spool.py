"""The checkpoint spool: what a restart resumes from, whichever of the topic and the spool is newer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from scaler.adapters.checkpoint_spool import SpoolingCheckpointStore, spool_path


class Topic:
    """A state topic that holds what it was given, stamped, or is down (ConnectionError)."""

    def __init__(self, *, down: bool = False, stamped: dict[str, tuple[bytes, float]] | None = None) -> None:
        self.down = down
        self.stamped = dict(stamped or {})

    async def save(self, checkpoints: Mapping[str, bytes]) -> None:
        if self.down:
            raise ConnectionError("broker down")
        for model, data in checkpoints.items():
            self.stamped[model] = (data, 2e9)

    async def load_stamped(self, models: frozenset[str]) -> dict[str, tuple[bytes, float]]:
        return {m: v for m, v in self.stamped.items() if m in models}


def test_a_checkpoint_the_topic_refused_stays_spooled_and_is_loaded(tmp_path: Path) -> None:
    topic = Topic(down=True)
    store = SpoolingCheckpointStore(primary=topic, directory=tmp_path / "spool", timeout_seconds=1)
    asyncio.run(store.save({"llama": b"final", "a/../b": b"odd name"}))
    assert spool_path(tmp_path / "spool", "llama").read_bytes() == b"final"
    names = sorted(p.name for p in (tmp_path / "spool").iterdir())
    assert names == ["a%2F..%2Fb.checkpoint", "llama.checkpoint"]  # no path escapes the directory
    topic.down = False
    assert asyncio.run(store.load(frozenset({"llama", "a/../b", "other"}))) == {
        "llama": b"final",
        "a/../b": b"odd name",
    }


def test_an_acknowledged_checkpoint_leaves_no_file(tmp_path: Path) -> None:
    topic = Topic()
    store = SpoolingCheckpointStore(primary=topic, directory=tmp_path, timeout_seconds=1)
    asyncio.run(store.save({"llama": b"v1"}))
    assert list(tmp_path.iterdir()) == []
    assert asyncio.run(store.load(frozenset({"llama"}))) == {"llama": b"v1"}


@pytest.mark.parametrize(
    ("file_mtime", "topic_time", "expected"),
    [
        (1_000.0, 2_000.0, b"topic"),  # another daemon took the model over later: the topic wins
        (3_000.0, 2_000.0, b"spool"),  # our shutdown with the broker down: the spool wins
    ],
)
def test_the_newer_of_spool_and_topic_wins(
    tmp_path: Path, file_mtime: float, topic_time: float, expected: bytes
) -> None:
    spool_path(tmp_path, "llama").write_bytes(b"spool")
    os.utime(spool_path(tmp_path, "llama"), (file_mtime, file_mtime))
    topic = Topic(stamped={"llama": (b"topic", topic_time)})
    store = SpoolingCheckpointStore(primary=topic, directory=tmp_path, timeout_seconds=1)
    assert asyncio.run(store.load(frozenset({"llama"}))) == {"llama": expected}


def test_a_hung_topic_costs_at_most_the_timeout(tmp_path: Path) -> None:
    class Hung(Topic):
        async def save(self, checkpoints: Mapping[str, bytes]) -> None:
            await asyncio.sleep(3600)

    store = SpoolingCheckpointStore(primary=Hung(), directory=tmp_path, timeout_seconds=0.2)
    asyncio.run(asyncio.wait_for(store.save({"llama": b"x"}), 30))  # returns: spooled, not hung
    assert spool_path(tmp_path, "llama").read_bytes() == b"x"


def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        SpoolingCheckpointStore(primary=Topic(), directory=blocker / "spool", timeout_seconds=1)
