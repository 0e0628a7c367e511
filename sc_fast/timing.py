"""Device-synchronized clocks.

GPU work is asynchronous: a host clock read without a synchronize measures launch time, not
work. Every read here synchronizes first, so call them only at the points where the training
loop is allowed to wait for the device (start, evaluation points, end).
"""

import time

import torch

from sc_fast import distributed


def synchronize(device: torch.device) -> None:
    """CPU-GPU sync point: blocks until all queued work on ``device`` has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates device-synchronized seconds over start/stop segments."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.total_s = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        synchronize(self.device)  # sync point: earlier work must not leak into this segment
        distributed.barrier()  # data parallel: every rank starts together
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Ends the segment; returns the running total."""
        assert self._t0 is not None, "stop() without start()"
        synchronize(self.device)  # sync point: the segment's work must be done before we read
        distributed.barrier()  # data parallel: the segment ends when the slowest rank's does
        self.total_s += time.perf_counter() - self._t0
        self._t0 = None
        return self.total_s
