"""Step profiles (`bench throughput --trace`, sc_fast.profile): the summary as a pure function of
profiler keys (kernels on a GPU, host operators without one), a real profile of a small step on
this CPU with its Chrome trace, and the command's files and summary section.

No test here asserts how long anything took: only that the clocks and the top list are there and
add up."""

import gzip
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench import cli
from bench.results import ProfileOpRow, ProfileRow, ThroughputRow, read_rows
from sc_fast.model import resnet56
from sc_fast.profile import OpStat, profile_steps, summarize
from test_throughput import SYNTHETIC_CASES, only_run, throughput, write_config

STATS = [OpStat("aten::convolution", False, 110, 9_000.0), OpStat("cudaLaunchKernel", False, 1500, 6_000.0),
         OpStat("sm90_xmma_fprop", True, 100, 4_000.0), OpStat("bn_fw_kernel", True, 220, 3_000.0),
         OpStat("Memset (Device)", True, 10, 100.0), OpStat("elementwise_kernel", True, 670, 2_900.0)]


def test_with_kernels_the_device_side_is_summarized() -> None:
    """Kernel time and count per step come from the device keys alone; host keys (however long)
    stay out of the top list, and shares are of kernel time."""
    kernel_ms, kernels, top = summarize(STATS, steps=2, top=3)
    assert kernel_ms == pytest.approx((4_000 + 3_000 + 100 + 2_900) / 1e3 / 2)
    assert kernels == pytest.approx((100 + 220 + 10 + 670) / 2)
    assert [t.name for t in top] == ["sm90_xmma_fprop", "bn_fw_kernel", "elementwise_kernel"]
    assert {t.kind for t in top} == {"kernel"}
    assert top[0].calls_per_step == 50 and top[0].ms_per_step == pytest.approx(2.0)
    assert top[0].share == pytest.approx(0.4)


def test_without_kernels_host_operators_are_ranked() -> None:
    kernel_ms, kernels, top = summarize([s for s in STATS if not s.on_device], steps=3, top=10)
    assert kernel_ms is None and kernels is None
    assert [t.name for t in top] == ["aten::convolution", "cudaLaunchKernel"]
    assert {t.kind for t in top} == {"host op"}
    assert sum(t.share for t in top) == pytest.approx(1.0)
    assert top[1].calls_per_step == 500


def test_a_real_step_profiled_on_this_cpu(tmp_path: Path) -> None:
    """The clocks are positive, the top list holds the model's operators, and the trace is a
    gzipped Chrome trace containing them, written whole (no partial file left beside it)."""
    device = torch.device("cpu")
    model = resnet56()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))

    def step() -> None:
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()

    step()  # warmed up, as profile_steps expects
    p = profile_steps(step, steps=2, device=device, trace=tmp_path / "trace.json.gz", top=5)
    assert p.steps == 2 and p.step_ms > 0 and 0 < p.issue_ms <= p.step_ms
    assert p.kernel_ms is None and p.kernels_per_step is None and p.device_busy is None
    assert len(p.top) == 5 and all(t.kind == "host op" and t.ms_per_step > 0 for t in p.top)
    assert any("convolution" in t.name for t in p.top)
    assert [f.name for f in tmp_path.iterdir()] == ["trace.json.gz"]
    events = json.loads(gzip.decompress((tmp_path / "trace.json.gz").read_bytes()))["traceEvents"]
    names = {e.get("name") for e in events}
    assert {t.name for t in p.top} <= names
    # only the recorded steps count: the warm-up step the profiler's schedule runs first does not
    every = profile_steps(step, steps=2, device=device, top=500).top
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert next(t for t in every if t.name == "aten::convolution").calls_per_step == convs
    assert not any(t.name.startswith("ProfilerStep") for t in every)


def test_profile_steps_refuses_no_steps() -> None:
    with pytest.raises(ValueError):
        profile_steps(lambda: None, steps=0, device=torch.device("cpu"))


def test_throughput_trace_writes_profiles_traces_and_a_summary_section(tmp_path: Path) -> None:
    """Every case that ran is profiled after its timing; a skipped case is not. Without --trace
    a run has no profile files (the module's `normal` run, checked in test_throughput)."""
    config = write_config(tmp_path / "bench.toml", SYNTHETIC_CASES.format(batch=8), steps=2, warmup=1, repeats=1)
    assert throughput(config, tmp_path / "runs", "--trace", "2") == 0
    run = only_run(tmp_path / "runs")
    ran = [r.case for r in read_rows(run / "throughput.csv", ThroughputRow) if r.status == "ok"]
    profiles = read_rows(run / "profile.csv", ProfileRow)
    assert [p.case for p in profiles] == ran == ["base", "cl"]
    for p in profiles:
        assert p.steps == 2 and p.step_ms > 0 and p.issue_ms > 0 and p.error == ""
        assert p.kernel_ms is None  # no GPU here
        assert (run / p.trace).is_file() and p.trace == f"trace_{p.case}.json.gz"
    ops = read_rows(run / "profile_ops.csv", ProfileOpRow)
    assert {o.case for o in ops} == set(ran)
    assert [o.rank for o in ops if o.case == "base"] == list(range(1, 16))
    summary = (run / "summary.md").read_text()
    assert "## Step profile" in summary and "Top 10 of `cl`" in summary
    assert json.loads((run / "env.json").read_text())["settings"]["trace"] == 2


def test_trace_needs_a_positive_step_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["throughput", "--trace", "0", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "--trace" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
