"""What torch.compile gains on this CPU, as a throughput run measured it, and what ``auto`` makes of it.

On a GPU ``compile = "auto"`` compiles wherever a toolchain is found. On a CPU it depends on the CPU:
on an AVX2 AMD EPYC `compile-default` ran 1.03x its eager twin after 84 s of compiling (fp32
channels_last, batch 512, 2 cores beside a training run), on an Intel Xeon with AMX 552 img/s
against 442-446 eager (1.25x), on an idle AMD EPYC with AVX512-BF16 0.96x its bf16 twin after 97 s.
So on a CPU ``auto`` follows the last measurement of this device (its name carries the ISA) and
torch version: a throughput run that measured the ``compile-default`` case and its eager twin
(same precision, memory format and batch, compile off) records the speedup and what compiling cost
(the difference of their warm-ups; the largest seen, since inductor's cache makes a repeat cheap)
in the user cache. A run then compiles when the training it is about to do is long enough to repay
it twice over at that speedup, and its start-up line says so; without a measurement it runs
eagerly and says which cases would measure it.
"""

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.results import ThroughputRow, atomic_write_text
from sc_fast.data import default_cache

COMPILED_CASE = "compile-default"
REPAY = 2.0  # compile only when the saving is at least this many times the compile cost


@dataclass(frozen=True)
class CompileGain:
    device_name: str
    torch_version: str
    speedup: float  # compile-default's img/s over its eager twin's
    compile_s: float  # the compiled case's warm-up less the eager one's: what compiling cost
    eager_imgs_per_s: float
    eager_case: str
    run_id: str

    def saving_s(self, images: int) -> float:
        """Training seconds compiling would save over ``images`` (negative: it would cost)."""
        return images / self.eager_imgs_per_s * (1 - 1 / self.speedup)


def cache_path(device_name: str, torch_version: str) -> Path:
    slug = re.sub(r"[^a-z0-9.+]+", "-", f"{device_name}-torch-{torch_version}".lower()).strip("-")
    return default_cache() / "compile" / f"{slug}.json"


def read(device_name: str) -> CompileGain | None:
    try:
        return CompileGain(**json.loads(cache_path(device_name, torch.__version__).read_text()))
    except (OSError, ValueError, TypeError):  # none yet, or unreadable: as if never measured
        return None


def record(rows: list[ThroughputRow], device_name: str, run_id: str) -> CompileGain | None:
    """The gain a finished throughput run measured (and kept for ``auto``), or None when it did not
    measure both the compiled case and an eager twin."""
    compiled = next((r for r in rows if r.case == COMPILED_CASE and r.status == "ok" and r.device == "cpu"), None)
    if compiled is None:
        return None
    twin = next((r for r in rows if r.status == "ok" and r.model and r.compile == "off" and r.pipeline == "synthetic"
                 and (r.precision, r.channels_last, r.batch_size) ==
                 (compiled.precision, compiled.channels_last, compiled.batch_size)), None)
    if twin is None:
        return None
    # A second run on the machine finds inductor's on-disk cache warm (measured on an AMD EPYC: 84 s
    # to compile, then 3 s), while a trial compiles shapes of its own (batch, eval mode) cold: the
    # largest cost seen for this device and torch version stands.
    earlier = read(device_name)
    compile_s = max(compiled.warmup_s - twin.warmup_s, earlier.compile_s if earlier else 0.0, 0.0)
    gain = CompileGain(device_name, torch.__version__, compiled.imgs_per_s / twin.imgs_per_s,
                       compile_s, twin.imgs_per_s, twin.case, run_id)
    path = cache_path(device_name, torch.__version__)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(gain), indent=2) + "\n")
    return gain


def choose(device_name: str, images: int | None) -> tuple[str, str]:
    """(compile mode, why) for ``compile = "auto"`` on this CPU, for training ``images`` images per
    trial (None: throughput cases, too short to repay compiling)."""
    gain = read(device_name)
    if gain is None:
        return "off", (f"torch.compile not measured on this CPU yet; `bench throughput --case {COMPILED_CASE} "
                       "--case fp32-cl-eager --case bf16-cl-eager` measures it")
    measured = (f"{COMPILED_CASE} {gain.speedup:.2f}x {gain.eager_case}, ~{gain.compile_s:.0f} s to compile "
                f"({gain.run_id})")
    if images is None or gain.speedup <= 1.0:
        return "off", f"{measured}{'' if images is None else ': no gain'}"
    saving = gain.saving_s(images)
    if saving < REPAY * gain.compile_s:
        return "off", f"{measured}: would save ~{saving:.0f} s over {images:,} images, too little"
    return "default", f"{measured}: saves ~{saving:.0f} s over {images:,} images"
