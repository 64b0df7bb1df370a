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


def control_flow_bases() -> list[bytes]:
    """The control-flow models of test_control_flow.py at batch 1 (the fuzz runs the CLI with no --input-shape)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_control_flow import if_on_input, if_on_shape, loop_reading_outer, scan_reading_outer

    out = []
    for build in (if_on_input, if_on_shape, loop_reading_outer, scan_reading_outer):
        m = build()
        for vi in (*m.graph.input, *m.graph.output):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param"):
                    d.Clear()
                    d.dim_value = 1
        out.append(m.SerializeToString())
    return out


def mutate_subgraph(model, rng) -> str:
    """A node inside a subgraph reads a missing tensor, is dropped, or a subgraph output is renamed."""
    import onnx

    subs = [a.g for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    g = rng.choice(subs)
    kind = rng.choice(["dangling", "drop_node", "output"])
    if kind == "dangling" and any(n.input for n in g.node):
        n = rng.choice([n for n in g.node if n.input])
        n.input[rng.randrange(len(n.input))] = "no_such_tensor"
    elif kind == "drop_node" and g.node:
        del g.node[rng.randrange(len(g.node))]
    else:
        g.output[0].name = "no_such_output"
    return f"subgraph:{kind}"


def test_fuzzed_control_flow_models_never_traceback_nor_write_invalid_output(tmp_path):
    import random

    import onnx

    rng = random.Random(17)
    bases = control_flow_bases()
    outcomes = []
    for i in range(12):
        model = onnx.ModelProto()
        model.ParseFromString(bases[i % 4])
        if i < 4:
            mutation = "none"
        elif i % 3 == 0:
            mutation = mutate_subgraph(model, rng)
        else:
            mutation = "struct:" + fuzz.mutate_structure(model, rng)
        outcomes.append(fuzz.run_case(model.SerializeToString(), mutation, tmp_path))
    bad = [o for o in outcomes if o.traceback or o.invalid_output]
    assert not bad, bad[:5]
    assert [o.exit_code for o in outcomes[:4]] == [0, 0, 0, 0], outcomes[:4]
    assert {o.exit_code for o in outcomes} <= {0, 1, 2, 3}


def quantized_bases(tmp_path) -> list[bytes]:
    """The quantized and narrow-stored models of test_quantized.py: dynamic (ConvInteger / MatMulInteger), static
    QDQ and QOperator, int8 weights behind a Cast."""
    import sys
    from pathlib import Path

    import onnx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_quantized import cast_net, dynamic_net, static_net

    paths = [dynamic_net(tmp_path), static_net(tmp_path, "QDQ"), static_net(tmp_path, "QOperator")]
    return [p.read_bytes() for p in paths] + [cast_net(onnx.TensorProto.INT8).SerializeToString()]


def test_fuzzed_quantized_models_never_traceback_nor_write_invalid_output(tmp_path):
    import random

    import onnx

    rng = random.Random(23)
    bases = quantized_bases(tmp_path)
    work = tmp_path / "cases"
    work.mkdir()
    outcomes = []
    for i in range(12):
        data, mutation = bases[i % 4], "none"
        if i >= 4:
            model = onnx.ModelProto()
            model.ParseFromString(data)
            mutation = "struct:" + fuzz.mutate_structure(model, rng)
            data = model.SerializeToString()
        outcomes.append(fuzz.run_case(data, mutation, work))
    bad = [o for o in outcomes if o.traceback or o.invalid_output]
    assert not bad, bad[:5]
    assert [o.exit_code for o in outcomes[:4]] == [0, 0, 0, 0], outcomes[:4]
    assert {o.exit_code for o in outcomes} <= {0, 1, 2, 3}
