"""A seeded subset of the fuzz benchmark (benchmarks/fuzz.py): no tracebacks, no invalid outputs."""

from __future__ import annotations

import pytest

from benchmarks import fuzz


@pytest.mark.parametrize("seed", [11, 12])
def test_fuzzed_models_never_traceback_nor_write_invalid_output(seed):
    outcomes = fuzz.fuzz(cases=40, seed=seed)
    bad = [o for o in outcomes if o.traceback or o.invalid_output]
    assert not bad, bad[:5]
    assert {o.exit_code for o in outcomes} <= {0, 1, 2, 3}
