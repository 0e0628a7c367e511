"""The one place a trial and device settings become a model, a pipeline spec and a train config.

Every command that trains or measures (run, lr-find, throughput) builds through here, so a change
to how a trial is set up (data parallelism, checkpoints, a new precision) is made once.
"""

from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bench import compile_gain
from bench.common import UsageError, device_name
from bench.config import Config, DeviceSettings, TrialSpec
from sc_fast.distributed import World
from sc_fast.env import cpu_model
from sc_fast.hardware import Capabilities, cpu_isa, probe
from sc_fast.model import resnet56
from sc_fast.pipeline import PipelineSpec
from sc_fast.train import TrainConfig, input_dtype, set_float32_math

def model(trial: TrialSpec | None, settings: DeviceSettings, device: torch.device) -> nn.Module:
    """ResNet-56 on ``device`` in the settings' memory format. Seed the RNG first: the weights are
    drawn here. ``trial`` None: the model's defaults (throughput cases have no trial)."""
    net = resnet56(bn_momentum=trial.bn_momentum) if trial else resnet56()
    net = net.to(device)
    return net.to(memory_format=torch.channels_last) if settings.channels_last else net


def replicate(net: nn.Module, trial: TrialSpec | None, world: World, device: torch.device) -> nn.Module:
    """Under torchrun, the model as one DistributedDataParallel replica (gradients averaged over
    the ranks; rank 0's weights broadcast at construction); with ``sync_bn`` its BatchNorm layers
    normalize over the global batch. A single process gets the model back unchanged."""
    if world.size == 1:
        return net
    if trial is not None and trial.sync_bn:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def pipeline_spec(trial: TrialSpec | None, settings: DeviceSettings, seed: int = 0, *,
                  batch_size: int | None = None, eval_images: int | None = None,
                  world: World = World.single()) -> PipelineSpec:
    """The trial's batches (or a throughput case's ``batch_size`` with the default augmentation);
    ``batch_size`` is the global batch, of which this rank of ``world`` takes its slice."""
    ranks = {"rank": world.rank, "world_size": world.size}
    if trial is None:
        assert batch_size is not None, "a pipeline without a trial needs its batch size"
        return PipelineSpec(batch_size=batch_size, dtype=input_dtype(settings.precision),
                            channels_last=settings.channels_last, seed=seed, **ranks)
    return PipelineSpec(batch_size=batch_size or trial.batch_size, eval_batch_size=trial.eval_batch_size,
                        augment=trial.augment, dtype=input_dtype(settings.precision),
                        channels_last=settings.channels_last, seed=seed, train_images=trial.train_images,
                        eval_images=trial.eval_images if eval_images is None else eval_images, **ranks)


def rank_problem(world_size: int, batch_size: int, compile: str) -> str | None:
    """Why a trial or throughput case cannot run as a job of ``world_size`` ranks, or None: the one
    check `run` and `throughput` share (a global batch that does not split evenly over the ranks; the
    whole-step CUDA graph, which does not capture DDP's gradient all-reduce)."""
    if world_size == 1:
        return None
    if batch_size % world_size:
        return f"batch_size {batch_size} does not split evenly over {world_size} ranks"
    if compile == "cuda-graph":
        return "compile 'cuda-graph' is single-process: DDP's gradient all-reduce is not captured"
    return None


def check_ranks(world: World, named: list[tuple[str, int, str]]) -> None:
    """UsageError naming the first of ``named`` ((what, global batch size, compile mode) of each trial
    or case asked for) that cannot run as this job (rank_problem)."""
    for what, batch_size, compile in named:
        problem = rank_problem(world.size, batch_size, compile)
        if problem:
            raise UsageError(f"{what}: {problem}")


def train_config(trial: TrialSpec | None, settings: DeviceSettings, **loop: Any) -> TrainConfig:
    """The trial's optimizer and loop settings with the device's precision and compile mode; ``loop``
    overrides TrainConfig's fields (a run: its target; lr-find: its own step count and no compile).
    ``trial`` None: TrainConfig's own defaults (throughput cases have no trial)."""
    optim = {} if trial is None else {
        "max_steps": trial.steps, "eval_every": trial.eval_every, "weight_decay": trial.weight_decay,
        "nesterov": trial.nesterov, "label_smoothing": trial.label_smoothing,
        "checkpoint_every": trial.checkpoint_every, "checkpoint_interval_s": trial.checkpoint_interval_s,
        "fine_eval_from": trial.fine_eval_from,
        "fine_eval_every": trial.fine_eval_every}
    base = TrainConfig(**{"max_steps": 1, "eval_every": 1, **optim}, precision=settings.precision,
                       compile=settings.compile, warmup_steps=settings.warmup_steps)
    return replace(base, **loop)


# ---- execution defaults: "auto" resolved from what the device can do --------------------------------

CPU_EAGER = ("off", "eager on CPU")


def resolve_settings(raw: DeviceSettings, caps: Capabilities, where: str,
                     cpu_compile: tuple[str, str] = CPU_EAGER) -> tuple[DeviceSettings, str]:
    """``raw`` with every "auto" resolved from ``caps``, and one line saying what was chosen and why.

    CUDA: bf16 where the GPU supports it, else fp16 (with a grad scaler); compile "default" where
    torch.compile can build. CPU: bf16 only where the CPU computes it natively, else fp32; compile
    as ``cpu_compile`` says (mode, why: bench.compile_gain follows this CPU's measurement; without
    a toolchain, eager). channels_last on both: the convolutions of both backends prefer NHWC. An
    explicit compile mode that cannot build here is a UsageError naming what is missing (``where``:
    the config table it came from).
    """
    cuda = caps.device_type == "cuda"
    precision = raw.precision
    if precision == "auto":
        precision = "bf16" if caps.native_bf16 else ("fp16" if cuda else "fp32")
    compile = raw.compile
    if compile == "auto":
        compile = "off" if caps.compile_missing else "default" if cuda else cpu_compile[0]
    elif compile not in ("off", "cuda-graph") and caps.compile_missing:
        raise UsageError(f"{where}.compile = {compile!r}: torch.compile needs {caps.compile_missing}; "
                         "install it or set compile = \"off\"")
    if compile == "cuda-graph" and (not cuda or precision == "fp16"):
        raise UsageError(f"{where}.compile = 'cuda-graph' needs a CUDA device and bf16 or fp32 "
                         f"(here: {caps.device_type}, {precision})")
    channels_last = True if raw.channels_last == "auto" else bool(raw.channels_last)
    resolved = DeviceSettings(precision=precision, channels_last=channels_last, compile=compile,
                              warmup_steps=raw.warmup_steps)
    return resolved, _settings_line(raw, resolved, caps, cpu_compile[1])


def _settings_line(raw: DeviceSettings, s: DeviceSettings, caps: Capabilities, cpu_why: str) -> str:
    """e.g. 'cpu execution: precision bf16 (auto: CPU bf16 instructions: AVX512-BF16), ...'."""
    if caps.compile_missing:
        compile_why = f"torch.compile needs {caps.compile_missing}"
    else:
        compile_why = cpu_why if caps.device_type == "cpu" else "toolchain found"
    why = {"precision": caps.bf16_source, "compile": compile_why, "channels_last": "NHWC convolutions"}
    parts = [f"{name} {getattr(s, name)}" + (f" (auto: {why[name]})" if getattr(raw, name) == "auto" else "")
             for name in ("precision", "channels_last", "compile")]
    return f"{caps.device_type} execution: " + ", ".join(parts)


def device_settings(cfg: Config, device: torch.device, images: int | None = None) -> tuple[DeviceSettings, str]:
    """[devices.<type>] of ``cfg``, resolved for ``device`` (see resolve_settings); ``images``: what
    each trial will train on, which decides whether compiling repays itself on a CPU."""
    raw = cfg.devices[device.type]
    cpu_compile = CPU_EAGER
    if device.type == "cpu" and raw.compile == "auto":
        cpu_compile = compile_gain.choose(device_name({"cpu": cpu_model(), "cpu_isa": cpu_isa()}, device), images)
    return resolve_settings(raw, probe(device), f"{cfg.path}: devices.{device.type}", cpu_compile)


def prepare(device: torch.device, precision: str) -> str:
    """Process-wide settings a trial on ``device`` in ``precision`` wants; returns the float32 math in
    force (env.json and every row record it). cuDNN's autotuner picks the fastest convolution per
    shape on first use; every shape here is static, so the search happens once, in warm-up, off the
    clock. float32 math: IEEE unless the precision is tf32 (torch's default allows TF32 in cuDNN
    convolutions, which would make an "fp32" baseline a TF32 one)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return set_float32_math(precision)
