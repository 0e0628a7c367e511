"""GraphSafeSGD against torch.optim.SGD, and fused against foreach SGD, update by update over a
whole 1cycle schedule; and the in-place guarantees (state round trip, stable hyperparameter
tensors) that CUDA-graph replay relies on.

The equivalence tests run in lockstep: before every step both optimizers get the same parameters,
momentum buffers and gradients (the reference's, copied), so what is compared is one update, at
float rounding. Comparing two free-running training runs instead cannot tell a wrong formula from
a different rounding: once a one-ulp difference flips a ReLU the trajectories part, and where that
happens depends on the CPU's kernels (issue 23: 3.6e-3 apart after 50 steps on an AMX Xeon).
"""

import copy
import io
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from sc_fast.optim import GraphSafeSGD
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


def batches(n: int, seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(n)]


def backward(model: nn.Module, x: Tensor, y: Tensor) -> None:
    nn.functional.cross_entropy(model(x), y).backward()


def train_graph_safe(model: nn.Module, opt: GraphSafeSGD, data: list, start: int = 0) -> None:
    for step, (x, y) in enumerate(data, start=start):
        opt.set_hyperparams(SCHEDULE.lr(step), SCHEDULE.momentum(step))
        opt.zero_grad()
        backward(model, x, y)
        opt.step()


# ---- one interface over both optimizers, for the lockstep comparison --------------------------------

class TorchSGD:
    """torch.optim.SGD (foreach or fused) seen as: set LR and momentum, step, read/write momentum buffers."""

    def __init__(self, model: nn.Module, weight_decay: float, nesterov: bool, **impl: bool) -> None:
        self.params = list(model.parameters())
        self.opt = torch.optim.SGD(self.params, lr=SCHEDULE.lr(0), momentum=SCHEDULE.momentum(0),
                                   weight_decay=weight_decay, nesterov=nesterov, **impl)

    def set_hyperparams(self, lr: float, momentum: float) -> None:
        for group in self.opt.param_groups:
            group["lr"], group["momentum"] = lr, momentum

    def step(self) -> None:
        self.opt.step()

    def buffers(self) -> list[Tensor | None]:  # None before the first step: torch creates them then
        return [self.opt.state[p].get("momentum_buffer") for p in self.params]

    def load_buffers(self, bufs: list[Tensor | None]) -> None:
        for p, b in zip(self.params, bufs, strict=True):
            if b is not None:
                self.opt.state[p]["momentum_buffer"] = b.clone()


class GraphSafe:
    def __init__(self, model: nn.Module, weight_decay: float, nesterov: bool) -> None:
        self.opt = GraphSafeSGD(model.parameters(), weight_decay, nesterov, CPU)
        self.set_hyperparams, self.step = self.opt.set_hyperparams, self.opt.step

    def buffers(self) -> list[Tensor | None]:
        return list(self.opt.buffers)

    def load_buffers(self, bufs: list[Tensor | None]) -> None:
        with torch.no_grad():
            for mine, b in zip(self.opt.buffers, bufs, strict=True):
                mine.copy_(b if b is not None else torch.zeros_like(mine))  # in place, as the graph needs


def close_fp32(a: Tensor, b: Tensor, what: str) -> None:
    # One update of fp32 values: the two differ by a rounding or two (torch fuses d + m*buf into one
    # add with alpha=m; GraphSafeSGD multiplies first), far below any error in the formula.
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=lambda m: f"{what}: {m}")


def lockstep(ref_model: nn.Module, ref: TorchSGD, model: nn.Module, ours: TorchSGD | GraphSafe,
             data: list[tuple[Tensor, Tensor]]) -> None:
    """Steps the reference through ``data`` on its own trajectory; before each step ``ours`` is set to
    the reference's parameters, momentum buffers and gradients, and after it both updates must agree."""
    ref_params, params = list(ref_model.parameters()), list(model.parameters())
    for step, (x, y) in enumerate(data):
        with torch.no_grad():
            for p, r in zip(params, ref_params, strict=True):
                p.copy_(r)
        ours.load_buffers(ref.buffers())
        ref.opt.zero_grad()
        backward(ref_model, x, y)
        for p, r in zip(params, ref_params, strict=True):
            p.grad = r.grad.clone()
        for opt in (ref, ours):
            opt.set_hyperparams(SCHEDULE.lr(step), SCHEDULE.momentum(step))
            opt.step()
        for i, (p, r) in enumerate(zip(params, ref_params, strict=True)):
            close_fp32(p.detach(), r.detach(), f"step {step}, parameter {i}")
        for i, (b, rb) in enumerate(zip(ours.buffers(), ref.buffers(), strict=True)):
            close_fp32(b, rb, f"step {step}, momentum buffer {i}")


def fused_sgd_runs_on_cpu() -> bool:
    """torch checks the device in step(), not the constructor: one step on a one-element parameter."""
    p = torch.zeros(1, requires_grad=True)
    p.grad = torch.zeros_like(p)
    try:
        torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=True).step()
    except (RuntimeError, NotImplementedError):
        return False
    return True


@pytest.mark.parametrize("weight_decay", [0.0, 1e-4, 5e-4])
@pytest.mark.parametrize("nesterov", [False, True])
def test_graph_safe_sgd_update_equals_torch_sgd_at_every_step_of_1cycle(nesterov: bool,
                                                                        weight_decay: float) -> None:
    ref_model, model = small_model(), small_model()
    ref = TorchSGD(ref_model, weight_decay, nesterov, foreach=True)
    lockstep(ref_model, ref, model, GraphSafe(model, weight_decay, nesterov), batches(STEPS))
    assert not torch.equal(ref_model[0].weight, small_model()[0].weight)  # it trained


@pytest.mark.parametrize("weight_decay", [0.0, 1e-4, 5e-4])
@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_sgd_update_equals_foreach_at_every_step_of_1cycle(nesterov: bool, weight_decay: float) -> None:
    if not fused_sgd_runs_on_cpu():
        pytest.skip(f"torch {torch.__version__} has no fused SGD kernel for the CPU")
    ref_model, model = small_model(), small_model()
    ref = TorchSGD(ref_model, weight_decay, nesterov, foreach=True)
    lockstep(ref_model, ref, model, TorchSGD(model, weight_decay, nesterov, fused=True), batches(STEPS))


def assert_same_params(a: nn.Module, b: nn.Module, close: Callable[..., None]) -> None:
    sa, sb = dict(a.named_parameters()), dict(b.named_parameters())
    assert sa.keys() == sb.keys()
    for k in sa:
        close(sa[k], sb[k], msg=lambda m, k=k: f"{k}: {m}")


def identical(a: Tensor, b: Tensor, msg: Callable[[str], str]) -> None:
    assert torch.equal(a, b), msg("not bitwise equal")


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
