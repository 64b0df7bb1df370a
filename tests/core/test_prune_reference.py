"""Every reference model, from every exporter, prunes at 0.3 and 0.5 and equals its masked original."""

from __future__ import annotations

import pytest

import graphprune
from models import REFERENCE_MODELS
from models.handbuilt import HANDBUILT_MODELS

FLAVOURS = ("legacy", "legacy_bn", "dynamo")


@pytest.mark.parametrize("ratio", [0.3, 0.5])
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("name", sorted(REFERENCE_MODELS))
def test_reference_model_prunes_and_verifies(exported, name, flavour, ratio):
    result = graphprune.prune(exported(name, flavour), ratio=ratio, round_to=1)
    report = result.report
    assert report.verification.ok, report.verification.failure
    assert report.verification.checks["masked_original"] == "ok"
    assert report.after.params < report.before.params
    assert report.after.macs < report.before.macs
    assert report.units_removed > 0


@pytest.mark.parametrize("name", sorted(HANDBUILT_MODELS))
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_handbuilt_model_prunes_and_verifies(handbuilt, name, ratio):
    result = graphprune.prune(handbuilt(name), ratio=ratio, round_to=1)
    assert result.report.verification.ok, result.report.verification.failure
    assert result.report.after.params < result.report.before.params


@pytest.mark.parametrize("name", ["resnet_basic", "densenet_block", "grouped_split", "transformer_mlp"])
def test_global_scope_and_round_to_verify(exported, name):
    result = graphprune.prune(exported(name, "legacy_bn"), ratio=0.5, scope="global", round_to=4)
    assert result.report.verification.ok, result.report.verification.failure
    assert result.report.after.params < result.report.before.params
