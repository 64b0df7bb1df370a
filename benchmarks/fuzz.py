"""Fuzzing the CLI with mutated models: bytes (truncation, flips, garbage) and structure (attributes, dims,
dtypes, dropped nodes, dangling inputs, opsets). Counts tracebacks / internal errors (must be 0) and invalid
outputs written (must be 0).

    python benchmarks/fuzz.py --cases 1000 [--seed 0] [--out benchmarks/results/fuzz.json]

The same harness runs a seeded subset in the test suite (tests/robustness/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Outcome:
    mutation: str
    exit_code: int | None  # None: an exception escaped main()
    traceback: bool
    invalid_output: bool
    message: str


# ---- mutations -------------------------------------------------------------------------------------------


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["truncate", "flip", "garbage", "empty", "prefix"])
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "flip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return kind, bytes(b)
    if kind == "garbage":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
    if kind == "prefix":
        return kind, b"\x89PNG\r\n" + data
    return kind, b""


def mutate_structure(model: onnx.ModelProto, rng: random.Random) -> str:
    g = model.graph
    kind = rng.choice(["attr", "input_dim", "init_dims", "dtype", "drop_node", "dangling", "opset", "init_dtype",
                       "dup_output", "attr_type"])
    nodes_with_attrs = [n for n in g.node if n.attribute]
    if kind == "attr" and nodes_with_attrs:
        a = rng.choice(rng.choice(nodes_with_attrs).attribute)
        value = rng.choice([0, -1, 1, 2, 3, 7, 10**9, -(10**9)])
        if a.type == onnx.AttributeProto.INT:
            a.i = value
        elif a.type == onnx.AttributeProto.INTS and a.ints:
            a.ints[rng.randrange(len(a.ints))] = value
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = float(value)
        return f"attr:{a.name}"
    if kind == "attr_type" and nodes_with_attrs:
        n = rng.choice(nodes_with_attrs)
        a = n.attribute[rng.randrange(len(n.attribute))]
        name = a.name
        n.attribute.remove(a)
        n.attribute.append(onnx.helper.make_attribute(name, "text"))
        return f"attr_type:{name}"
    if kind == "input_dim":
        dims = g.input[0].type.tensor_type.shape.dim
        d = dims[rng.randrange(len(dims))]
        d.Clear()
        choice = rng.choice([0, 1, 3, 10**6, 10**9, None])
        if choice is None:
            d.dim_param = "dyn"
        else:
            d.dim_value = choice
        return "input_dim"
    if kind == "init_dims" and g.initializer:
        init = rng.choice(list(g.initializer))
        if init.dims:
            init.dims[rng.randrange(len(init.dims))] = rng.choice([0, 1, 2, 1000])
        return "init_dims"
    if kind == "dtype":
        g.input[0].type.tensor_type.elem_type = rng.choice([onnx.TensorProto.INT64, onnx.TensorProto.FLOAT16,
                                                             onnx.TensorProto.STRING, 0, 99])
        return "dtype"
    if kind == "init_dtype" and g.initializer:
        init = rng.choice(list(g.initializer))
        init.data_type = rng.choice([onnx.TensorProto.INT8, onnx.TensorProto.DOUBLE, 0])
        return "init_dtype"
    if kind == "drop_node" and len(g.node) > 1:
        del g.node[rng.randrange(len(g.node))]
        return "drop_node"
    if kind == "dangling" and g.node:
        n = rng.choice(list(g.node))
        if n.input:
            n.input[rng.randrange(len(n.input))] = "no_such_tensor"
        return "dangling"
    if kind == "dup_output" and len(g.node) > 1:
        g.node[-1].output[0] = g.node[0].output[0]
        return "dup_output"
    model.opset_import[0].version = rng.choice([1, 6, 9, 12, 30, 99])
    return "opset"


# ---- running one case ------------------------------------------------------------------------------------


def output_is_valid(path: Path) -> bool:
    from graphprune.runtime import session

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        session(model)
        return True
    except Exception:
        return False


def run_case(data: bytes, mutation: str, folder: Path) -> Outcome:
    from graphprune.cli.main import main

    src, out = folder / "in.onnx", folder / "out.onnx"
    src.write_bytes(data)
    out.unlink(missing_ok=True)
    err = io.StringIO()
    escaped = False
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(src), "-o", str(out), "-q", "--ratio", "0.5", "--budget", "channels"])
        except BaseException as exc:  # noqa: BLE001 - that is what we count
            code, escaped = None, True
            err.write(f"{type(exc).__name__}: {exc}")
    text = err.getvalue().strip()
    tb = escaped or code == 4 or "Traceback" in text or len(text.splitlines()) > 1
    leftovers = [p for p in folder.iterdir() if p.name not in ("in.onnx", "out.onnx")]
    invalid = (out.exists() and (code != 0 or not output_is_valid(out))) or bool(leftovers)
    for p in leftovers:
        p.unlink()
    return Outcome(mutation, code, tb, invalid, text.splitlines()[0] if text else "")


def base_models() -> dict[str, bytes]:
    from models.handbuilt import HANDBUILT_MODELS

    return {name: fn().SerializeToString() for name, fn in HANDBUILT_MODELS.items()}


def fuzz(cases: int, seed: int) -> list[Outcome]:
    rng = random.Random(seed)
    bases = base_models()
    names = sorted(bases)
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(cases):
            data = bases[names[i % len(names)]]
            if rng.random() < 0.35:
                kind, mutated = mutate_bytes(data, rng)
                mutation = f"bytes:{kind}"
            else:
                model = onnx.ModelProto()
                model.ParseFromString(data)
                mutation = "struct:" + mutate_structure(model, rng)
                mutated = model.SerializeToString()
            outcomes.append(run_case(mutated, mutation, folder))
    return outcomes


def summary(outcomes: list[Outcome]) -> dict:
    return {
        "cases": len(outcomes),
        "tracebacks": sum(o.traceback for o in outcomes),
        "invalid_outputs": sum(o.invalid_output for o in outcomes),
        "exit_codes": dict(Counter(str(o.exit_code) for o in outcomes)),
        "mutations": dict(Counter(o.mutation for o in outcomes)),
        "failures": [o.__dict__ for o in outcomes if o.traceback or o.invalid_output][:50],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/fuzz.json"))
    args = ap.parse_args()
    np.seterr(all="ignore")
    result = summary(fuzz(args.cases, args.seed))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}, indent=2))
    for f in result["failures"][:20]:
        print(f)


if __name__ == "__main__":
    main()
