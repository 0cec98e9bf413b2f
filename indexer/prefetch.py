"""Decode ahead in a background thread, so decoding overlaps with embedding.

PyAV and onnxruntime both release the GIL, so one decode thread and the
encoder share the two cores instead of taking turns. `Prefetch` starts
decoding as soon as it is built: the CLI builds the next file's `Prefetch`
before embedding the current file, which keeps the cores busy across file
boundaries (a 13-s clip at 1 fps is a single encoder batch; without the
look-ahead its decoding and its embedding cannot overlap at all).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class Prefetch(Generic[T]):
    """Iterate `items` in a daemon thread, at most `depth` items ahead of the consumer.

    Exceptions raised by the producer (e.g. InputError for a damaged file) are
    re-raised in the consumer at the point they happened. `close()` (or leaving
    the iteration early) stops the producer at its next item.
    """

    def __init__(self, items: Iterable[T], depth: int = 2, name: str = "decode"):
        self._items: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterable[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                item = self._items.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
