"""The CLI and the top-level API on a torch model: FILE.py:FUNCTION, --example-input, --weights."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

import graphprune  # noqa: E402
from graphprune.cli.main import main  # noqa: E402

USER_MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.bn = nn.BatchNorm2d(16)
            self.b = nn.Conv2d(16, 16, 3, padding=1)
            self.fc = nn.Linear(16 * 4 * 4, 10)

        def forward(self, x):
            y = torch.relu(self.bn(self.a(x)))
            y = torch.relu(self.b(y) + y)
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 4), 1))

    def build():
        torch.manual_seed(0)
        return Net()
""")


@pytest.fixture
def user_model(tmp_path):
    (tmp_path / "usermodel.py").write_text(USER_MODEL)
    return tmp_path / "usermodel.py"


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "graphprune.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_cli_prunes_a_torch_model_to_pt_and_onnx(user_model, tmp_path):
    sys.path.insert(0, str(tmp_path))
    import usermodel

    torch.save(usermodel.build().state_dict(), tmp_path / "w.pt")
    r = cli(f"{user_model.name}:build", "--example-input", "1,3,16,16", "--weights", "w.pt", "--ratio", "0.5",
            "--budget", "channels", "-o", "small.pt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "verification: passed" in r.stdout
    small = torch.load(tmp_path / "small.pt", weights_only=False)
    assert small.a.out_channels == 8 and small(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    r = cli(f"{user_model.name}:build", "--example-input", "1,3,16,16", "-o", "small.onnx", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import onnx
    onnx.checker.check_model(onnx.load(str(tmp_path / "small.onnx")), full_check=True)


@pytest.mark.parametrize("args,needle", [
    (["usermodel.py:build"], "needs --example-input"),
    (["usermodel.py:nope", "--example-input", "1,3,16,16"], "has no function 'nope'"),
    (["usermodel.py:build", "--example-input", "1,x"], "expected D0,D1"),
    (["usermodel.py:build", "--example-input", "1,3,16,16", "--weights", "missing.pt"], "no such file"),
    (["usermodel.py:build", "--example-input", "1,3,16,16", "--weights", "evil.pt"], "not a weights-only checkpoint"),
    (["usermodel.py:build", "--example-input", "1,3,16,16", "--fold"], "fold is for ONNX models"),
])
def test_cli_torch_errors_are_one_line(user_model, tmp_path, args, needle, monkeypatch, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    monkeypatch.chdir(tmp_path)  # in process (a subprocess per case cost 6 s of torch import): main() is the CLI
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert "pwned" not in out


def test_api_dispatches_modules_and_plans(user_model, tmp_path):
    sys.path.insert(0, str(tmp_path))
    import usermodel

    model, x = usermodel.build().eval(), torch.randn(1, 3, 16, 16)
    result = graphprune.prune(model, example_inputs=(x,), ratio=0.5, budget="channels", round_to=1)
    assert result.report.verification.ok and result.model.a.out_channels == 8
    plan = graphprune.plan(model, example_inputs=x, ratio=0.5, budget="channels", round_to=1)
    assert plan.units_removed == 8
    with pytest.raises(graphprune.UsageError, match="example_inputs"):
        graphprune.prune(model, ratio=0.5)


def test_cli_takes_example_inputs_from_the_build_function_and_captures_with_torch_export(tmp_path):
    """A decoder LM needs token ids, which --example-input shapes cannot give: FUNCTION returns (module, inputs);
    torch.fx cannot trace it (a mask built from a traced size), so torch.export captures it."""
    import json
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "lm.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(repo)!r})
        from models.llm import TRANSFORMER_MODELS

        def build():
            spec = TRANSFORMER_MODELS["llama_like"]
            return spec.build(), (spec.example(),)
    """))
    r = cli("lm.py:build", "--budget", "channels", "--round-to", "1", "-o", "small.pt", "--report", "report.json",
            "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frontend"] == "torch.export" and report["verification"]["ok"]
    assert report["params"]["ratio"] < 0.4
