"""Reference models for graphprune tests and benchmarks.

Torch ``nn.Module`` models (one file per coupling family), an ONNX exporter
(``models.export``) and hand-built ONNX graphs (``models.handbuilt``, numpy
and onnx only).

torch is an optional dependency of graphprune and is imported only inside
this package. The re-exports below are resolved lazily (PEP 562), so
``import models.handbuilt`` works without torch installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.export import export_onnx
    from models.registry import BENCHMARK_MODELS, REFERENCE_MODELS, ModelSpec

__all__ = ["BENCHMARK_MODELS", "REFERENCE_MODELS", "ModelSpec", "export_onnx"]

_LAZY = {
    "export_onnx": "models.export",
    "ModelSpec": "models.registry",
    "REFERENCE_MODELS": "models.registry",
    "BENCHMARK_MODELS": "models.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
