"""Prefetch: the background decode queue keeps order, re-raises where the producer failed, and stops early."""
from __future__ import annotations

import threading
import time

import pytest

from indexer.prefetch import Prefetch


def test_items_arrive_in_order_and_production_starts_before_iteration():
    started = threading.Event()

    def produce():
        started.set()
        yield from range(10)

    items = Prefetch(produce(), depth=2)
    assert started.wait(2.0)  # decoding begins at construction, before anyone asks
    assert list(items) == list(range(10))


def test_producer_error_is_raised_after_the_items_before_it():
    def produce():
        yield 1
        yield 2
        raise ValueError("damaged file")

    got = []
    with pytest.raises(ValueError, match="damaged file"):
        for item in Prefetch(produce()):
            got.append(item)
    assert got == [1, 2]


def test_close_stops_the_producer_while_it_waits_on_a_full_queue():
    produced = []

    def produce():
        for i in range(1000):
            produced.append(i)
            yield i

    items = Prefetch(produce(), depth=2)
    time.sleep(0.3)
    items.close()
    assert not items._thread.is_alive()
    assert len(produced) <= 4  # depth 2 queued + one blocked in put + one being made
