"""Frames of concurrent jobs share encoder batches, and every caller gets exactly its own features."""
from __future__ import annotations

import threading

import numpy as np
import torch

from indexer.batching import FrameBatcher
from tests.clips import ASL, BIKES, BOTTLE, CAR, clip


def test_concurrent_calls_share_one_encoder_pass_and_get_their_own_rows(encoder):
    from indexer.decode import decode_all

    videos = [decode_all(clip(n), size_for=encoder.decode_size).frames[:8]
              for n in (BOTTLE, CAR, BIKES, ASL)]
    alone = [encoder.encode(v) for v in videos]
    batcher = FrameBatcher(encoder.encode, max_batch=32, max_wait_s=0.5)
    results: dict[int, torch.Tensor] = {}
    start = threading.Barrier(len(videos))

    def job(i: int) -> None:
        start.wait()
        results[i] = batcher.encode(videos[i])

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(videos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(batcher.calls) < len(videos) and sum(batcher.calls) == 32
    for i in range(len(videos)):
        assert torch.allclose(results[i], alone[i], atol=1e-4)


def test_an_encoder_failure_reaches_every_caller():
    def broken(frames: np.ndarray) -> torch.Tensor:
        raise RuntimeError("boom")

    batcher = FrameBatcher(broken, max_wait_s=0.01)
    try:
        batcher.encode(np.zeros((2, 8, 8, 3), np.uint8))
    except RuntimeError as exc:
        assert str(exc) == "boom"
    else:
        raise AssertionError("the failure was swallowed")
