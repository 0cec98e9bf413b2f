"""Coalesce concurrent encoder calls into shared batches (frames of several jobs, one forward pass).

A worker running several jobs at once (HAPVR_WORKER_JOBS) embeds each video in its own thread; their
`encode(frames)` calls meet here. The first caller becomes the leader: it waits up to `max_wait_s` for
other callers (or until `max_batch` frames are pending), runs the encoder once on everything pending,
and hands every caller its own slice. On a GPU this turns many small per-video batches into full ones.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class _Request:
    frames: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: torch.Tensor | None = None
    error: BaseException | None = None


class FrameBatcher:
    def __init__(self, encode: Callable[[np.ndarray], torch.Tensor], max_batch: int = 64, max_wait_s: float = 0.005):
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._leader = False
        self.calls: list[int] = []  # frames per encoder call, for tests and metrics

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        request = _Request(frames)
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()
            while not request.done.is_set():
                if not self._leader:
                    self._leader = True
                    break
                self._cond.wait()
            else:
                return self._result(request)
            # leader: let concurrent callers join, then take everything pending
            deadline_left = self.max_wait_s
            while sum(len(r.frames) for r in self._pending) < self.max_batch and deadline_left > 0:
                before = len(self._pending)
                self._cond.wait(timeout=deadline_left)
                if len(self._pending) == before:
                    break
            batch, self._pending = self._pending, []
        try:
            sizes = [len(r.frames) for r in batch]
            shapes = {r.frames.shape[1:] for r in batch}
            if len(shapes) == 1:
                out = self._encode(np.concatenate([r.frames for r in batch]))
                parts = torch.split(out, sizes)
                self.calls.append(sum(sizes))
            else:  # different frame sizes cannot share a tensor: encode them one by one
                parts = [self._encode(r.frames) for r in batch]
                self.calls.extend(sizes)
            for r, part in zip(batch, parts):
                r.result = part
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch sees the failure
            for r in batch:
                r.error = exc
        finally:
            with self._cond:
                self._leader = False
                for r in batch:
                    r.done.set()
                self._cond.notify_all()
        return self._result(request)

    @staticmethod
    def _result(request: _Request) -> torch.Tensor:
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result
