"""`compile = "auto"` on a CPU follows what a throughput run measured there (bench.compile_gain):
recorded from the compile-default case and its eager twin, then compile only for work long enough
to repay it. Rows are made up: nothing here compiles or times anything."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench import build, compile_gain
from bench import config as config_mod
from bench.common import device_name
from bench.results import ThroughputRow
from sc_fast.env import cpu_model
from sc_fast.hardware import cpu_isa, probe

CPU = torch.device("cpu")


def row(case: str, compile: str, imgs_per_s: float, warmup_s: float, **kw: object) -> ThroughputRow:
    base = dict(run_id="r", case=case, device="cpu", pipeline="synthetic", precision="fp32", channels_last=True,
                compile=compile, batch_size=512, steps=8, imgs_per_s=imgs_per_s, step_ms_median=1.0, step_ms_p10=1.0,
                step_ms_p90=1.0, ratio_to_baseline=None, model=True, warmup=1, repeats=3, warmup_s=warmup_s,
                peak_mem_mib=1.0, status="ok", error="", baseline_imgs_per_s=None, delta=None)
    return ThroughputRow(**{**base, **kw})


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # this test's measurements reach no other test


def test_a_measured_gain_is_recorded_and_decides_by_the_length_of_the_work() -> None:
    rows = [row("baseline", "off", 300.0, 5.0, channels_last=False), row("fp32-cl-eager", "off", 440.0, 4.0),
            row("compile-default", "default", 550.0, 64.0)]
    gain = compile_gain.record(rows, "CPU X (AMX)", "run1")
    assert gain is not None and gain.eager_case == "fp32-cl-eager"  # the twin: same precision, layout, batch
    assert gain.speedup == pytest.approx(1.25) and gain.compile_s == pytest.approx(60.0)
    assert compile_gain.read("CPU X (AMX)") == gain and compile_gain.read("CPU Y (AVX2)") is None
    mode, why = compile_gain.choose("CPU X (AMX)", 2925 * 256)  # a full trial: ~340 s saved
    assert mode == "default" and "1.25x" in why and "run1" in why
    mode, why = compile_gain.choose("CPU X (AMX)", 300 * 32)  # a smoke trial: seconds saved
    assert mode == "off" and "too little" in why
    assert compile_gain.choose("CPU X (AMX)", None)[0] == "off"  # throughput cases: too short


def test_a_warm_inductor_cache_does_not_make_compiling_look_free() -> None:
    first = [row("fp32-cl-eager", "off", 440.0, 4.0), row("compile-default", "default", 550.0, 88.0)]
    again = [row("fp32-cl-eager", "off", 450.0, 4.0), row("compile-default", "default", 560.0, 7.0)]
    compile_gain.record(first, "CPU X (AMX)", "run1")
    gain = compile_gain.record(again, "CPU X (AMX)", "run2")  # inductor's cache was warm: 3 s
    assert gain is not None and gain.compile_s == pytest.approx(84.0) and gain.run_id == "run2"
    assert gain.speedup == pytest.approx(560 / 450)  # the newest speed, the coldest cost


def test_no_gain_or_no_measurement_runs_eagerly() -> None:
    rows = [row("fp32-cl-eager", "off", 440.0, 4.0), row("compile-default", "default", 430.0, 64.0)]
    compile_gain.record(rows, "CPU Z (AVX2)", "run2")
    mode, why = compile_gain.choose("CPU Z (AVX2)", 10**9)
    assert mode == "off" and "no gain" in why
    mode, why = compile_gain.choose("CPU W", 10**9)
    assert mode == "off" and "not measured" in why and "--case compile-default" in why
    assert compile_gain.record([row("compile-default", "default", 430.0, 64.0)], "CPU V", "r") is None  # no twin
    cuda = [replace(r, device="cuda") for r in rows]
    assert compile_gain.record(cuda, "NVIDIA H200", "r") is None  # a GPU compiles wherever it can anyway


def test_the_start_up_line_says_why() -> None:
    cfg = config_mod.load()
    name = device_name({"cpu": cpu_model(), "cpu_isa": cpu_isa()}, CPU)
    compile_gain.record([row("fp32-cl-eager", "off", 100.0, 4.0, precision="fp32"),
                         row("compile-default", "default", 150.0, 34.0, precision="fp32")], name, "run3")
    settings, line = build.device_settings(cfg, CPU, images=10**7)
    if probe(CPU).compile_missing:
        pytest.skip("no C compiler or Python headers here: auto never compiles")
    assert settings.compile == "default" and "compile default (auto: compile-default 1.50x fp32-cl-eager" in line
    settings, line = build.device_settings(cfg, CPU)  # throughput cases: eager, with the measurement named
    assert settings.compile == "off" and "1.50x" in line
