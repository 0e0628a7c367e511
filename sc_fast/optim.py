"""An SGD update that can live inside a captured CUDA graph.

When forward, backward and update are captured as one CUDA graph and replayed, every Python
number the update used is frozen into the graph at capture time. torch.optim.SGD cannot cycle
momentum under replay: its momentum is a Python float (``_foreach_mul_(bufs, momentum)``, and the
fused kernel's schema takes ``float momentum``), and a Tensor lr reaches the foreach path as
``alpha=-lr``, which reads it back with ``.item()`` (a host sync, illegal during capture).

``GraphSafeSGD`` keeps lr and momentum in 0-dim device tensors that the host overwrites in place
before each replay, and builds the update only from ``torch._foreach_*`` overloads that take a
0-dim *device* tensor as the scalar (read by the kernel, never by the host). So 1cycle's LR and
momentum stay exact at every step with one capture and no recompilation. Its momentum buffers
exist from construction and are only ever written in place, so the graph's pointers stay valid
across ``reset()``, ``load_state_dict()`` and checkpoint restores.

The update is torch.optim.SGD's with dampening 0 and maximize off:
``d = g + wd*p; buf = m*buf + d; d = d + m*buf if nesterov else buf; p -= lr*d``.
torch sets ``buf = d`` on the first step; ``m*0 + d`` is the same, so zero buffers match it.
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

_Tensors = list[Tensor]


class GraphSafeSGD:
    """SGD with momentum whose hyperparameters are device tensors (see the module docstring)."""

    def __init__(self, params: Iterable[Tensor], weight_decay: float, nesterov: bool,
                 device: torch.device | str) -> None:
        self.params: _Tensors = list(params)
        if not self.params:
            raise ValueError("GraphSafeSGD needs at least one parameter")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)  # constant over a run, so a Python float is safe
        self.nesterov = nesterov
        device = torch.device(device)
        if not all(_on(p, device) for p in self.params):
            # The foreach kernels read lr and momentum on the parameters' device.
            raise ValueError(f"all parameters must be on {device}")
        # fp32 whatever the parameter dtype: the schedule's values must not be rounded to bf16.
        self.lr = torch.zeros((), dtype=torch.float32, device=device)
        self.momentum = torch.zeros((), dtype=torch.float32, device=device)
        self.buffers: _Tensors = [torch.zeros_like(p) for p in self.params]

    def set_hyperparams(self, lr: float, momentum: float) -> None:
        """Writes this step's values into the existing tensors (queued copies: no sync, no allocation)."""
        # fill_ keeps the storage a captured graph reads; assigning new tensors would not be seen.
        self.lr.fill_(lr)
        self.momentum.fill_(momentum)

    def _live(self) -> tuple[_Tensors, _Tensors, _Tensors]:
        """(params, grads, buffers) of the parameters that have a gradient, as torch.optim.SGD skips the rest."""
        # A host-side attribute check per parameter; no device work.
        live = [(p, p.grad, b) for p, b in zip(self.params, self.buffers) if p.grad is not None]
        if any(g.is_sparse for _, g, _ in live):
            raise RuntimeError("GraphSafeSGD does not support sparse gradients")
        return [p for p, _, _ in live], [g for _, g, _ in live], [b for _, _, b in live]

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient; no host sync, no data-dependent allocation."""
        params, grads, bufs = self._live()
        if not params:
            return
        # Same order of operations as torch's _multi_tensor_sgd, so the two agree to rounding.
        # Out of place: the grads stay what backward wrote (torch does the same when wd != 0).
        d = torch._foreach_add(grads, params, alpha=self.weight_decay) if self.weight_decay else grads
        torch._foreach_mul_(bufs, self.momentum)
        torch._foreach_add_(bufs, d)
        direction = _nesterov(d, bufs, self.momentum) if self.nesterov else bufs
        # _foreach_add_'s alpha is a Python Scalar (a Tensor would be read with .item()), so the
        # lr product is its own op on a 0-dim device tensor.
        torch._foreach_sub_(params, torch._foreach_mul(direction, self.lr))

    @torch.no_grad()
    def zero_grad(self) -> None:
        """Zeroes the gradients in place; there is deliberately no ``set_to_none``.

        A captured graph reads and writes the grad tensors it saw at capture. Setting them to None
        frees that storage (the allocator may hand it to another tensor while replays still write
        it) and makes the next eager backward allocate grads the graph never sees. In place,
        ``zero_grad()`` inside the captured region becomes a recorded memset each replay.
        """
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)

    @torch.no_grad()
    def reset(self) -> None:
        """Zeroes the momentum buffers in place, e.g. after warm-up, keeping the graph's pointers valid."""
        torch._foreach_zero_(self.buffers)

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (clones, not views) of the momentum buffers and current hyperparameter tensors."""
        return {
            "momentum_buffers": [b.detach().clone() for b in self.buffers],
            "lr": self.lr.detach().clone(),
            "momentum": self.momentum.detach().clone(),
            "weight_decay": self.weight_decay,
            "nesterov": self.nesterov,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copies a ``state_dict()`` into the existing tensors, so a captured graph sees the restore."""
        saved: _Tensors = state["momentum_buffers"]
        if len(saved) != len(self.buffers):
            raise ValueError(f"state has {len(saved)} momentum buffers, optimizer has {len(self.buffers)}")
        for i, (b, s) in enumerate(zip(self.buffers, saved)):
            if b.shape != s.shape:
                raise ValueError(f"momentum buffer {i}: shape {tuple(s.shape)} in state, {tuple(b.shape)} here")
        if (state["weight_decay"], state["nesterov"]) != (self.weight_decay, self.nesterov):
            raise ValueError("state was saved with a different weight_decay or nesterov setting")
        # copy_ (not rebinding) because the graph holds these buffers; it also moves a checkpoint
        # loaded on the CPU onto the device.
        torch._foreach_copy_(self.buffers, saved)
        self.lr.copy_(state["lr"])
        self.momentum.copy_(state["momentum"])


def _on(t: Tensor, device: torch.device) -> bool:
    # torch.device("cuda") names the current device and must match a tensor on "cuda:0".
    return t.device.type == device.type and (device.index is None or t.device.index == device.index)


def _nesterov(d: _Tensors, bufs: _Tensors, momentum: Tensor) -> _Tensors:
    # torch computes d + m*buf as one add with alpha=m; alpha cannot be a device tensor, so the
    # product is a separate op (equal up to one rounding).
    return torch._foreach_add(d, torch._foreach_mul(bufs, momentum))

