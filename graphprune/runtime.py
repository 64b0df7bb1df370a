"""onnxruntime sessions and seeded inputs. CUDA is used when present, the CPU otherwise."""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from graphprune import io
from graphprune.errors import VerificationError

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


# models with more weight bytes reach onnxruntime through a file; smaller ones are cheaper in memory (3× their
# weights for a moment) than the per-tensor cost of writing one (a 10,000-layer graph of 9 KiB convs: +1 s)
SESSION_FILE_MIN_BYTES = 128 * 2**20


def providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


Runnable = onnx.ModelProto | Path  # a proto, or a model file with its external data next to it


def lean(model: onnx.ModelProto) -> bool:
    """Whether ``model`` reaches onnxruntime and the checker through a file: over protobuf's 2 GB there is no
    other way, and from :data:`SESSION_FILE_MIN_BYTES` it is the lean way. From bytes, a session keeps the
    serialised model and onnxruntime parses a second copy of it (a peak of 3× the weights); from a file it maps
    the page-aligned data instead, and the checker reads only the graph."""
    size = io.data_size(model)
    return size > io.external_data_threshold() or size >= SESSION_FILE_MIN_BYTES


@contextlib.contextmanager
def runnable(model: onnx.ModelProto | io.Stripped) -> Iterator[Runnable]:
    """``model`` ready for :func:`session` and :func:`check_model`: itself (or, :class:`graphprune.io.Stripped`,
    filled) when small, else written with external data into a private temporary folder, removed on exit (a
    session's mapping outlives it)."""
    proto = model.model if isinstance(model, io.Stripped) else model
    if not lean(proto):  # a stripped initializer counts its full size: data_size reads dims only
        yield model.filled() if isinstance(model, io.Stripped) else model
        return
    with io.model_file(model) as path:
        yield path


def session(model: Runnable, *, optimize: bool = True, threads: int = 0, once: bool = False,
            profile_prefix: str | None = None) -> ort.InferenceSession:
    """An onnxruntime session on the best provider here (CUDA when present), from a proto or a file. ``once``:
    for a session run on one batch (verification): onnxruntime does not pack the weights ahead, which would
    hold a second copy of them for a speed-up a single run does not see; nor does it fuse QuantizeLinear /
    DequantizeLinear pairs into integer kernels (QLinearConv …), which round differently from the ops as written:
    a masked original, whose ``Where`` nodes stop the fusion, then differed from a right pruned model by a
    quantization step."""
    opts = ort.SessionOptions()
    if once:
        opts.add_session_config_entry("session.disable_prepacking", "1")
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 4  # failures are reported by graphprune, in one line
    if threads:
        opts.intra_op_num_threads = threads
    if profile_prefix is not None:  # onnxruntime's per-kernel profiler, written to this path prefix (see profile)
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
        # sessions profiled in turns: a pool left spinning after its run would take the cores from the next one
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        with contextlib.nullcontext(model) if isinstance(model, Path) else runnable(model) as m:
            what = str(m) if isinstance(m, Path) else m.SerializeToString()
            return ort.InferenceSession(what, opts, providers=providers())
    except Exception as exc:
        raise VerificationError(f"onnxruntime cannot load the model: {first_line(exc)}") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# onnxruntime registers these contrib ops in the ONNX domain (its transformer optimiser writes them there), where
# the ONNX checker has no schema: a model holding them is valid for onnxruntime, which is what runs it.
RUNTIME_ONNX_DOMAIN_OPS = frozenset({"SimplifiedLayerNormalization"})
UNREGISTERED = re.compile(r"No Op registered for (\w+) with domain_version")


def check_model(model: Runnable, *, full_check: bool = False, path=None) -> None:
    """``onnx.checker.check_model`` for models of any size: a file (see :func:`runnable`) is checked from its
    path; a proto over protobuf's 2 GB from ``path`` (the file it was read from, if any) or a temporary copy.
    onnxruntime's ONNX-domain contrib ops (:data:`RUNTIME_ONNX_DOMAIN_OPS`) are checked as the contrib ops they
    are: everything else in the model still goes through the checker."""
    try:
        check_any_size(model, full_check=full_check, path=path)
    except onnx.checker.ValidationError as exc:
        found = UNREGISTERED.search(str(exc))
        if not (found and found.group(1) in RUNTIME_ONNX_DOMAIN_OPS and isinstance(model, onnx.ModelProto)):
            raise
        check_any_size(as_contrib_domain(model), full_check=full_check, path=None)


def as_contrib_domain(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with onnxruntime's ONNX-domain contrib ops moved to com.microsoft (checked there as
    ops of a domain the checker does not know, like every com.microsoft op)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in RUNTIME_ONNX_DOMAIN_OPS:
            node.domain = "com.microsoft"
    if not any(o.domain == "com.microsoft" for o in copy.opset_import):
        copy.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return copy


def check_any_size(model: Runnable, *, full_check: bool, path) -> None:
    if isinstance(model, Path):
        onnx.checker.check_model(str(model), full_check=full_check)
    elif not io.is_large(model):
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
            feeds[vi.name] = np.asarray(rng.random(shape) < 0.5)  # a scalar (an If's condition) stays an array
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


@dataclass(frozen=True)
class KernelProfile:
    """Median time per run of each kernel onnxruntime ran (by its kernel name: the node's, or a name derived from
    it for fused and layout-converted nodes, or one of its own for reorders it inserted), their op types, and
    the median wall time of a run (the session's own overhead included)."""

    kernel_ms: Mapping[str, float]
    op_types: Mapping[str, str]
    wall_ms: float


def profile(models: Sequence[Runnable], feeds: Mapping[str, np.ndarray], *, runs: int = 10, warmup: int = 3,
            threads: int = 0) -> list[KernelProfile]:
    """Run each model ``warmup + runs`` times under onnxruntime's profiler, the models taking turns run by run (so
    a neighbour's job slows every model alike, not the one measured while it ran), and read each trace: each
    kernel's median time over the last ``runs`` runs (the first ones pay for allocation and weight packing). The
    traces are written to a private temporary folder, removed here."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="graphprune-profile-") as folder:
        sessions = [session(m, threads=threads, profile_prefix=str(Path(folder) / f"trace{i}"))
                    for i, m in enumerate(models)]
        for _ in range(warmup + runs):
            for sess in sessions:
                run(sess, feeds)
        return [kernel_profile(Path(sess.end_profiling()), warmup) for sess in sessions]


def kernel_profile(trace: Path, warmup: int) -> KernelProfile:
    """The :class:`KernelProfile` of an onnxruntime trace, from its run after the first ``warmup``."""
    import json

    events = json.loads(trace.read_text())
    model_runs = sorted((e["ts"], e["dur"]) for e in events
                        if e.get("cat") == "Session" and e.get("name") == "model_run")[warmup:]
    starts = np.array([ts for ts, _ in model_runs] or [0])
    per_run: dict[str, np.ndarray] = {}
    op_types: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= starts[0]:
            name = e["name"][: -len("_kernel_time")]
            times = per_run.setdefault(name, np.zeros(len(starts)))
            times[np.searchsorted(starts, e["ts"], side="right") - 1] += e["dur"]
            op_types[name] = e.get("args", {}).get("op_name", "")
    # medians over runs: a run the OS preempted inflates a mean, not the median
    return KernelProfile(MappingProxyType({k: float(np.median(v)) / 1e3 for k, v in per_run.items()}),
                         MappingProxyType(op_types), float(np.median([d for _, d in model_runs] or [0])) / 1e3)
