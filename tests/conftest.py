"""Shared fixtures: reference models exported to ONNX once per session, in each exporter flavour."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest

FLAVOURS = ("legacy", "legacy_bn", "dynamo")


def export(name: str, flavour: str, folder: Path) -> Path:
    """``legacy``: TorchScript exporter (BN folded); ``legacy_bn``: same, BN kept with parameter names;
    ``dynamo``: the torch.export-based exporter (opset 18)."""
    import torch

    from models import REFERENCE_MODELS, export_onnx

    path = folder / f"{name}.{flavour}.onnx"
    if path.exists():
        return path
    spec = REFERENCE_MODELS[name]
    if flavour == "legacy_bn":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(spec.build(), (torch.randn(*spec.input_shape),), str(path), input_names=["input"],
                              output_names=["output"], opset_version=17, dynamo=False,
                              training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
        return path
    return export_onnx(spec, path, dynamo=flavour == "dynamo")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx_models")


@pytest.fixture(scope="session")
def exported(model_dir):
    """``exported(name, flavour="legacy") -> Path``, cached for the session."""
    pytest.importorskip("torch")
    return lambda name, flavour="legacy": export(name, flavour, model_dir)


@pytest.fixture(scope="session")
def handbuilt(model_dir):
    """``handbuilt(name) -> Path`` of a model built with onnx.helper (no torch)."""
    from models.handbuilt import HANDBUILT_MODELS

    def get(name: str) -> Path:
        path = model_dir / f"hb_{name}.onnx"
        if not path.exists():
            onnx.save(HANDBUILT_MODELS[name](), str(path))
        return path

    return get
