"""Where a step's time goes: host time against device time, the kernel count, the top kernels.

Three numbers per step say what bounds it:

- ``step_ms``: wall time per step, device-synchronized once after the last one (profiler off);
- ``issue_ms``: host time to queue one step, read between steps without a sync (profiler off).
  On a GPU the host runs ahead of the device; if ``issue_ms`` is close to ``step_ms`` while the
  kernels take much less, the device waits on Python and launches (CUDA graphs are the cure).
  When the device is the bottleneck the launch queue fills and ``issue_ms`` rises to ``step_ms``
  too: ``kernel_ms`` tells the two apart;
- ``kernel_ms``: the step's kernels' summed device time, and ``kernels_per_step``, from
  ``torch.profiler`` over a few more steps (CUDA only; None on a CPU, where the top list holds
  host operators by self time instead).

The profiled steps are also written as a Chrome/Perfetto trace (``.json.gz``) for a closer look.
Profiling is off every timed measurement: it runs after it, on the same warmed-up step. Its window
opens after one unrecorded step under the profiler (a ``torch.profiler.schedule`` warm-up), so
CUPTI's start-up cost is not counted as the step's.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

from sc_fast.throughput import Work
from sc_fast.timing import step_and_issue_ms, synchronize


@dataclass(frozen=True)
class OpStat:
    """One profiler key (operator or kernel name) summed over the profiled steps."""

    name: str
    on_device: bool  # a kernel (or memcpy/memset) the device ran; False: a host operator
    count: int
    self_us: float  # self time: device time for kernels, host time for operators


@dataclass(frozen=True)
class TopOp:
    name: str
    kind: str  # kernel | host op
    calls_per_step: float
    ms_per_step: float
    share: float  # of all kernel time per step (kernels) or all host self time (host ops)


@dataclass(frozen=True)
class StepProfile:
    steps: int  # profiled steps (and as many unprofiled ones before them, for the clocks)
    step_ms: float
    issue_ms: float
    kernel_ms: float | None  # None: no device activity recorded (a CPU run)
    kernels_per_step: float | None
    top: tuple[TopOp, ...]

    @property
    def device_busy(self) -> float | None:
        """Kernel time over step time: near 1, the device is the limit; well below, the host is."""
        return self.kernel_ms / self.step_ms if self.kernel_ms is not None and self.step_ms > 0 else None


def summarize(stats: list[OpStat], steps: int, top: int) -> tuple[float | None, float | None, tuple[TopOp, ...]]:
    """(kernel ms per step, kernels per step, the ``top`` entries by self time). Kernels when any
    were recorded, host operators otherwise."""
    kernels = [s for s in stats if s.on_device]
    pool, kind = (kernels, "kernel") if kernels else ([s for s in stats if not s.on_device], "host op")
    total_us = sum(s.self_us for s in pool)
    ranked = sorted(pool, key=lambda s: s.self_us, reverse=True)[:top]
    entries = tuple(TopOp(s.name, kind, s.count / steps, s.self_us / 1e3 / steps,
                          s.self_us / total_us if total_us else 0.0) for s in ranked)
    if not kernels:
        return None, None, entries
    return total_us / 1e3 / steps, sum(s.count for s in kernels) / steps, entries


def _stats(prof: profile) -> list[OpStat]:
    out = []
    for e in prof.key_averages():
        on_device = e.device_type == DeviceType.CUDA
        if on_device and e.is_user_annotation:  # a record_function range drawn on the GPU: its kernels count already
            continue
        if e.key.startswith("ProfilerStep"):  # the schedule's step markers ("ProfilerStep*" summed), not work
            continue
        out.append(OpStat(e.key, on_device, e.count, e.self_device_time_total if on_device else e.self_cpu_time_total))
    return out


def profile_steps(work: Work, steps: int, device: torch.device, trace: Path | None = None,
                  top: int = 15) -> StepProfile:
    """Clocks over ``steps`` steps of ``work``, then ``steps`` more under the profiler (its trace
    written to ``trace`` when given). ``work`` must be warmed up: compilation is not profiled."""
    if steps <= 0 or top <= 0:
        raise ValueError("steps and top must be positive")
    step_ms, issue_ms = step_and_issue_ms(work, steps, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    # one warm-up step under the profiler, not recorded, then ``steps`` recorded ones
    with profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=steps, repeat=1)) as prof:
        for i in range(1 + steps):
            work()
            if i == steps:
                synchronize(device)  # sync point: the last step's kernels land inside the recorded window
            prof.step()
    if trace is not None:  # written beside, then renamed: never half a trace under its name
        partial = trace.with_name(f".partial-{trace.name}")  # still ends in .gz: torch gzips it
        prof.export_chrome_trace(str(partial))
        os.replace(partial, trace)
    kernel_ms, kernels, entries = summarize(_stats(prof), steps, top)
    return StepProfile(steps, step_ms, issue_ms, kernel_ms, kernels, entries)
