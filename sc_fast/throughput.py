"""Step-throughput measurement: warm up, then time N steps per repeat, several repeats.

How a step is timed: sc_fast.timing.time_steps (CUDA events on the stream, one host wait per
repeat; ``time.perf_counter`` on a CPU, whose ops have finished when they return).

Warm-up (first-call allocation, torch.compile, autotuning, CUDA-graph recording) runs before
the clock and is reported separately. Images per second of a repeat are
``batch * steps / repeat seconds``; the median over repeats is the headline number.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` since the case started; on the CPU the
process's peak resident set (VmHWM, reset per case through /proc/self/clear_refs where Linux
allows, else ``getrusage``'s peak since the process started).
"""

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sc_fast.pipeline import Batch
from sc_fast.schedules import Constant
from sc_fast.timing import synchronize, time_steps
from sc_fast.train import TrainConfig, build_optimizer, input_dtype, make_step

Work = Callable[[], object]  # one step: fetch a batch and/or train on it


@dataclass(frozen=True)
class Measurement:
    batch_size: int
    step_s: tuple[float, ...]  # every timed step of every repeat, in order
    repeat_s: tuple[float, ...]  # seconds of each repeat (sum of its steps)
    warmup_s: float  # warm-up before the clock: compilation and first-call costs
    peak_mem_mib: float

    @property
    def imgs_per_s(self) -> float:
        """Median over repeats: one slow repeat (a background job waking) does not move it."""
        steps = len(self.step_s) // len(self.repeat_s)
        return statistics.median(self.batch_size * steps / r for r in self.repeat_s)

    def step_ms(self, percentile: float) -> float:
        return float(np.percentile(np.asarray(self.step_s) * 1e3, percentile))


def synthetic_batch(batch_size: int, precision: str, channels_last: bool,
                    device: torch.device, seed: int = 0) -> Batch:
    """One fixed random batch, already on the device in the step's dtype and layout: the step
    alone, with no input pipeline in the way."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, 32, 32, generator=g).to(device, input_dtype(precision))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(device)
    return x, y


def training_step(model: nn.Module, cfg: TrainConfig,
                  device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The project's training step (``sc_fast.train.make_step``) on ``model``, as trained.

    A small constant LR keeps repeated steps on one batch finite: NaNs or denormals could change
    the speed of what is measured."""
    model.train()
    optimizer = build_optimizer(model, Constant(base_lr=0.01, base_momentum=0.9), cfg)
    return make_step(model, optimizer, cfg, device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux >= 4.0: "5" resets the peak RSS (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the peak is the process's since it started


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def warm_up(work: Work, warmup: int, device: torch.device) -> float:
    """Seconds of ``warmup`` untimed steps: compilation, autotuning, CUDA-graph capture, first-call costs."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        work()
    synchronize(device)  # sync point: warm-up ends before its time is read
    return time.perf_counter() - t0


def measurement(batch_size: int, repeats: list[list[float]], warmup_s: float, peak_mem_mib: float) -> Measurement:
    """A Measurement from the step times of each timed repeat (``time_steps``' lists)."""
    return Measurement(batch_size=batch_size, step_s=tuple(t for r in repeats for t in r),
                       repeat_s=tuple(sum(r) for r in repeats), warmup_s=warmup_s, peak_mem_mib=peak_mem_mib)


def measure(work: Work, batch_size: int, steps: int, warmup: int, repeats: int,
            device: torch.device) -> Measurement:
    """Warm-up steps off the clock, then ``repeats`` timed runs of ``steps`` steps, back to back.
    (``bench throughput`` interleaves the repeats of its cases instead, from the same pieces.)

    Call ``reset_peak_memory`` before building what ``work`` uses, so the peak includes it."""
    if steps <= 0 or repeats <= 0 or warmup < 0:
        raise ValueError("steps and repeats must be positive, warmup non-negative")
    warmup_s = warm_up(work, warmup, device)
    timed = [time_steps(work, steps, device) for _ in range(repeats)]
    return measurement(batch_size, timed, warmup_s, peak_memory_mib(device))
