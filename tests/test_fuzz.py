"""The decoder under mutated real files (bench/fuzz_decode.py): a few hundred inputs here, 10,000 in the
bench run whose figures are in docs/RELIABILITY.md. Every input must end in an InputError or frames;
none may crash the child, hang, take over 10 s or raise anything else."""
from __future__ import annotations

from bench.fuzz_decode import MUTATIONS, run


def test_mutated_demo_clips_end_in_input_errors_or_frames():
    report = run(300, seed=1)
    assert report["inputs"] == 300
    assert report["failures"] == [], report["failures"][:5]
    assert set(report["by_mutation"]) == set(MUTATIONS)  # every kind of mutation was tried
    outcomes = report["outcomes"]
    assert set(outcomes) <= {"ok"} | {k for k in outcomes if k.startswith("InputError:")}, outcomes
    # both ends were exercised: damage that still decodes and damage that is refused
    assert outcomes.get("ok", 0) > 30 and sum(v for k, v in outcomes.items() if k != "ok") > 30, outcomes
    assert report["slowest"]["seconds"] < 10.0
