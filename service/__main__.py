"""`python -m service`: run the API with uvicorn. `--help` lists the options; every other setting is an
environment variable with the HAPVR_ prefix (docs/CONFIG.md)."""
from __future__ import annotations

import argparse
import os


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the hapvr HTTP API (POST /index, POST /query, ...). Without HAPVR_REDIS_URL the "
                    "process also runs its own worker threads; with it, start workers with "
                    "`python -m service.worker`. Settings: HAPVR_* environment variables (docs/CONFIG.md).")
    parser.add_argument("--host", default=os.environ.get("HAPVR_HOST", "127.0.0.1"),
                        help="address to listen on (default: $HAPVR_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("HAPVR_PORT", "8000")),
                        help="port (default: $HAPVR_PORT or 8000)")
    parser.add_argument("--log-level", default=os.environ.get("HAPVR_LOG_LEVEL", "info").lower(),
                        choices=["critical", "error", "warning", "info", "debug"],
                        help="log level (default: $HAPVR_LOG_LEVEL or info)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import uvicorn

    uvicorn.run("service.main:app", host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
