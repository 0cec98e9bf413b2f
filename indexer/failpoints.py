"""Named points where a process kills itself on purpose, so that fault tests can crash a real worker at
an exact stage (decode, embed, commit, index_save, duplicates_scan) instead of racing a timer.

Off unless `HAPVR_FAILPOINTS` names points (comma-separated; `Settings.failpoints`). A reached point
that is armed sends the process SIGKILL: no cleanup, no atexit, no flushed buffers, as a power cut or
the OOM killer would leave it.
"""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

#: every point the code can reach; arming another name is an error (a typo would test nothing)
POINTS = frozenset({"decode", "embed", "commit", "index_save", "duplicates_scan"})
_armed: frozenset[str] = frozenset()


def arm(spec: str) -> None:
    """Arm the points named in `spec` ("" disarms all)."""
    global _armed
    names = frozenset(n.strip() for n in spec.split(",") if n.strip())
    unknown = names - POINTS
    if unknown:
        raise ValueError(f"HAPVR_FAILPOINTS: unknown point(s) {sorted(unknown)}; known: {sorted(POINTS)}")
    _armed = names


def reach(point: str) -> None:
    """Die here if `point` is armed."""
    if point in _armed:
        log.warning("failpoint %s reached: SIGKILL", point)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
