"""Input errors with stable codes: the CLI maps them to exit codes, the API to 4xx/failed jobs."""
from __future__ import annotations


class InputError(Exception):
    """A file we refuse to index or query. `code` is stable and machine-readable."""

    #: code -> CLI exit status; distinct so scripts can tell failures apart.
    EXIT_CODES = {
        "not_a_video": 10,
        "no_video_stream": 11,
        "truncated": 12,
        "bad_dimensions": 13,
        "too_long": 14,
        "too_large": 15,
        "not_found": 16,
        "incompatible_store": 17,
        "no_store": 18,
        "storage_full": 19,
        "no_calibration": 20,
        "backend_unavailable": 21,
    }
    #: exit status of a command where several files failed with different codes, or something unexpected broke
    MIXED = 1

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def exit_code(self) -> int:
        return self.EXIT_CODES.get(self.code, 1)
