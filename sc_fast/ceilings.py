"""The device's ceilings, measured in the same run: dense matmul TFLOP/s per precision and memory
bandwidth, the denominators of MFU and the two roofs of a roofline.

Datasheet peaks are what the silicon could do at its boost clock; a real GEMM reaches 60-80% of
them at best, and power or thermal limits move that per machine. A measured ceiling says what
this device does today, so MFU against it reads "fraction of what a large matmul achieves here".
Datasheet numbers (``datasheet``) stay beside it, for reference.

How each ceiling is measured:

- matmul: an n x n by n x n product of random normal inputs (zeros run faster on some GPUs),
  ``2 n^3`` FLOPs, after warm-up; the median of the timed repeats. fp32 runs with TF32 off and
  tf32 with it on (the setting is restored afterwards); a CPU has no TF32 and skips it.
- bandwidth: ``dst.copy_(src)`` of a large buffer; each copy reads and writes it, so it moves
  2 x its bytes; the median of the repeats. GB/s are 1e9 bytes per second.

CUDA is timed with events, one host wait after the timed repeats; a CPU with ``time.perf_counter``.
The results depend on the device and the torch build (cuBLAS, oneDNN), so they are cached per
device name and torch version (``cached``): a few seconds once per machine and torch install.
"""

import contextlib
import json
import math
import os
import re
import statistics
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from sc_fast.timing import time_steps

MATMUL_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class CeilingPlan:
    """Sizes and repeats of one device type's measurements."""

    matmul_n: int
    warmup: int  # warm-up calls before each measurement (first-call and autotuning costs; see _timed)
    matmul_repeats: int
    copy_bytes: int
    copy_repeats: int
    budget_s: float | None  # CPU: stop repeating once this much was timed (at least one repeat); unused on CUDA


# CUDA: an 8192^3 product is ~1.1 TFLOP, enough to fill an H100/H200 for over a millisecond, and
# 2 GiB copies are far beyond any L2 cache. CPU: n=1024 and 256 MiB keep the whole measurement to
# about a second, and the first calls are warm-up only where the budget leaves later ones
# (``_timed``). On a 2-core AMD EPYC (Zen 3, AVX2), quiet, both threads: fp32 0.177 TFLOP/s at
# n=1024 with this warm-up (0.179 at n=2048), where the earlier plan (no warm-up, 5 repeats) had
# recorded 0.079-0.128, below what ResNet-56's convolutions reached (0.097: an MFU over 100%). bf16
# and fp16 products are emulated on CPUs without AVX512-BF16/AMX (2.4 s for n=1024 there, 63 s for
# n=2048): the budget keeps those to one call.
PLANS = {
    "cuda": CeilingPlan(matmul_n=8192, warmup=5, matmul_repeats=20, copy_bytes=2 << 30, copy_repeats=20,
                        budget_s=None),
    "cpu": CeilingPlan(matmul_n=1024, warmup=3, matmul_repeats=20, copy_bytes=256 << 20, copy_repeats=10,
                       budget_s=2.0),
}


def default_plan(device: torch.device) -> CeilingPlan:
    return PLANS["cuda" if device.type == "cuda" else "cpu"]


# How the ceilings are measured; a cached record made another way is measured again. 2: on a CPU
# the first calls are warm-up (``_timed``); records without the field are 1, which could halve a CPU's.
METHOD = 2


@dataclass(frozen=True)
class Ceilings:
    device_name: str
    torch_version: str
    matmul_tflops: dict[str, float]  # precision -> measured dense matmul TFLOP/s
    matmul_n: int  # the square size measured
    bandwidth_gb_s: float  # device memory, bytes read + written, 1e9 bytes/s
    copy_bytes: int  # the buffer copied
    method: int = METHOD

    def ridge_flop_per_byte(self, precision: str) -> float:
        """Arithmetic intensity where the ``precision`` matmul roof meets the bandwidth roof: a step
        below it is bound by memory, above it by compute."""
        return self.matmul_tflops[precision] * 1e12 / (self.bandwidth_gb_s * 1e9)

    def to_json(self) -> dict[str, Any]:
        return {"device_name": self.device_name, "torch_version": self.torch_version,
                "matmul_tflops": dict(self.matmul_tflops), "matmul_n": self.matmul_n,
                "bandwidth_gb_s": self.bandwidth_gb_s, "copy_bytes": self.copy_bytes, "method": self.method}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Ceilings":
        return cls(device_name=str(d["device_name"]), torch_version=str(d["torch_version"]),
                   matmul_tflops={str(k): float(v) for k, v in d["matmul_tflops"].items()},
                   matmul_n=int(d["matmul_n"]), bandwidth_gb_s=float(d["bandwidth_gb_s"]),
                   copy_bytes=int(d["copy_bytes"]), method=int(d.get("method", 1)))


def supported(device: torch.device, precisions: tuple[str, ...] | list[str]) -> list[str]:
    """The precisions a matmul can be measured in on ``device``: TF32 exists on CUDA only."""
    for p in precisions:
        if p not in MATMUL_DTYPES:
            raise ValueError(f"unknown precision {p!r}; expected one of {sorted(MATMUL_DTYPES)}")
    return [p for p in precisions if device.type == "cuda" or p != "tf32"]


@contextlib.contextmanager
def tf32_matmul(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matmuls on or off, restored on exit. Process-wide: nothing else may run
    matmuls meanwhile. torch >= 2.9 has ``fp32_precision`` (and refuses a mix of it with the older
    ``allow_tf32`` flags, which sc_fast.train.set_float32_math no longer uses)."""
    matmul = torch.backends.cuda.matmul
    attr, value = ("fp32_precision", "tf32" if enabled else "ieee") if hasattr(matmul, "fp32_precision") \
        else ("allow_tf32", enabled)
    before = getattr(matmul, attr)
    setattr(matmul, attr, value)
    try:
        yield
    finally:
        setattr(matmul, attr, before)


def _timed(work: Callable[[], object], warmup: int, repeats: int, device: torch.device,
           budget_s: float | None) -> list[float]:
    """Seconds of each timed call of ``work`` after ``warmup`` warm-up calls (sc_fast.timing's clock).
    CUDA: the warm-up calls are untimed. CPU: every call is timed until ``budget_s`` is spent, and
    the first ``warmup`` are dropped only where later calls remain: a fast product gets its warm-up
    (the first calls wake the thread pool and fault in the output), a product of seconds (bf16
    emulated on an AVX2 CPU) is not paid for twice."""
    if device.type == "cuda":
        for _ in range(warmup):
            work()
        return time_steps(work, repeats, device)
    seconds = time_steps(work, warmup + repeats, device, budget_s)
    return seconds[min(warmup, len(seconds) - 1):]


def measure_matmul(device: torch.device, precision: str, n: int, repeats: int, warmup: int = 2,
                   budget_s: float | None = None) -> float:
    """Dense matmul TFLOP/s at ``precision``: the median over ``repeats`` n x n products."""
    if not supported(device, [precision]):
        raise ValueError(f"{precision} matmuls do not exist on {device.type}")
    g = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=g, device=device, dtype=MATMUL_DTYPES[precision]) for _ in range(2))
    c = torch.empty_like(a)  # written in place: no allocation inside the timed calls
    with tf32_matmul(precision == "tf32"):
        seconds = _timed(lambda: torch.mm(a, b, out=c), warmup, repeats, device, budget_s)
    return 2 * n**3 / statistics.median(seconds) / 1e12


def measure_bandwidth(device: torch.device, nbytes: int, repeats: int, warmup: int = 2,
                      budget_s: float | None = None) -> float:
    """Memory bandwidth in GB/s: the median over ``repeats`` copies of ``nbytes`` (read + write)."""
    src = torch.empty(nbytes // 4, device=device).normal_()  # random, in case a device compresses
    dst = torch.empty_like(src)
    seconds = _timed(lambda: dst.copy_(src), warmup, repeats, device, budget_s)
    return 2 * src.nbytes / statistics.median(seconds) / 1e9


def _matmuls(device: torch.device, precisions: list[str], plan: CeilingPlan) -> dict[str, float]:
    return {p: measure_matmul(device, p, plan.matmul_n, plan.matmul_repeats, plan.warmup, plan.budget_s)
            for p in supported(device, precisions)}


def measure(device: torch.device, precisions: tuple[str, ...] | list[str], plan: CeilingPlan,
            device_name: str | None = None) -> Ceilings:
    """Every ceiling of ``device`` (TF32 skipped on a CPU). ``device_name`` defaults to torch's
    name of the GPU, "cpu" otherwise; pass the harness's own name to key records by it."""
    if device_name is None:
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return Ceilings(device_name=device_name, torch_version=torch.__version__,
                    matmul_tflops=_matmuls(device, list(precisions), plan), matmul_n=plan.matmul_n,
                    bandwidth_gb_s=measure_bandwidth(device, plan.copy_bytes, plan.copy_repeats,
                                                     plan.warmup, plan.budget_s),
                    copy_bytes=plan.copy_bytes)


def cache_path(cache_dir: Path, device_name: str, torch_version: str) -> Path:
    """One file per device name and torch version: 'ceilings-nvidia-h100-80gb-hbm3-torch-2.11.0+cu128.json'."""
    slug = re.sub(r"[^a-z0-9.+]+", "-", f"{device_name}-torch-{torch_version}".lower()).strip("-")
    return cache_dir / f"ceilings-{slug}.json"


def _read(path: Path) -> Ceilings | None:
    try:
        return Ceilings.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # absent, torn or hand-edited: measure
        return None


def _write(path: Path, ceilings: Ceilings) -> None:
    """Written beside, then renamed: two runs starting together never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(ceilings.to_json(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached(device: torch.device, device_name: str, precisions: tuple[str, ...] | list[str], cache_dir: Path,
           plan: CeilingPlan, torch_version: str | None = None) -> Ceilings:
    """``measure``'s result from ``cache_dir`` when it holds one for this device name, torch version
    (``torch.__version__`` unless given), plan sizes and ``METHOD``; precisions it lacks are measured
    alone and added to the file. Anything else (no file, another size or method, an unreadable file)
    measures afresh."""
    version = torch_version or torch.__version__
    path = cache_path(cache_dir, device_name, version)
    hit = _read(path)
    if hit is None or (hit.device_name, hit.torch_version, hit.matmul_n, hit.copy_bytes, hit.method) != (
            device_name, version, plan.matmul_n, plan.copy_bytes, METHOD):
        result = replace(measure(device, precisions, plan, device_name), torch_version=version)
    else:
        missing = [p for p in supported(device, precisions) if p not in hit.matmul_tflops]
        if not missing:
            return hit
        result = replace(hit, matmul_tflops={**hit.matmul_tflops, **_matmuls(device, missing, plan)})
    _write(path, result)
    return result


def achieved_tflops(imgs_per_s: float, flop_per_img: float) -> float:
    """Model TFLOP/s a step reaches: images per second times FLOPs per image."""
    return imgs_per_s * flop_per_img / 1e12


def mfu(tflops: float, ceilings: Ceilings, precision: str) -> float | None:
    """Achieved over the measured matmul ceiling at ``precision``; None when it was not measured."""
    peak = ceilings.matmul_tflops.get(precision)
    if peak is None or not math.isfinite(peak) or peak <= 0:
        return None
    return tflops / peak


@dataclass(frozen=True)
class Datasheet:
    name: str
    matmul_tflops: dict[str, float]  # dense (no sparsity) tensor-core peaks; fp32 without tensor cores
    bandwidth_gb_s: float
    source: str


# NVIDIA states tensor-core peaks "with sparsity"; the dense figures below are half of those.
DATASHEETS = (
    # NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column: FP32 67 TFLOPS; TF32 989, BF16 1,979,
    # FP16 1,979 TFLOPS with sparsity; GPU memory bandwidth 3.35 TB/s.
    (re.compile(r"\bH100\b(?!.*\b(PCIE|NVL)\b).*\b(HBM3|SXM\d?)\b"),
     Datasheet("H100 SXM", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}, 3350.0,
               "NVIDIA H100 datasheet (SXM)")),
    # NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column: the same compute as H100 SXM (FP32 67;
    # TF32 989, BF16 1,979, FP16 1,979 TFLOPS with sparsity); 141 GB HBM3e at 4.8 TB/s.
    (re.compile(r"(?<![A-Z0-9])H200\b(?!.*\b(PCIE|NVL)\b)"),
     Datasheet("H200 SXM", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}, 4800.0,
               "NVIDIA H200 datasheet (SXM)")),
    # NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM column: FP32 19.5 TFLOPS; TF32 156,
    # BF16 312, FP16 312 TFLOPS dense (312/624/624 with sparsity); 2,039 GB/s HBM2e.
    (re.compile(r"\bA100-SXM\d?-80GB\b"),
     Datasheet("A100 SXM 80GB", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}, 2039.0,
               "NVIDIA A100 datasheet (80GB SXM)")),
)


def datasheet(device_name: str) -> Datasheet | None:
    """The datasheet entry for torch's device name ("NVIDIA H100 80GB HBM3", "NVIDIA H200",
    "NVIDIA A100-SXM4-80GB"); None for any other device, the PCIe and NVL parts included."""
    name = device_name.upper()
    return next((sheet for pattern, sheet in DATASHEETS if pattern.search(name)), None)
