"""onnxruntime sessions and seeded inputs. CUDA is used when present, the CPU otherwise."""

from __future__ import annotations

import functools
from typing import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from . import io
from .errors import VerificationError

ort.set_default_logger_severity(4)


@functools.lru_cache(maxsize=1)
def max_opset() -> int:
    """The newest default-domain opset this onnxruntime loads (probed once with a one-node model)."""
    for opset in range(onnx.defs.onnx_opset_version(), 6, -1):
        x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
        graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        model.ir_version = min(model.ir_version, 10)
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return opset
        except Exception:
            continue
    return 7


def providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session(model: onnx.ModelProto, *, optimize: bool = True, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 4  # failures are reported by graphprune, in one line
    if threads:
        opts.intra_op_num_threads = threads
    try:
        if not io.is_large(model):
            return ort.InferenceSession(model.SerializeToString(), opts, providers=providers())
        # over protobuf's 2 GB: from a file with external data (read relative to the model's path); onnxruntime
        # holds the weights once the session exists, so the private folder goes right after
        with io.model_file(model) as path:
            return ort.InferenceSession(str(path), opts, providers=providers())
    except Exception as exc:
        raise VerificationError(f"onnxruntime cannot load the model: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_model(model: onnx.ModelProto, *, full_check: bool = False, path=None) -> None:
    """``onnx.checker.check_model`` for protos of any size: over protobuf's 2 GB the checker must be given a path,
    so ``path`` (the file ``model`` was read from, if any) or a temporary copy with external data."""
    if not io.is_large(model):
        onnx.checker.check_model(model, full_check=full_check)
    elif path is not None:
        onnx.checker.check_model(str(path), full_check=full_check)
    else:
        with io.model_file(model) as tmp:
            onnx.checker.check_model(str(tmp), full_check=full_check)


def run(sess: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return sess.run(None, dict(feeds))
    except Exception as exc:
        raise VerificationError(f"onnxruntime failed to run the model: {first_line(exc)}") from exc


def seeded_inputs(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Reproducible inputs: standard normal floats, small non-negative integers (valid as indices), random bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        if vi.name not in shapes:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = shapes[vi.name]
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.random(shape) < 0.5
        else:
            feeds[vi.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def latency_ms(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, runs: int = 20, warmup: int = 3,
               threads: int = 0) -> dict[str, float]:
    """Median and spread (p10, p90) of onnxruntime wall time per run, in milliseconds."""
    import time

    sess = session(model, threads=threads)
    for _ in range(warmup):
        sess.run(None, dict(feeds))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, dict(feeds))
        times.append((time.perf_counter() - t0) * 1e3)
    p10, p50, p90 = np.percentile(times, [10, 50, 90])
    return {"median": float(p50), "p10": float(p10), "p90": float(p90)}
