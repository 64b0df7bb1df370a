"""TPP under DistributedDataParallel: 2 CPU processes (gloo), a few steps with the hooks; the ranks must end with
identical weights and the pruned filters must shrink. See docs/tpp.md for torchrun."""

from __future__ import annotations

import os
import socket

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

STEPS = 20


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.bn2(self.conv2(x))).mean((2, 3)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out: str) -> None:
    from graphprune.torch import TPP

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        model = nn.parallel.DistributedDataParallel(Net())
        tpp = TPP(model, example_inputs=(torch.zeros(1, 3, 8, 8),), ratio=0.5, schedule="fast", delta=0.2,
                  every=1, stabilise=0)
        before = {name: [float(n.mean()) for n in norms] for name, norms in tpp.filter_norms().items()}
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(100 + rank)  # each rank sees different data
        model.train()
        for _ in range(STEPS):
            x = torch.randn(16, 3, 8, 8, generator=g)
            y = torch.randint(0, 4, (16,), generator=g)
            loss = nn.functional.cross_entropy(model(x), y) + tpp.penalty()
            opt.zero_grad()
            loss.backward()
            tpp.before_step()
            opt.step()
            tpp.after_step()
        after = {name: [float(n.mean()) for n in norms] for name, norms in tpp.filter_norms().items()}
        # parameters only: BN running statistics are per-rank buffers (DDP broadcasts rank 0's at each forward)
        state = {k: v.detach().clone() for k, v in model.module.named_parameters()}
        torch.save({"state": state, "before": before, "after": after, "lam": tpp.lam}, os.path.join(out, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_tpp_under_ddp_two_ranks_stay_identical(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert r0["lam"] == r1["lam"] == 1.0
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        torch.testing.assert_close(r0["state"][k], r1["state"][k], rtol=0, atol=0, msg=k)
    for name, (kept0, pruned0) in r0["before"].items():
        kept1, pruned1 = r0["after"][name]
        assert pruned1 < 0.5 * pruned0, (name, pruned0, pruned1)
        assert pruned1 < 0.5 * kept1, (name, kept1, pruned1)
