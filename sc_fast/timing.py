"""Device-synchronized clocks.

GPU work is asynchronous: a host clock read without a synchronize measures launch time, not
work. Every read here synchronizes first, so call them only at the points where the training
loop is allowed to wait for the device (start, evaluation points, end). ``Stopwatch.mark``
is the exception that proves the rule: it records a CUDA event (no wait) whose time is read
later, after ``stop`` has synchronized.
"""

import time

import torch

from sc_fast import distributed

Mark = float | torch.cuda.Event  # a point in a clock segment: host seconds (CPU) or a recorded event (CUDA)


def synchronize(device: torch.device) -> None:
    """CPU-GPU sync point: blocks until all queued work on ``device`` has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _now(device: torch.device) -> Mark:
    if device.type != "cuda":
        return time.perf_counter()  # CPU ops have finished when they return
    event = torch.cuda.Event(enable_timing=True)
    event.record()  # queued on the current stream: no sync
    return event


class Stopwatch:
    """Accumulates device-synchronized seconds over start/stop segments."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.total_s = 0.0
        self._t0: float | None = None
        self._start: Mark | None = None  # the last segment's start

    def start(self) -> None:
        synchronize(self.device)  # sync point: earlier work must not leak into this segment
        distributed.barrier()  # data parallel: every rank starts together
        self._t0 = time.perf_counter()
        self._start = _now(self.device)

    def stop(self) -> float:
        """Ends the segment; returns the running total."""
        assert self._t0 is not None, "stop() without start()"
        synchronize(self.device)  # sync point: the segment's work must be done before we read
        distributed.barrier()  # data parallel: the segment ends when the slowest rank's does
        self.total_s += time.perf_counter() - self._t0
        self._t0 = None
        return self.total_s

    def mark(self) -> Mark:
        """A point inside the running segment, without waiting for the device; ``since_start`` reads it."""
        assert self._t0 is not None, "mark() outside a segment"
        return _now(self.device)

    def since_start(self, mark: Mark) -> float:
        """Seconds from the start of the last segment to ``mark`` (taken inside it), read after
        ``stop``, once the segment's device work (and so the event) has completed."""
        assert self._start is not None and self._t0 is None, "since_start() before stop()"
        if isinstance(self._start, torch.cuda.Event):
            return self._start.elapsed_time(mark) / 1e3  # type: ignore[arg-type]
        return mark - self._start  # type: ignore[operator]
