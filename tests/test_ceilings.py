"""Device ceilings (sc_fast.ceilings): real measurements on this CPU at tiny sizes, the cache's
logic with stand-in measurements, the datasheet lookup, MFU's arithmetic, and the roofline plot
(bench.report_roofline).

No test asserts a speed (the machine is shared): only that the numbers are positive and finite
and that the logic holds."""

import json
import math
import time
from pathlib import Path

import pytest
import torch

from bench.report_roofline import RooflinePoint, plot_roofline
from sc_fast import ceilings
from sc_fast.ceilings import (PLANS, CeilingPlan, Ceilings, achieved_tflops, cache_path, cached, datasheet, measure,
                              measure_bandwidth, measure_matmul, mfu, tf32_matmul)

CPU = torch.device("cpu")
TINY = CeilingPlan(matmul_n=128, warmup=1, matmul_repeats=3, copy_bytes=1 << 20, copy_repeats=3, budget_s=None)
ALL = ("fp32", "tf32", "bf16", "fp16")


def test_cpu_ceilings_are_positive_and_skip_tf32() -> None:
    c = measure(CPU, ALL, TINY)
    assert set(c.matmul_tflops) == {"fp32", "bf16", "fp16"}  # no TF32 on a CPU
    assert all(v > 0 and math.isfinite(v) for v in c.matmul_tflops.values())
    assert c.bandwidth_gb_s > 0 and math.isfinite(c.bandwidth_gb_s)
    assert (c.matmul_n, c.copy_bytes, c.torch_version, c.device_name) == (128, 1 << 20, torch.__version__, "cpu")
    assert Ceilings.from_json(json.loads(json.dumps(c.to_json()))) == c


def test_tf32_cannot_be_measured_on_a_cpu() -> None:
    with pytest.raises(ValueError, match="tf32"):
        measure_matmul(CPU, "tf32", 64, 1)
    with pytest.raises(ValueError, match="unknown precision"):
        measure(CPU, ("fp8",), TINY)


@pytest.mark.parametrize("before", ["tf32", "ieee"])
def test_the_tf32_setting_is_restored(before: str, restores_fp32_precision: None) -> None:
    matmul = torch.backends.cuda.matmul
    matmul.fp32_precision = before
    with tf32_matmul(before == "ieee"):
        assert matmul.fp32_precision == ("tf32" if before == "ieee" else "ieee")
    assert matmul.fp32_precision == before
    with pytest.raises(RuntimeError), tf32_matmul(before == "ieee"):
        raise RuntimeError("a failed measurement")
    assert matmul.fp32_precision == before


def test_fp32_matmuls_run_with_tf32_off(monkeypatch: pytest.MonkeyPatch, restores_fp32_precision: None) -> None:
    """Whatever the process had set, the fp32 product runs with IEEE float32 math, and the setting is
    put back after."""
    matmul, seen, mm = torch.backends.cuda.matmul, [], torch.mm

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(matmul.fp32_precision)
        return mm(*args, **kwargs)

    monkeypatch.setattr(torch, "mm", spy)
    matmul.fp32_precision = "tf32"
    assert measure_matmul(CPU, "fp32", 32, repeats=2, warmup=1) > 0
    assert seen == ["ieee"] * 3 and matmul.fp32_precision == "tf32"


def test_a_cpu_budget_stops_the_repeats_early() -> None:
    calls = []
    seconds = ceilings._timed(lambda: (calls.append(1), time.sleep(0.02)), warmup=1, repeats=10, device=CPU,
                              budget_s=0.01)
    assert len(seconds) == 1 and len(calls) == 1 and seconds[0] >= 0.02  # the warm-up call is the measurement


def test_bandwidth_counts_a_read_and_a_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy that takes 1 s per repeat moves 2 x its bytes: 2 GB/s for 1e9 bytes."""
    monkeypatch.setattr(ceilings, "_timed", lambda *a, **k: [1.0, 1.0, 3.0])
    assert measure_bandwidth(CPU, 1_000_000, repeats=3) == pytest.approx(2e6 / 1e9)
    assert measure_matmul(CPU, "fp32", 100, repeats=3) == pytest.approx(2 * 100**3 / 1e12)


def test_on_a_cpu_slow_first_calls_are_warm_up_but_a_lone_call_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU's first products wake the thread pool and fault in the output: timed, then dropped, so
    they cannot pull the ceiling down (once they halved it: an MFU over 100%). A product so slow
    that the budget allows only one (bf16 emulated) is measured, not thrown away."""
    asked = []

    def clock(work: object, steps: int, device: torch.device, budget_s: float | None) -> list[float]:
        asked.append((steps, budget_s))
        return [9.0, 8.0, 7.0] + [1.0] * (steps - 3) if budget_s is None else [4.0]

    monkeypatch.setattr(ceilings, "time_steps", clock)
    assert measure_matmul(CPU, "fp32", 100, repeats=3, warmup=3) == pytest.approx(2 * 100**3 / 1.0 / 1e12)
    assert measure_matmul(CPU, "fp32", 100, repeats=3, warmup=3, budget_s=2.0) == pytest.approx(2 * 100**3 / 4.0 / 1e12)
    assert asked == [(6, None), (6, 2.0)]  # warm-up and repeats, on one clock


def test_the_default_plans_differ_by_device() -> None:
    assert ceilings.default_plan(torch.device("cuda")) is PLANS["cuda"]
    assert ceilings.default_plan(CPU) is PLANS["cpu"]
    assert PLANS["cuda"].matmul_n == 8192 and PLANS["cuda"].copy_bytes == 2 << 30
    assert PLANS["cpu"].matmul_n == 1024 and PLANS["cpu"].copy_bytes == 256 << 20


class FakeDevice:
    """Stand-in measurements: records what was measured, returns fixed numbers."""

    TFLOPS = {"fp32": 0.1, "bf16": 0.01, "fp16": 0.02}

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.matmuls: list[str] = []
        self.copies = 0
        monkeypatch.setattr(ceilings, "measure_matmul", self.matmul)
        monkeypatch.setattr(ceilings, "measure_bandwidth", self.bandwidth)

    def matmul(self, device: torch.device, precision: str, n: int, *args: object) -> float:
        self.matmuls.append(precision)
        return self.TFLOPS[precision]

    def bandwidth(self, device: torch.device, nbytes: int, *args: object) -> float:
        self.copies += 1
        return 10.0


def refuse(*args: object) -> float:
    raise AssertionError("measured although the cache holds the answer")


def test_a_second_call_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = cached(CPU, "CPU AMD EPYC (AVX2)", ("fp32", "bf16"), tmp_path, TINY)
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [cache_path(tmp_path, "CPU AMD EPYC (AVX2)", torch.__version__).name]
    assert Ceilings.from_json(json.loads(files[0].read_text())) == first  # valid JSON, whole
    monkeypatch.setattr(ceilings, "measure_matmul", refuse)
    monkeypatch.setattr(ceilings, "measure_bandwidth", refuse)
    assert cached(CPU, "CPU AMD EPYC (AVX2)", ("fp32", "bf16"), tmp_path, TINY) == first
    assert cached(CPU, "CPU AMD EPYC (AVX2)", ("bf16",), tmp_path, TINY) == first  # a subset is a hit
    assert cached(CPU, "CPU AMD EPYC (AVX2)", ("fp32", "tf32"), tmp_path, TINY) == first  # tf32: none on a CPU


def test_the_key_is_device_name_and_torch_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDevice(monkeypatch)
    a = cached(CPU, "NVIDIA H100 80GB HBM3", ("fp32",), tmp_path, TINY, torch_version="2.11.0+cu128")
    b = cached(CPU, "NVIDIA H100 80GB HBM3", ("fp32",), tmp_path, TINY, torch_version="2.14.1+cu130")
    c = cached(CPU, "NVIDIA H200", ("fp32",), tmp_path, TINY, torch_version="2.14.1+cu130")
    assert fake.matmuls == ["fp32"] * 3 and fake.copies == 3
    assert (a.torch_version, b.torch_version, c.device_name) == ("2.11.0+cu128", "2.14.1+cu130", "NVIDIA H200")
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "ceilings-nvidia-h100-80gb-hbm3-torch-2.11.0+cu128.json",
        "ceilings-nvidia-h100-80gb-hbm3-torch-2.14.1+cu130.json",
        "ceilings-nvidia-h200-torch-2.14.1+cu130.json"]


def test_a_missing_precision_measures_only_that_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDevice(monkeypatch)
    cached(CPU, "cpu", ("fp32",), tmp_path, TINY)
    both = cached(CPU, "cpu", ("fp32", "bf16"), tmp_path, TINY)
    assert fake.matmuls == ["fp32", "bf16"] and fake.copies == 1
    assert both.matmul_tflops == {"fp32": 0.1, "bf16": 0.01} and both.bandwidth_gb_s == 10.0
    on_disk = json.loads(cache_path(tmp_path, "cpu", torch.__version__).read_text())
    assert Ceilings.from_json(on_disk) == both
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no temporary file left


def test_other_sizes_or_a_torn_file_measure_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDevice(monkeypatch)
    cached(CPU, "cpu", ("fp32",), tmp_path, TINY)
    bigger = CeilingPlan(256, 1, 3, 2 << 20, 3, None)
    assert cached(CPU, "cpu", ("fp32",), tmp_path, bigger).matmul_n == 256
    cache_path(tmp_path, "cpu", torch.__version__).write_text('{"device_name": "cpu", "matmul_')
    assert cached(CPU, "cpu", ("fp32",), tmp_path, bigger).matmul_n == 256
    assert fake.matmuls == ["fp32"] * 3 and fake.copies == 3
    # a record made before the method it is measured by (no "method": the CPU's first calls were timed)
    path = cache_path(tmp_path, "cpu", torch.__version__)
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "method"}))
    assert cached(CPU, "cpu", ("fp32",), tmp_path, bigger).method == ceilings.METHOD
    assert fake.matmuls == ["fp32"] * 4 and fake.copies == 4
    assert cached(CPU, "cpu", ("fp32",), tmp_path / "new" / "dir", TINY).matmul_n == 128  # made when absent


@pytest.mark.parametrize(("name", "expected"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 SXM5 80GB", "H100 SXM"), ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"), ("NVIDIA H100 PCIe", None), ("NVIDIA H100 NVL", None),
    ("NVIDIA H200 NVL", None), ("NVIDIA GH200 480GB", None), ("NVIDIA A100 80GB PCIe", None),
    ("NVIDIA A100-SXM4-40GB", None), ("CPU AMD EPYC", None), ("cpu", None)])
def test_datasheet_lookup(name: str, expected: str | None) -> None:
    sheet = datasheet(name)
    assert (sheet.name if sheet else None) == expected


def test_datasheet_peaks_are_dense() -> None:
    """Dense tensor-core peaks are half NVIDIA's "with sparsity" figures; bf16 and fp16 are equal,
    tf32 half of them (to the datasheets' rounding); H200 computes like H100 with faster memory."""
    h100, h200, a100 = (datasheet(n) for n in ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A100-SXM4-80GB"))
    assert h100 and h200 and a100
    assert h100.matmul_tflops == h200.matmul_tflops and h200.bandwidth_gb_s > h100.bandwidth_gb_s
    assert h100.matmul_tflops["bf16"] == pytest.approx(1979 / 2, abs=1)
    for sheet in (h100, h200, a100):
        t = sheet.matmul_tflops
        assert t["bf16"] == t["fp16"] == pytest.approx(2 * t["tf32"], rel=0.01) and t["fp32"] < t["tf32"]


def made_up() -> Ceilings:
    return Ceilings(device_name="NVIDIA H100 80GB HBM3", torch_version="2.11.0", matmul_n=8192, copy_bytes=2 << 30,
                    matmul_tflops={"fp32": 50.0, "tf32": 400.0, "bf16": 800.0}, bandwidth_gb_s=3000.0)


def test_mfu_arithmetic() -> None:
    c = made_up()
    tflops = achieved_tflops(imgs_per_s=100_000, flop_per_img=0.72e9)
    assert tflops == pytest.approx(72.0)
    assert mfu(tflops, c, "bf16") == pytest.approx(0.09)
    assert mfu(tflops, c, "tf32") == pytest.approx(0.18)
    assert mfu(tflops, c, "fp16") is None  # not measured
    assert c.ridge_flop_per_byte("bf16") == pytest.approx(800e12 / 3000e9)



def test_the_roofline_is_a_png(tmp_path: Path) -> None:
    points = [RooflinePoint("bf16-cl-compiled", "bf16", 30.0, 60.0), RooflinePoint("fp32", "fp32", 18.0, 9.0),
              RooflinePoint("fp16", "fp16", 25.0, 20.0),  # a precision without a measured roof
              RooflinePoint("failed", "bf16", 30.0, 0.0)]  # nothing to place on log axes: skipped
    path = tmp_path / "roofline.png"
    plot_roofline(points, made_up(), path, "throughput on NVIDIA H100 80GB HBM3")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [f.name for f in tmp_path.iterdir()] == ["roofline.png"]  # written whole, nothing left beside
