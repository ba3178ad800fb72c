"""CUDA only (skipped without a GPU): the CUDA-graph training step updates the weights as the
eager step does, the warm-up of the capture leaves no trace, and bf16 autocast captures too."""

import pytest
import torch

from fdperf.features.videoset import VideoSet
from fdperf.train.step import TrainStep
from fdperf.tsa import TSA

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _videos(n, device):
    g = torch.Generator().manual_seed(0)
    gt = torch.stack([torch.randint(5, 45, (n,), generator=g), torch.randint(50, 90, (n,), generator=g)], 1)
    y = torch.rand(n, generator=g) * 100
    return VideoSet(
        [("v", i) for i in range(n)],
        torch.randn(n, 9, 1024, generator=g).to(device),
        torch.randn(n, 9, 1024, 4, 4, generator=g).to(device),
        y.to(device),
        gt.to(device),
        torch.zeros(n, dtype=torch.long, device=device),
        y.to(device),
    )


def _run(graph: bool, amp: bool = False, steps: int = 3):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = TSA().to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    step = TrainStep(model, opt, _videos(16, device), 8, device, amp)
    if graph:
        step.capture()
    losses = []
    for i in range(steps):
        step.rows.copy_(torch.arange(8, device=device).roll(i))
        step.ex_rows.copy_(torch.arange(8, 16, device=device))
        step.use_gt.fill_(i == 0)
        loss, _ = step()
        losses.append(float(loss))
    return model, losses


def test_graph_step_equals_eager_step():
    eager, l_eager = _run(graph=False)
    graphed, l_graph = _run(graph=True)
    assert l_graph == pytest.approx(l_eager, rel=1e-4)
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5), name


def test_bf16_graph_step_runs():
    _, losses = _run(graph=True, amp=True)
    assert all(torch.isfinite(torch.tensor(losses)))
