"""Torch models named on the command line as ``path/to/model.py:function``.

The file is the user's own code and is executed, like ``python model.py`` would; checkpoints given with
``--weights`` are read with ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from graphprune.errors import ModelLoadError, UsageError

SPEC = re.compile(r"^(?P<file>.+\.py):(?P<func>[A-Za-z_]\w*)$")


def is_torch_spec(text: str) -> bool:
    return bool(SPEC.match(text))


def load_module(spec: str, weights: str | None = None):
    """Call ``function`` from ``file.py`` and return the ``nn.Module`` it builds (eval mode), weights loaded."""
    return load_with_inputs(spec, weights)[0]


def load_with_inputs(spec: str, weights: str | None = None):
    """``(module, example_inputs)``: ``function`` may return a module, or a module and its example inputs (a
    tensor or a tuple: token ids, say, which ``--example-input`` shapes cannot give); ``example_inputs`` is None
    when it returned only the module."""
    import torch

    m = SPEC.match(spec)
    if m is None:
        raise UsageError(f"'{spec}': expected FILE.py:FUNCTION")
    path = Path(m["file"])
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:  # under its own name, so that a saved (pickled) module refers to ``<stem>.<Class>``
        loader = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules.setdefault(path.stem, module)
        loader.loader.exec_module(module)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot import it ({type(exc).__name__}: {exc})") from exc
    build = getattr(module, m["func"], None)
    if not callable(build):
        raise UsageError(f"{path} has no function '{m['func']}'")
    try:
        model = build()
    except Exception as exc:
        raise ModelLoadError(f"{spec}() failed: {type(exc).__name__}: {exc}") from exc
    inputs = None
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], torch.nn.Module):
        model, inputs = model
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights:
        load_weights(model, Path(weights))
    return model.eval(), inputs


def load_weights(model, path: Path) -> None:
    import torch

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a weights-only checkpoint ({type(exc).__name__}); save a state_dict") from exc
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise ModelLoadError(f"{path}: does not fit the model: {str(exc).splitlines()[0]}") from exc


def example_inputs(shapes: list[str] | None, seed: int = 0):
    """``--example-input 1,3,32,32`` (repeatable, one per forward argument) → a tuple of seeded tensors."""
    import torch

    if not shapes:
        raise UsageError("a torch model needs --example-input D0,D1,... (one per forward argument)")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for text in shapes:
        try:
            dims = tuple(int(d) for d in text.split(","))
        except ValueError:
            raise UsageError(f"--example-input '{text}': expected D0,D1,... e.g. 1,3,32,32") from None
        if not dims or any(d <= 0 for d in dims):
            raise UsageError(f"--example-input '{text}': dimensions must be positive")
        out.append(torch.randn(*dims, generator=gen))
    return tuple(out)
