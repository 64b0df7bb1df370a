"""The one pipeline runner: the pass contract is enforced (a lying or broken pass is a PassContractError), passes
that cannot run on the frontend are refused before anything runs, and each stage is checked against its claim."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx_builder import G

from graphprune.api import load
from graphprune.errors import UsageError, VerificationError
from graphprune.passes import AnalyseChannels, MagnitudeScore, RemoveChannels, Select
from graphprune.pipeline.base import Pass, PassContractError, PassResult
from graphprune.pipeline.runner import Pipeline
from graphprune.pipeline.state import PruneState
from graphprune.verify.claims import Claim, EditedWeights, Unchanged
from graphprune.methods.edits import WeightEdit


def model() -> onnx.ModelProto:
    g = G()
    a = g.conv("input", 3, 8)
    g.head(g.op("Relu", [a]), 8)
    return g.model((1, 3, 8, 8), (1, 5))


@pytest.fixture
def state() -> PruneState:
    return PruneState.start(load(model()))


def zero_first_weight(m: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    out = onnx.ModelProto()
    out.CopyFrom(m)
    init = next(t for t in out.graph.initializer if len(t.dims) == 4)
    init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    return out, init.name


@dataclass(frozen=True, kw_only=True)
class Liar(Pass):
    """Replaces the model but says it did not."""

    mutates = True

    def call(self, state):
        return PassResult(state.with_(model=zero_first_weight(state.model)[0]), modified=False)

    def claim(self, before, after) -> Claim:
        return Unchanged()


@dataclass(frozen=True, kw_only=True)
class Undeclared(Pass):
    """Replaces the model without being declared to."""

    def call(self, state):
        return PassResult(state.with_(model=zero_first_weight(state.model)[0]), modified=True)


@dataclass(frozen=True, kw_only=True)
class Forgetful(Pass):
    provides = ("scores",)

    def call(self, state):
        return PassResult(state, modified=False)


@dataclass(frozen=True, kw_only=True)
class Breaker(Pass):
    """Writes a model the checker rejects (a node reads a tensor nobody makes)."""

    mutates = True

    def call(self, state):
        out = onnx.ModelProto()
        out.CopyFrom(state.model)
        out.graph.node[0].input[0] = "nowhere"
        return PassResult(state.with_(model=out), modified=True)

    def claim(self, before, after) -> Claim:
        return Unchanged()


@dataclass(frozen=True, kw_only=True)
class Zeroer(Pass):
    """Zeroes a conv weight and claims exactly that edit; ``lie`` claims the model is unchanged instead."""

    lie: bool = False
    mutates = True

    def call(self, state):
        out, name = zero_first_weight(state.model)
        return PassResult(state.with_(model=out, weight_edits={name: WeightEdit(np.zeros([1] * 4, bool))}),
                          modified=True)

    def claim(self, before, after) -> Claim:
        return Unchanged() if self.lie else EditedWeights(after.weight_edits)


@dataclass(frozen=True, kw_only=True)
class TorchOnly(Pass):
    runs_on = frozenset({"torch"})

    def call(self, state):
        return PassResult(state, modified=False)


@pytest.mark.parametrize("p,needle", [(Liar(), "reported modified=False"), (Undeclared(), "not declared"),
                                      (Forgetful(), "promised ['scores']"), (Breaker(), "invalid model"),
                                      (Select(), "needs ['channels', 'scores']")])
def test_a_pass_that_breaks_its_contract_is_caught(state, p, needle):
    with pytest.raises(PassContractError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        Pipeline([p]).run(state)
    with pytest.raises(PassContractError):  # calling the pass directly runs the same contract
        p(state)


def test_a_mutating_pass_must_declare_its_claim():
    with pytest.raises(TypeError, match="must say what its output equals"):
        @dataclass(frozen=True, kw_only=True)
        class NoClaim(Pass):
            mutates = True

            def call(self, state):
                return PassResult(state, modified=False)


def test_passes_for_another_frontend_are_refused_before_anything_runs(state):
    with pytest.raises(UsageError, match="runs on torch models only") as info:
        Pipeline([AnalyseChannels(), TorchOnly()]).run(state)
    assert "\n" not in str(info.value)


def test_the_runner_records_history_and_stages(state):
    passes = [AnalyseChannels(), MagnitudeScore(), Select(ratio=0.5), RemoveChannels()]
    run = Pipeline(passes).run(state)
    assert [r.name for r in run.state.history] == [p.name for p in passes]
    assert all(r.seconds >= 0 for r in run.state.history)
    assert [s.name for s in run.stages] == ["RemoveChannels"] and run.stages[0].before is state.model
    assert Pipeline(passes).verify(run).ok


def test_each_stage_is_checked_against_its_own_claim(state):
    honest = Pipeline([Zeroer()], each=True).run(state)
    assert honest.checked[0].ok and "edited_original" in honest.checked[0].checks
    with pytest.raises(VerificationError, match="verification failed"):
        Pipeline([Zeroer(lie=True)], each=True).run(state)
    liar = Pipeline([Zeroer(lie=True)]).run(state)  # checked at the end instead, never raising there
    assert not Pipeline([Zeroer(lie=True)]).verify(liar).ok
