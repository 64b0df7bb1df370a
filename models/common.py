"""Shared helpers for the reference model builders."""

from __future__ import annotations

import torch
from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


@torch.no_grad()
def finalize(model: nn.Module) -> nn.Module:
    """Randomize normalization layers and return ``model`` in eval mode.

    Freshly constructed BatchNorm/LayerNorm layers are (almost) identities
    (gamma=1, beta=0, mean=0, var=1), which would hide bugs in how a pruner
    slices or folds them. Draws come from torch's global RNG, so call this
    after ``torch.manual_seed`` for reproducible models.
    """
    for m in model.modules():
        if isinstance(m, _NORMS) and m.weight is not None:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()
