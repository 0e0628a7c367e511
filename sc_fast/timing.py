"""The project's clocks, in one place: the training clock (``Stopwatch``), per-step times of a
throughput repeat or a ceiling's repeats (``time_steps``), and a profiled step's wall and host-issue
times (``step_and_issue_ms``).

GPU work is asynchronous: a host clock read without a synchronize measures launch time, not
work. Every read here synchronizes first, or times with CUDA events recorded on the stream and
read after one synchronize, so call them only where the caller may wait for the device (the
training loop: start, evaluation points, end). ``Stopwatch.mark`` records such an event (no
wait) whose time is read later, after ``stop`` has synchronized.
"""

import time
from collections.abc import Callable

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


def time_steps(work: Callable[[], object], steps: int, device: torch.device,
               budget_s: float | None = None) -> list[float]:
    """Seconds of each of ``steps`` calls to ``work``. CUDA: one event before the first call and one
    after each, all on the current stream, and one host wait after the last (nothing inside waits
    for the device, so the host queues work as in training; a launch-bound step shows up as slow).
    CPU: ``time.perf_counter`` around each call, stopping early once ``budget_s`` is spent (at least
    one call)."""
    synchronize(device)  # sync point: queued earlier work must not land in the first step
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        events[0].record()
        for i in range(steps):
            work()
            events[i + 1].record()
        synchronize(device)  # sync point: after the timed steps, to read the events
        return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(steps)]
    out: list[float] = []
    t0 = time.perf_counter()
    while len(out) < steps and (budget_s is None or not out or sum(out) < budget_s):
        work()
        t1 = time.perf_counter()
        out.append(t1 - t0)
        t0 = t1
    return out


def step_and_issue_ms(work: Callable[[], object], steps: int, device: torch.device) -> tuple[float, float]:
    """(wall ms per step, host ms to issue a step) over ``steps`` calls: the host runs ahead of a GPU,
    so issue time read between calls (no sync) against the synchronized wall time says whether the
    device waits on Python and launches."""
    synchronize(device)  # sync point: earlier work must not land in these steps
    t0 = time.perf_counter()
    for _ in range(steps):
        work()
    issued = time.perf_counter()
    synchronize(device)  # sync point: the steps' device work is done
    return (time.perf_counter() - t0) * 1e3 / steps, (issued - t0) * 1e3 / steps
