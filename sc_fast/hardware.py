"""What a device can do, asked of torch and the system: the facts the "auto" execution defaults
are resolved from (docs/reference.md, "Defaults, and why").

- bf16: a GPU says so itself (``torch.cuda.is_bf16_supported``). On a CPU bf16 autocast always
  *runs*, but only AVX512-BF16 or AMX compute it natively; without them oneDNN emulates it and a
  ResNet-56 step was ~10x slower than fp32 on this project's AVX2 machines, while an AVX512-BF16
  machine ran bf16 channels_last 1.7x faster than fp32 channels_last.
- torch.compile: Inductor builds C++ (CPU) and Triton's launcher (GPU) at first use, so it needs a
  C compiler and the Python headers, and on a GPU the triton package (torch's CUDA wheels require
  it; a source build may lack it); without them compilation fails minutes into a run.
"""

import importlib.util
import os
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Capabilities:
    device_type: str  # cuda | cpu
    native_bf16: bool
    bf16_source: str  # what said so, for the start-up line and env.json
    compile_missing: str | None  # what torch.compile lacks here; None when it can build


def cpu_bf16() -> tuple[bool, str]:
    """(native bf16 on this CPU, the instruction set that gives it or 'none')."""
    cpu = getattr(torch, "cpu", None)
    flags = {"AVX512-BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}
    found = [name for name, fn in flags.items() if cpu is not None and getattr(cpu, fn, lambda: False)()]
    return bool(found), "+".join(found) or "none"


def cpu_isa() -> str:
    """The vector ISA torch dispatches to on this CPU, plus native bf16 where present
    ("AVX512+AVX512-BF16", "AVX2"): two CPUs sold under one model name ("AMD EPYC" in a VM) can
    differ 10x in bf16 speed, so throughput records keep them apart by this."""
    native, bf16 = cpu_bf16()
    return torch.backends.cpu.get_cpu_capability() + (f"+{bf16}" if native else "")


def compile_missing(device_type: str = "cpu") -> str | None:
    """What torch.compile needs for ``device_type`` and this machine lacks (a C compiler, Python.h,
    Triton for CUDA), or None."""
    missing = []
    if device_type == "cuda" and importlib.util.find_spec("triton") is None:
        missing.append("Triton (the triton package, for GPU kernels)")
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if not any(shutil.which(c) for c in (cc.split()[0], "cc", "gcc", "clang")):
        missing.append("a C compiler (cc, gcc or clang on PATH, or $CC)")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        missing.append(f"the Python headers (Python.h in {sysconfig.get_paths()['include']})")
    return " and ".join(missing) or None


def probe(device: torch.device) -> Capabilities:
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        source = f"{torch.cuda.get_device_name(device)} {'supports' if native else 'lacks'} bf16"
    else:
        native, isa = cpu_bf16()
        source = f"CPU bf16 instructions: {isa}"
    return Capabilities(device_type=device.type, native_bf16=native, bf16_source=source,
                        compile_missing=compile_missing(device.type))
