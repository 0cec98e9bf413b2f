"""Fuzz the HTTP API from its OpenAPI document with schemathesis: `python -m bench.fuzz_api [--examples 300]`.

Starts a real uvicorn server (embedded worker, no Redis) twice, API keys off and on, and sends every
operation `--examples` generated requests (with a valid key, and again with none where keys are on).
Every answer is checked by schemathesis against the document: no 5xx, a documented status code, its
content type, headers and body schema. `--write` puts the figures into docs/RELIABILITY.md;
tests/test_api_fuzz.py runs a few examples per operation in the unit suite.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from schemathesis.specs.openapi.checks import positive_data_acceptance

from bench.service_procs import free_port, service_env, start_api

KEY = "fuzzkey"
#: "a schema-valid request must be accepted" is not our contract: the API checks what a JSON schema cannot
#: say (that an upload is a video container, that `metadata` strings hold JSON objects, that `meta` filters
#: are key:value) and answers those with a documented 400 or 415, which the other checks still validate
EXCLUDED = [positive_data_acceptance]


def serve(root: Path, keys: bool):
    """A real API on a free port with small limits; returns (process, httpx client)."""
    (root / "imports").mkdir(parents=True, exist_ok=True)
    env = service_env(root / "data", free_port(), None, HAPVR_IMPORT_ROOT=str(root / "imports"),
                      HAPVR_MAX_UPLOAD_BYTES=str(2 * 1024 * 1024), HAPVR_RATE_LIMIT="100000",
                      HAPVR_RATE_BURST="100000", **({"HAPVR_API_KEYS": KEY} if keys else {}))
    return start_api(env, root / "api.log")


def fuzz(base_url: str, keys: bool, examples: int, seed: int = 0, operations: list[str] | None = None) -> dict:
    """Run every operation's generated cases against `base_url`; returns statuses and failures by operation.

    Failures are collected, not raised (so one bad route does not hide the others and nothing shrinks)."""
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    session = requests.Session()
    statuses: dict[str, Counter] = {}
    failures: list[dict] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operations and operation.label not in operations:
            continue
        counts = statuses.setdefault(operation.label, Counter())

        def check(case, headers: dict, who: str) -> None:
            try:
                response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
            except requests.RequestException as exc:  # no answer at all is a failure too
                failures.append({"operation": operation.label, "as": who, "error": f"no answer: {exc}"})
                return
            counts[response.status_code] += 1
            try:
                case.validate_response(response, excluded_checks=EXCLUDED)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - failed checks come as exception groups
                failures.append({"operation": operation.label, "as": who, "status": response.status_code,
                                 "error": str(exc)[:600], "curl": case.as_curl_command()[:400]})

        @hypothesis_seed(seed)
        @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case) -> None:
            check(case, {"Authorization": f"Bearer {KEY}"} if keys else {}, "with key" if keys else "no keys")
            if keys:
                check(case, {"Authorization": ""}, "without key")

        run()
    return {"statuses": {k: dict(v) for k, v in statuses.items()}, "failures": failures,
            "requests": sum(sum(v.values()) for v in statuses.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="generated cases per operation and mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write the figures into docs/RELIABILITY.md")
    args = parser.parse_args()
    start = time.perf_counter()
    reports = {}
    with tempfile.TemporaryDirectory(prefix="hapvr-fuzz-api-") as folder:
        for keys in (False, True):
            proc, client = serve(Path(folder) / ("keys" if keys else "open"), keys)
            try:
                reports["keys on" if keys else "keys off"] = fuzz(str(client.base_url), keys, args.examples, args.seed)
            finally:
                client.close()
                proc.kill(15)
    wall = time.perf_counter() - start
    print(json.dumps(reports, indent=1))
    failures = sum(len(r["failures"]) for r in reports.values())
    if args.write:
        from bench.reliability import write_figure

        statuses = Counter()
        for report in reports.values():
            for counts in report["statuses"].values():
                statuses.update(counts)
        operations = len(next(iter(reports.values()))["statuses"])
        write_figure("fuzz_api", f"{sum(r['requests'] for r in reports.values())} requests ({args.examples} cases "
                     f"per operation and mode, {operations} operations, seed {args.seed}); statuses "
                     f"{dict(sorted(statuses.items()))}; {failures} check failures; {wall:.0f} s wall")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
