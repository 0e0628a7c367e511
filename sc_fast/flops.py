"""What one training step costs per image: model FLOPs and an estimate of the bytes it moves.

MFU (model FLOPs utilization) is achieved model FLOP/s over what the device can do:
``imgs_per_s * flop_per_img / peak``. Its numerator counts the *model's* FLOPs, the matmuls and
convolutions of the forward and backward pass, whatever the implementation really executes
(recomputation, padding, a slower algorithm do not raise it). The backward pass of a conv or a
linear layer costs two forwards (the gradient of the input and of the weight), so a training step
is about 3x the forward; the first conv's input needs no gradient, which makes it a little less.
Elementwise work (BN, ReLU, the add) and the SGD update (~4 FLOPs per parameter, 0.85M
parameters: under 0.002% of a step) are left out, as MFU conventions do.

The count comes from running the step once under ``torch.utils.flop_counter.FlopCounterMode``,
which sees every aten op dispatched. That instrumentation makes the step many times slower, so
it happens once per model configuration (precision, memory format), off the clock, on an eager
copy of the model; FLOPs per image do not change from step to step, nor with torch.compile.
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from sc_fast.train import PRECISIONS



@dataclass(frozen=True)
class StepCost:
    """One training step's cost per image.

    ``bytes_per_img`` is the eager upper estimate: every aten op of the step reads all its tensor
    inputs from device memory and writes all its outputs there. A fused or compiled step keeps
    intermediates in registers and caches and moves fewer bytes; caches are ignored altogether.
    Its intensity is therefore a lower estimate of what the step's arithmetic intensity can be."""

    flop_per_img: float  # forward + backward matmul/conv FLOPs (FlopCounterMode's count)
    bytes_per_img: float  # summed tensor input and output bytes of every op dispatched

    @property
    def gflop_per_img(self) -> float:
        return self.flop_per_img / 1e9

    @property
    def intensity_flop_per_byte(self) -> float:
        return self.flop_per_img / self.bytes_per_img if self.bytes_per_img > 0 else float("inf")


def _nbytes(t: torch.Tensor) -> int:
    """Bytes a kernel touches in ``t``: its elements, but no more than its storage (an expanded
    tensor repeats the same memory)."""
    dense = t.numel() * t.element_size()
    try:
        return min(dense, t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):  # a tensor without a plain storage
        return dense


def _tensors_bytes(tree: Any) -> int:
    """Bytes of the distinct tensors in a nested structure (a tensor passed twice is read once)."""
    seen: dict[int, torch.Tensor] = {}
    for leaf in tree_leaves(tree):
        if isinstance(leaf, torch.Tensor):
            seen[id(leaf)] = leaf
    return sum(_nbytes(t) for t in seen.values())


class ByteCounter(TorchDispatchMode):
    """Sums the input and output bytes of every aten op dispatched while it is active. Views move
    nothing and are skipped; an in-place op counts its tensor as read and written."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # runs below this mode: ops inside it are not seen twice
        if not func.is_view:
            self.nbytes += _tensors_bytes((args, kwargs)) + _tensors_bytes(out)
        return out


def count_step(step: Callable[[], object], images: int) -> StepCost:
    """Runs ``step()`` once under both counters and divides by ``images``. Slow: never call it
    inside a timed region."""
    if images <= 0:
        raise ValueError("images must be positive")
    with FlopCounterMode(display=False) as flops, ByteCounter() as moved:
        step()
    return StepCost(flop_per_img=flops.get_total_flops() / images, bytes_per_img=moved.nbytes / images)


def train_step_cost(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> StepCost:
    """The cost of ``sc_fast.train.make_step``'s forward and backward on the batch ``(x, y)``, at
    ``precision`` (fp32 | tf32 | bf16 | fp16), in ``x``'s device and memory format.

    Runs on a deep copy of ``model`` (eager, in training mode, gradients cleared as the step's
    ``zero_grad(set_to_none=True)`` leaves them), so the caller's model, its BN statistics and its
    gradients are untouched. No optimizer: the SGD update's FLOPs are left out (see the module
    docstring). No grad scaler either: scaling the loss adds one multiply, not a FLOP that counts."""
    if precision not in PRECISIONS:  # tf32: fp32 tensors, the same FLOPs and bytes as fp32
        raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    clone = copy.deepcopy(model).train()
    for p in clone.parameters():
        p.grad = None

    def step() -> None:
        with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(clone(x), y)
        loss.backward()

    return count_step(step, images=x.shape[0])
