"""The collector settings the daemon consumes with: start-up state frozen, full collections rarer."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from scaler.runtime import FULL_COLLECTION_EVERY, settle_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.mark.usefixtures("restored_collector")
def test_settle_freezes_what_exists_and_still_collects_young_cycles() -> None:
    kept = _Node()  # state made at start-up: frozen, a full collection no longer walks it
    young = gc.get_threshold()[:2]
    settle_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[2] == FULL_COLLECTION_EVERY
    assert gc.get_threshold()[:2] == young  # young collections as often as before
    a, b = _Node(), _Node()  # a cycle made while consuming: garbage once dropped
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect(0)  # the youngest generation's collection, as often as CPython's default
    assert gone() is None
    assert kept.other is None
