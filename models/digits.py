"""Small CNNs trained on scikit-learn's ``load_digits``: real data, offline, seconds on two CPU cores.

``load_digits`` ships 1,797 greyscale 8×8 handwritten digits (10 classes) inside scikit-learn. The split is
stratified and seeded (75% train, 25% test); pixels are scaled to [0, 1] and standardised with the training
mean and standard deviation. Two models, both with BatchNorm after every conv (exported *unfolded*, so
BN-scale pruning has its γ):

* ``digits_resnet``: 3×3 stem (16) + three BasicBlocks (16, 32 /2, 64 /2; identity and 1×1-projection
  shortcuts), global average pool, Linear;
* ``digits_vgg``: [conv-bn-relu ×2, maxpool] at widths 32 and 64, flatten of a 64×2×2 map, Linear(256, 128),
  ReLU, Linear(128, 10).

Checkpoints are not committed: :func:`train` makes them (seeded) in well under a minute each.

    python -m models.digits --out DIR     # trains both, prints test accuracy, writes DIR/NAME.onnx
    python -m models.digits --example examples/digits   # the committed first-run example (see write_example)
"""

from __future__ import annotations

import argparse
import pathlib
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.plain import conv_bn_relu
from models.resnet import BasicBlock

INPUT_SHAPE = (1, 1, 8, 8)


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray  # (N, 1, 8, 8) float32, standardised
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(seed: int = 0, test_size: float = 0.25) -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, data.target.astype(np.int64), test_size=test_size,
                                              random_state=seed, stratify=data.target)
    mean, std = float(x_tr.mean()), float(x_tr.std())
    return Digits((x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te)


class DigitsResNet(nn.Module):
    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True))
        self.layers = nn.Sequential(BasicBlock(w1, w1), BasicBlock(w1, w2, 2), BasicBlock(w2, w3, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class DigitsVGG(nn.Module):
    def __init__(self, widths: tuple[int, int] = (32, 64), hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        w1, w2 = widths
        self.features = nn.Sequential(conv_bn_relu(1, w1), conv_bn_relu(w1, w1), nn.MaxPool2d(2),
                                      conv_bn_relu(w1, w2), conv_bn_relu(w2, w2), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(w2 * 2 * 2, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(torch.flatten(self.features(x), 1))))


DIGITS_MODELS = {"digits_resnet": DigitsResNet, "digits_vgg": DigitsVGG}


def shifted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to one pixel (zero padding): the only augmentation."""
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2,), generator=generator).tolist()
    return padded[:, :, dy:dy + 8, dx:dx + 8]


def train(model: nn.Module, data: Digits, *, epochs: int = 30, lr: float = 5e-3, batch_size: int = 128,
          seed: int = 0, weight_decay: float = 5e-4) -> nn.Module:
    """Adam with a cosine schedule on the training split, random shifts; returns the model in eval mode."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    return fit(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, weight_decay=weight_decay,
               augment=shifted)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, seed: int,
        batch_size: int = 128, weight_decay: float = 0.0, augment=None) -> nn.Module:
    """Adam with a cosine schedule and cross-entropy; ``augment(batch, generator)`` if given."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            batch = x[idx] if augment is None else augment(x[idx], g)
            opt.zero_grad()
            loss_fn(model(batch), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return DIGITS_MODELS[name]()


def export(model: nn.Module, path: str | pathlib.Path) -> pathlib.Path:
    """ONNX (opset 17) with static input (1, 1, 8, 8), "input" → "output", BatchNorm kept (not folded)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(INPUT_SHAPE),), str(path), input_names=["input"], output_names=["output"],
                          opset_version=17, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                          do_constant_folding=False)
    return path


CALIB_POINTS = 512  # training points for --calib: what a user of the example has, without the labels


def write_example(out: pathlib.Path, seed: int = 0, epochs: int = 30) -> str:
    """The README's first run, committed under ``examples/digits`` so it needs neither torch nor a download:
    the trained ``digits_resnet.onnx``, ``calib.npz`` (512 unlabelled training points, for ``--calib``) and
    ``test.npz`` (the 450 held-out points with ``labels``, for ``--eval``)."""
    data = load_data(seed)
    model = train(build("digits_resnet", seed), data, epochs=epochs, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    export(model, out / "digits_resnet.onnx")
    pick = np.random.default_rng(seed).choice(len(data.x_train), CALIB_POINTS, replace=False)
    np.savez_compressed(out / "calib.npz", input=data.x_train[np.sort(pick)])
    np.savez_compressed(out / "test.npz", input=data.x_test, labels=data.y_test)
    return f"digits_resnet: test accuracy {accuracy(model, data.x_test, data.y_test):.4f} -> {out}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=pathlib.Path, help="train both models, write DIR/NAME.onnx")
    where.add_argument("--example", type=pathlib.Path, help="write the first-run example (model, calib, test data)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.example:
        print(write_example(args.example, args.seed, args.epochs))
        return 0
    data = load_data(args.seed)
    for name in DIGITS_MODELS:
        t0 = time.perf_counter()
        model = train(build(name, args.seed), data, epochs=args.epochs, seed=args.seed)
        acc = accuracy(model, data.x_test, data.y_test)
        print(f"{name}: test accuracy {acc:.4f}, trained in {time.perf_counter() - t0:.1f}s -> "
              f"{export(model, args.out / f'{name}.onnx')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
