"""GraphSafeSGD against torch.optim.SGD under a 1cycle schedule, fused against foreach SGD, and the
in-place guarantees (state round trip, stable hyperparameter tensors) that CUDA-graph replay relies on."""

import copy
import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

from sc_fast.optim import GraphSafeSGD, fused_sgd_available
from sc_fast.schedules import OneCycle

STEPS = 50
SCHEDULE = OneCycle(min_lr=0.05, max_lr=0.5, total_steps=STEPS, max_momentum=0.95, min_momentum=0.85)
CPU = torch.device("cpu")


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(n)]


def backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    nn.functional.cross_entropy(model(x), y).backward()


def train_torch(model: nn.Module, opt: torch.optim.SGD, data: list, start: int = 0) -> None:
    for step, (x, y) in enumerate(data, start=start):
        for group in opt.param_groups:
            group["lr"], group["momentum"] = SCHEDULE.lr(step), SCHEDULE.momentum(step)
        opt.zero_grad()
        backward(model, x, y)
        opt.step()


def train_graph_safe(model: nn.Module, opt: GraphSafeSGD, data: list, start: int = 0) -> None:
    for step, (x, y) in enumerate(data, start=start):
        opt.set_hyperparams(SCHEDULE.lr(step), SCHEDULE.momentum(step))
        opt.zero_grad()
        backward(model, x, y)
        opt.step()


def torch_sgd(model: nn.Module, weight_decay: float, nesterov: bool, **impl: bool) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=SCHEDULE.lr(0), momentum=SCHEDULE.momentum(0),
                           weight_decay=weight_decay, nesterov=nesterov, **impl)


def assert_same_params(a: nn.Module, b: nn.Module, close: Callable[..., None]) -> None:
    # Parameters only: BatchNorm running means near zero are sums that cancel, so the optimizers'
    # one-ulp differences show there as large relative errors without saying anything about the update.
    sa, sb = dict(a.named_parameters()), dict(b.named_parameters())
    assert sa.keys() == sb.keys()
    for k in sa:
        close(sa[k], sb[k], msg=lambda m, k=k: f"{k}: {m}")


def close_fp32(a: torch.Tensor, b: torch.Tensor, msg: Callable[[str], str]) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=msg)


def identical(a: torch.Tensor, b: torch.Tensor, msg: Callable[[str], str]) -> None:
    assert torch.equal(a, b), msg("not bitwise equal")


@pytest.mark.parametrize("weight_decay", [1e-4, 5e-4])
@pytest.mark.parametrize("nesterov", [False, True])
def test_graph_safe_sgd_matches_torch_sgd_over_1cycle(nesterov: bool, weight_decay: float) -> None:
    data = batches(STEPS)
    ref, ours = small_model(), small_model()
    train_torch(ref, torch_sgd(ref, weight_decay, nesterov, foreach=True), data)
    train_graph_safe(ours, GraphSafeSGD(ours.parameters(), weight_decay, nesterov, CPU), data)
    assert_same_params(ref, ours, close_fp32)
    assert not torch.equal(ref[0].weight, small_model()[0].weight)  # it trained


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_sgd_matches_foreach_over_1cycle(nesterov: bool) -> None:
    if not fused_sgd_available(CPU):
        pytest.skip(f"torch {torch.__version__} has no fused SGD kernel for the CPU")
    data = batches(STEPS)
    foreach, fused = small_model(), small_model()
    train_torch(foreach, torch_sgd(foreach, 5e-4, nesterov, foreach=True), data)
    train_torch(fused, torch_sgd(fused, 5e-4, nesterov, fused=True), data)
    assert_same_params(foreach, fused, close_fp32)


def test_state_dict_round_trip_resumes_exactly() -> None:
    data = batches(20)
    a = small_model()
    opt_a = GraphSafeSGD(a.parameters(), 5e-4, True, CPU)
    train_graph_safe(a, opt_a, data[:10])

    buf = io.BytesIO()  # through torch.save, as a checkpoint would go
    torch.save(opt_a.state_dict(), buf)
    b = copy.deepcopy(a)
    opt_b = GraphSafeSGD(b.parameters(), 5e-4, True, CPU)
    ptrs = [t.data_ptr() for t in opt_b.buffers]
    buf.seek(0)
    opt_b.load_state_dict(torch.load(buf))
    assert [t.data_ptr() for t in opt_b.buffers] == ptrs  # restored in place

    train_graph_safe(a, opt_a, data[10:], start=10)
    train_graph_safe(b, opt_b, data[10:], start=10)
    assert_same_params(a, b, identical)
    for (k, sa), sb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(sa, sb), k  # BatchNorm statistics too: the runs are the same computation


def test_state_dict_is_a_snapshot_and_reset_zeroes_in_place() -> None:
    model = small_model()
    opt = GraphSafeSGD(model.parameters(), 1e-4, False, CPU)
    train_graph_safe(model, opt, batches(2))
    saved = opt.state_dict()
    assert any(b.abs().sum() > 0 for b in saved["momentum_buffers"])
    ptrs = [t.data_ptr() for t in opt.buffers]
    opt.reset()
    assert [t.data_ptr() for t in opt.buffers] == ptrs
    assert all(torch.count_nonzero(b) == 0 for b in opt.buffers)
    assert any(b.abs().sum() > 0 for b in saved["momentum_buffers"])  # the snapshot did not follow


def test_set_hyperparams_writes_into_the_same_tensors() -> None:
    opt = GraphSafeSGD(small_model().parameters(), 1e-4, False, CPU)
    lr, momentum = opt.lr, opt.momentum
    ptrs = (lr.data_ptr(), momentum.data_ptr())
    for step in (0, 20, 49):
        opt.set_hyperparams(SCHEDULE.lr(step), SCHEDULE.momentum(step))
        assert opt.lr is lr and opt.momentum is momentum
        assert (opt.lr.data_ptr(), opt.momentum.data_ptr()) == ptrs
        assert opt.lr.dim() == 0 and opt.lr.dtype == torch.float32
        assert opt.lr.item() == pytest.approx(SCHEDULE.lr(step), rel=1e-6)
        assert opt.momentum.item() == pytest.approx(SCHEDULE.momentum(step), rel=1e-6)


def test_step_leaves_grads_and_skips_params_without_grad() -> None:
    model = small_model()
    opt = GraphSafeSGD(model.parameters(), 5e-4, True, CPU)
    opt.set_hyperparams(0.1, 0.9)
    x, y = batches(1)[0]
    backward(model, x, y)
    frozen = model[-1].bias
    frozen.grad = None
    before_bias = frozen.detach().clone()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    opt.step()
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, (p for p in model.parameters() if p.grad is not None)))
    assert torch.equal(frozen, before_bias)
    opt.zero_grad()
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters() if p.grad is not None)
