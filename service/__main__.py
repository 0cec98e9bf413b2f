"""`python -m service`: run the API with uvicorn (HAPVR_HOST, HAPVR_PORT)."""
from __future__ import annotations

import os

import uvicorn


def main() -> None:
    uvicorn.run("service.main:app", host=os.environ.get("HAPVR_HOST", "127.0.0.1"),
                port=int(os.environ.get("HAPVR_PORT", "8000")), log_level=os.environ.get("HAPVR_LOG_LEVEL", "info").lower())


if __name__ == "__main__":
    main()
