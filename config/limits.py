"""Input limits: what the decoder refuses before spending time on a file (decompression bombs, absurd sizes).
A settings value (`config.settings.Settings.limits`), read by `indexer/decode.py`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Refuse inputs beyond these before spending time on them."""

    max_bytes: int = 4 * 1024**3
    max_duration_s: float = 4 * 3600.0
    max_pixels: int = 8192 * 8192
    min_side: int = 16
    #: declared frame rates above this are refused (a bomb declares millions of tiny frames per second)
    max_fps: float = 1000.0

    def max_frames(self, info) -> int:
        """The most frames decoding may deliver for a probed file (`info`: an indexer.decode.VideoInfo) before it is treated as corrupt or
        hostile: four times what the declared duration and rate allow (FFmpeg estimates some durations),
        plus two minutes at 25/s; a file with no declared duration gets the duration limit."""
        duration = info.duration if info.duration > 0 else self.max_duration_s
        return int(max(duration, 1.0) * min(max(info.fps, 60.0), self.max_fps) * 4) + 3000
