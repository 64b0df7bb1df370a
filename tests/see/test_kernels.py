"""``graphprune bench ORIGINAL PRUNED --profile``: onnxruntime's kernels by op type, before and after, against the
work-bound (:mod:`graphprune.tools.kernels`).

No test asserts a measured time: the bound's arithmetic is tested on profiles whose kernel times are made to
follow their nodes' work exactly (then the pruned model realises all of its bound), or that plus a known
overhead on one op type (then the overhead shows, on that op type alone).
"""

from __future__ import annotations

import json

import pytest

from graphprune import runtime
from graphprune.cli.main import main
from graphprune.frontends.onnx.load import load
from graphprune.methods.latency import activation_elements, attribute
from graphprune.runtime import KernelProfile
from graphprune.tools import kernels
from graphprune.tools.kernels import breakdown

FAST = ["--runs", "3", "--warmup", "1", "--threads", "1"]


def work_timed(loaded, slower: dict[str, float]):
    """``runtime.profile`` with each kernel's time replaced by its node's work (1 µs per unit), times
    ``slower[op type]`` in the second model; the layout kernels together by the model's activations."""
    real = runtime.profile

    def profile(models, feeds, **kw):
        out = []
        for i, (model, prof) in enumerate(zip(models, real(models, feeds, **kw))):
            graph = loaded[i].graph
            owner = attribute(prof.op_types, graph)
            ms = {}
            n_layout = max(1, sum(o is None for o in owner.values()))
            for kernel, op in prof.op_types.items():
                unit = (kernels.work(graph, owner[kernel]) if owner[kernel] is not None
                        else activation_elements(graph, graph) / n_layout)
                ms[kernel] = 1e-3 * unit * (slower.get(op, 1.0) if i == 1 else 1.0)
            out.append(KernelProfile(ms, prof.op_types, sum(ms.values())))
        return out

    return profile


@pytest.fixture
def pair(pruned_pair):
    src, small = pruned_pair
    return load(src), load(small)


def test_kernels_that_follow_their_work_realise_the_whole_bound(pair, monkeypatch):
    monkeypatch.setattr(runtime, "profile", work_timed(pair, {}))
    k = breakdown(*pair, runs=2).to_json()
    assert k["kernel_over_bound"] == pytest.approx(1.0, rel=1e-9)
    assert k["kernel_efficiency"] == pytest.approx(k["bound_efficiency"], rel=1e-9)
    assert k["macs_ratio"] < 0.5 and k["kernel_speedup"] > 1.0
    conv = k["ops"]["Conv"]  # a conv's bound falls with its MACs (the Gemm's are a few hundred of them)
    assert conv["bound_ms"] / conv["before_ms"] == pytest.approx(k["macs_ratio"], rel=0.02)
    for t in k["ops"].values():
        assert t["after_ms"] == pytest.approx(t["bound_ms"], rel=1e-9)


def test_overhead_in_one_op_type_shows_there_and_lowers_the_realised_share(pair, monkeypatch):
    monkeypatch.setattr(runtime, "profile", work_timed(pair, {"Conv": 2.0}))
    k = breakdown(*pair, runs=2).to_json()
    conv = k["ops"]["Conv"]
    assert conv["after_ms"] == pytest.approx(2.0 * conv["bound_ms"], rel=1e-9)
    assert all(t["after_ms"] == pytest.approx(t["bound_ms"], rel=1e-9) for op, t in k["ops"].items() if op != "Conv")
    assert k["kernel_over_bound"] < 0.6  # the convs are nearly all of this model's work


def test_cli_profile_json_and_table(pruned_pair, capsys, wide):
    src, small = pruned_pair
    assert main(["bench", str(src), str(small), "--profile", "--json", *FAST]) == 0
    k = json.loads(capsys.readouterr().out)["kernels"]
    assert k["kernel_ms_before"] > 0 and k["kernel_ms_after"] > 0 and 0 < k["bound_efficiency"]
    assert abs(sum(t["share_before"] for t in k["ops"].values()) - 1.0) < 1e-9
    assert main(["bench", str(src), str(small), "--profile", *FAST]) == 0
    out = capsys.readouterr().out
    assert "work-bound" in out and "Conv" in out and "realised" in out


def test_profile_of_one_model_is_refused_in_one_line(pruned_pair, capsys):
    src, _ = pruned_pair
    assert main(["bench", str(src), "--profile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--profile compares two models" in err[0]
