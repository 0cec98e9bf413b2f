"""Checks an upload or an imported file passes before any job is queued for it."""
from __future__ import annotations

from pathlib import Path

from indexer.decode import probe
from indexer.errors import InputError
from service.context import Context
from service.errors import from_input_error


def validate(ctx: Context, path: Path, upload_name: str | None = None) -> None:
    """Header-level checks (no decoding): fail fast with a clear code instead of a failed job.

    A rejected upload is deleted, and its message names the file as the client sent it.
    """
    try:
        probe(path, ctx.settings.limits())
    except InputError as exc:
        message = exc.message
        if upload_name is not None:
            path.unlink(missing_ok=True)
            message = message.replace(str(path), upload_name)
        raise from_input_error(exc.code, message) from None
