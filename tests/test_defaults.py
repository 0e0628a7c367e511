"""Execution defaults: "auto" resolved from what the device can do (capability probes substituted),
and the torch.compile preflight (a compile mode that cannot build here is a one-line exit 2)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.build import resolve_settings
from bench.common import UsageError
from bench.config import DeviceSettings
from helpers import assert_one_line
from sc_fast.hardware import Capabilities, compile_missing

REPO = Path(__file__).resolve().parent.parent
AUTO = DeviceSettings(precision="auto", channels_last="auto", compile="auto", warmup_steps=2)


def caps(device_type: str, bf16: bool, missing: str | None = None) -> Capabilities:
    return Capabilities(device_type=device_type, native_bf16=bf16, bf16_source="substituted probe",
                        compile_missing=missing)


@pytest.mark.parametrize("device_type, bf16, missing, expected", [
    ("cpu", True, None, ("bf16", True, "off")),  # AVX512-BF16 / AMX
    ("cpu", False, None, ("fp32", True, "off")),  # AVX2: emulated bf16 is ~10x slower
    ("cuda", True, None, ("bf16", True, "default")),  # Ampere and later
    ("cuda", False, None, ("fp16", True, "default")),  # Volta/Turing: fp16 with a scaler
    ("cuda", True, "a C compiler", ("bf16", True, "off")),  # no toolchain: eager, with a notice
])
def test_auto_resolves_from_the_device(device_type: str, bf16: bool, missing: str | None,
                                       expected: tuple[str, bool, str]) -> None:
    resolved, line = resolve_settings(AUTO, caps(device_type, bf16, missing), "bench.toml: devices.x")
    assert (resolved.precision, resolved.channels_last, resolved.compile) == expected
    assert resolved.warmup_steps == 2
    assert line.startswith(f"{device_type} execution: precision {expected[0]} (auto: substituted probe)")
    assert "\n" not in line
    if missing:
        assert "torch.compile needs a C compiler" in line


def test_explicit_settings_are_kept() -> None:
    explicit = DeviceSettings(precision="fp16", channels_last=False, compile="max-autotune", warmup_steps=0)
    resolved, line = resolve_settings(explicit, caps("cuda", True), "f: devices.cuda")
    assert resolved == explicit and "(auto" not in line


def test_explicit_compile_without_a_toolchain_is_a_usage_error() -> None:
    explicit = DeviceSettings(precision="bf16", channels_last=True, compile="default", warmup_steps=0)
    with pytest.raises(UsageError, match=r"f.toml: devices.cuda.compile = 'default': torch.compile needs the "
                                         r"Python headers"):
        resolve_settings(explicit, caps("cuda", True, "the Python headers (Python.h in /x)"), "f.toml: devices.cuda")


def test_compile_preflight_finds_a_missing_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert compile_missing() is None  # this machine has gcc and Python.h (the project's machines do)
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on an empty PATH
    monkeypatch.delenv("CC", raising=False)
    assert "a C compiler" in (compile_missing() or "")


def test_compile_preflight_on_a_gpu_asks_for_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inductor writes GPU kernels in Triton: a CUDA compile without the package is refused up front
    (a CPU compile does not need it)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    assert "Triton" in (compile_missing("cuda") or "")
    assert compile_missing("cpu") is None


def test_cli_refuses_compile_without_a_compiler(tmp_path: Path) -> None:
    """A real `python -m bench run` whose config asks for torch.compile on a machine without a C
    compiler (PATH emptied): exit 2, one line naming what is missing, nothing written."""
    text = (REPO / "bench.toml").read_text() + '\n[devices.cpu]\ncompile = "default"\n'
    config, out = tmp_path / "bench.toml", tmp_path / "out"
    config.write_text(text)
    env = {**os.environ, "PATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("CC", None)
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--config", str(config), "--device", "cpu",
                        "--profile", "smoke", "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert_one_line(p.stderr, "devices.cpu.compile = 'default'", "C compiler")
    assert not out.exists()


@pytest.mark.parametrize("device_type, precision", [("cpu", "fp32"), ("cuda", "fp16")])
def test_whole_step_capture_needs_cuda_and_no_grad_scaler(device_type: str, precision: str) -> None:
    graph = DeviceSettings(precision=precision, channels_last=True, compile="cuda-graph", warmup_steps=0)
    with pytest.raises(UsageError, match="cuda-graph' needs a CUDA device and bf16 or fp32"):
        resolve_settings(graph, caps(device_type, True), "f.toml: devices.x")
    ok = DeviceSettings(precision="bf16", channels_last=True, compile="cuda-graph", warmup_steps=0)
    assert resolve_settings(ok, caps("cuda", True, "a C compiler"), "f")[0] == ok  # no torch.compile involved
