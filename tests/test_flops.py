"""FLOPs and bytes of a training step (sc_fast.flops): FlopCounterMode's count of ResNet-56 against
a hand count of its convolutions, forward + backward against 3x forward, the byte estimate's
shape, and the caller's model left as it was.

Nothing here is timed: the counts depend on shapes alone."""

import math

import pytest
import torch
import torch.nn.functional as F

from sc_fast.flops import StepCost, count_step, train_step_cost
from sc_fast.model import resnet56

BATCH = 4


def conv_flop(size: int, cout: int, cin: int, k: int = 3) -> int:
    """One conv's multiply-adds as 2 FLOPs each: every output position of every output channel
    sums cin x k x k products (biases are not matmul FLOPs)."""
    return size * size * cout * cin * k * k * 2


def hand_forward_flop_per_img() -> int:
    """ResNet-56 as sc_fast.model builds it (the paper's Appendix A network), 32x32 input.

    The downsampling block of stages 2 and 3 runs at the previous stage's width: a stride-2 conv1
    and a conv2 at the halved size, then zero channels double the width. Shortcuts (identity, a
    3x3/2 average pool, the zero concat) are parameter-free: no FLOPs counted."""
    stem = conv_flop(32, 16, 3)
    stage1 = 9 * 2 * conv_flop(32, 16, 16)  # 9 blocks x 2 convs, 16 channels at 32x32
    stage2 = 2 * conv_flop(16, 16, 16) + 8 * 2 * conv_flop(16, 32, 32)  # downsampling block, 8 blocks at 16x16
    stage3 = 2 * conv_flop(8, 32, 32) + 8 * 2 * conv_flop(8, 64, 64)  # downsampling block, 8 blocks at 8x8
    fc = 64 * 10 * 2
    return stem + stage1 + stage2 + stage3 + fc


def batch(n: int, channels_last: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (n,), generator=g)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return resnet56()


def test_hand_count_is_about_a_quarter_gflop() -> None:
    """The paper's ResNet-56 is ~0.24 GFLOP forward per image (cheaper than He et al.'s ~0.25:
    its downsampling convs stay at the narrower width)."""
    assert hand_forward_flop_per_img() == pytest.approx(0.2415e9, rel=1e-3)


def test_forward_flops_match_the_hand_count(model: torch.nn.Module) -> None:
    x, _ = batch(BATCH)
    with torch.no_grad():
        cost = count_step(lambda: model(x), images=BATCH)
    assert cost.flop_per_img == pytest.approx(hand_forward_flop_per_img(), rel=0.02)


def test_a_training_step_is_three_forwards(model: torch.nn.Module) -> None:
    """Backward computes the input and the weight gradients of every conv and linear layer, two
    forwards' worth; the stem's input needs no gradient, so the step is a little under 3x."""
    x, y = batch(BATCH)
    step = train_step_cost(model, x, y, "fp32")
    assert step.flop_per_img / hand_forward_flop_per_img() == pytest.approx(3.0, rel=0.05)
    assert step.flop_per_img <= 3 * hand_forward_flop_per_img()
    assert step.gflop_per_img == pytest.approx(step.flop_per_img / 1e9)


def test_the_count_does_not_depend_on_precision_or_layout(model: torch.nn.Module) -> None:
    """FLOPs are shapes: tf32 and bf16 autocast, and channels_last, count the same model FLOPs."""
    x, y = batch(BATCH)
    fp32 = train_step_cost(model, x, y, "fp32").flop_per_img
    assert train_step_cost(model, x, y, "tf32").flop_per_img == fp32
    assert train_step_cost(model, x, y, "bf16").flop_per_img == fp32
    cl = model.to(memory_format=torch.channels_last)
    try:
        xc, _ = batch(BATCH, channels_last=True)
        assert train_step_cost(cl, xc, y, "fp32").flop_per_img == fp32
    finally:
        model.to(memory_format=torch.contiguous_format)


def test_bytes_are_positive_per_image_and_give_the_intensity(model: torch.nn.Module) -> None:
    """Activations dominate the bytes, so the per-image figure hardly moves with the batch (the
    weights, read once per batch, are the part that does)."""
    costs = {n: train_step_cost(model, *batch(n), "fp32") for n in (2, 4)}
    for c in costs.values():
        assert c.bytes_per_img > 0 and math.isfinite(c.bytes_per_img)
        assert c.intensity_flop_per_byte == pytest.approx(c.flop_per_img / c.bytes_per_img)
    assert costs[2].bytes_per_img == pytest.approx(costs[4].bytes_per_img, rel=0.3)
    assert costs[2].bytes_per_img >= costs[4].bytes_per_img  # weights shared by fewer images


def test_bf16_autocast_bytes_are_counted_too(model: torch.nn.Module) -> None:
    c = train_step_cost(model, *batch(2), "bf16")
    assert c.bytes_per_img > 0 and math.isfinite(c.bytes_per_img) and c.intensity_flop_per_byte > 0


def test_the_callers_model_is_untouched(model: torch.nn.Module) -> None:
    """Weights, BN running statistics, gradients and the eval/train mode stay as they were."""
    x, y = batch(BATCH)
    F.cross_entropy(model(x), y).backward()  # the caller holds gradients
    model.eval()
    try:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        train_step_cost(model, *batch(BATCH, seed=1), "fp32")
        assert not model.training
        for k, v in model.state_dict().items():
            assert torch.equal(v, state[k]), k
        for k, p in model.named_parameters():
            assert torch.equal(p.grad, grads[k]), k
    finally:
        model.train()
        model.zero_grad(set_to_none=True)


def test_count_step_counts_a_plain_matmul() -> None:
    """2 x m x k x n for an (m, k) @ (k, n) product; bytes: both inputs and the output."""
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    cost = count_step(lambda: a @ b, images=2)
    assert cost.flop_per_img == 2 * 8 * 16 * 4 / 2
    assert cost.bytes_per_img == (8 * 16 + 16 * 4 + 8 * 4) * 4 / 2


def test_views_move_no_bytes() -> None:
    a = torch.randn(64, 64)
    cost = count_step(lambda: a.view(-1)[:10].unsqueeze(0).t(), images=1)
    assert cost.bytes_per_img == 0 and cost.flop_per_img == 0
    assert StepCost(0.0, 0.0).intensity_flop_per_byte == float("inf")


def test_bad_arguments_are_refused(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError):
        count_step(lambda: None, images=0)
    with pytest.raises(ValueError, match="precision"):
        train_step_cost(model, *batch(2), "fp8")
