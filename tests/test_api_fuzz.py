"""The API fuzzed by schemathesis from its own OpenAPI document (bench/fuzz_api.py), on a real uvicorn
server with its worker: every operation, API keys off and on (with a valid key and with none). No answer
may be a 5xx and every answer must match the document (status code, content type, headers, body schema).
A bounded number of cases per operation runs here; the bench run's figures are in docs/RELIABILITY.md."""
from __future__ import annotations

import pytest

from bench.fuzz_api import fuzz, serve

#: generated cases per operation and mode in the unit suite
EXAMPLES = 12


@pytest.mark.parametrize("keys", [False, True], ids=["keys-off", "keys-on"])
def test_every_operation_answers_within_its_schema_and_never_5xx(tmp_path, keys):
    proc, client = serve(tmp_path, keys)
    try:
        report = fuzz(str(client.base_url), keys, EXAMPLES, seed=1)
    finally:
        client.close()
        proc.kill(15)
    assert report["failures"] == [], report["failures"][:3]
    assert len(report["statuses"]) >= 10  # every operation of the document was exercised
    statuses = {code for counts in report["statuses"].values() for code in counts}
    assert not any(code >= 500 for code in statuses), statuses
    if keys:
        assert 401 in statuses  # the keyless half was refused, not let through
    assert any(200 <= code < 300 for code in statuses)  # and some cases got through to the engine
