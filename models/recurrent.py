"""LSTM and GRU sequence classifiers.

Why they exist: pruning a recurrent layer's hidden size must remove the same unit from every gate block of
W, R and B, a column of R, and the matching features of every layer that reads the hidden state (the next
stacked layer, the other direction of a bidirectional layer, the head).
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import finalize


class SequenceClassifier(nn.Module):
    def __init__(self, cell: type[nn.Module], features: int = 6, embed: int = 16, hidden: int = 24,
                 bidirectional: bool = True, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(features, embed)
        self.rnn = cell(embed, hidden, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(torch.relu(self.embed(x)))
        return self.fc(y[:, -1])


def lstm_classifier() -> SequenceClassifier:
    torch.manual_seed(0)
    return finalize(SequenceClassifier(nn.LSTM))


def gru_classifier() -> SequenceClassifier:
    torch.manual_seed(0)
    return finalize(SequenceClassifier(nn.GRU, bidirectional=False))
