"""The regression gate of ``bench throughput --baseline``: this run's cases against an earlier run's.

Where both runs kept raw step times, a case regressed when ``bench.stats.verdict`` says so for its
per-step times (``compare_samples`` with ``higher_is_better=False``): slower than the baseline by
more than ``--max-regression`` of throughput, AND Mann-Whitney p < 0.05, AND the bootstrap interval
wholly on the slower side. Per-step times rather than per-repeat img/s, because there are only
``repeats`` (3 by default) per-repeat rates per side, and with 3 vs 3 the smallest two-sided
Mann-Whitney p is 0.1: the gate could never fire. Per-step times give steps x repeats samples a side
(12 on the CPU, 60 on a GPU by default), where p can reach 1e-6. Steps of one repeat are not
independent draws (a background job slows several in a row), so p is optimistic; the limit on the
size still has to be met, and runs measured hours apart share no machine state at all: on a noisy
machine ``bench ab`` (interleaved) is the tool for a decision. Against a baseline without raw step
times the gate falls back to comparing median img/s with the limit alone, and says so.

A baseline of another world size (1 GPU against N) gives a scaling efficiency per case instead.
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.cases import Case
from bench.results import RunError, RunFolder, StepTimeRow, ThroughputRow, read_rows, step_times
from bench.stats import NO_CHANGE, REGRESSION, Comparison, compare_samples, verdict

StepTimes = dict[str, list[StepTimeRow]]  # case -> its timed steps


@dataclass(frozen=True)
class Baseline:
    path: Path
    env: dict[str, Any]
    rows: dict[str, ThroughputRow]
    steps: StepTimes | None  # None: the baseline kept no raw step times


def baseline_world(b: Baseline) -> int:
    return next(iter(b.rows.values())).world_size


def load_baseline(path: Path) -> Baseline:
    env = RunFolder.open(path, label="--baseline ").env()
    if env.get("kind") != "throughput" or "device_name" not in env:
        raise RunError(f"--baseline {path}: not a throughput run (env.json kind {env.get('kind')!r})")
    rows = read_rows(path / "throughput.csv", ThroughputRow)
    if not rows:
        raise RunError(f"--baseline {path}/throughput.csv: no cases")
    return Baseline(path, env, {r.case: r for r in rows}, step_times(path))


def check_comparable(b: Baseline, name: str, cases: list[Case], console: Console) -> None:
    """Refuses (RunError, exit 2) another device or case set; notes changed case settings."""
    if b.env["device_name"] != name:
        raise RunError(f"--baseline {b.path}: measured on {b.env['device_name']!r}, this run is on {name!r}; "
                       "compare runs from the same device")
    planned = [c.name for c in cases]
    if set(planned) != set(b.rows):
        missing, extra = sorted(set(b.rows) - set(planned)), sorted(set(planned) - set(b.rows))
        raise RunError(f"--baseline {b.path}: case sets differ (only in the baseline: {', '.join(missing) or '-'}; "
                       f"only in this run: {', '.join(extra) or '-'}); pass the same --case flags")
    keys = ("pipeline", "precision", "channels_last", "compile", "batch_size", "model")
    for c in cases:
        old = b.rows[c.name]
        changed = [f"{k} {getattr(old, k)} -> {getattr(c, k)}" for k in keys if getattr(old, k) != getattr(c, k)]
        if changed:
            console.print(f"[yellow]note: case {c.name} differs from the baseline's: {', '.join(changed)}[/yellow]")


@dataclass(frozen=True)
class Gate:
    """The gate's outcome for the cases measured in both runs."""

    raw: bool  # tested on both runs' raw step times; False: medians against the limit alone
    verdicts: dict[str, str]  # case -> regression | improvement | no change
    comparisons: dict[str, Comparison]  # case -> the step-time comparison behind its verdict (raw only)

    @property
    def regressed(self) -> list[str]:
        return [c for c, v in self.verdicts.items() if v == REGRESSION]


def case_gate(delta: float, old: list[StepTimeRow] | None, new: list[StepTimeRow] | None,
              limit: float) -> tuple[str, Comparison | None]:
    """One case's verdict: on the per-step times when both runs have them (size and significance,
    module docstring), else the median img/s delta against the limit alone."""
    if old and new:
        c = compare_samples([r.step_s for r in old], [r.step_s for r in new], higher_is_better=False)
        return verdict(c, limit), c
    return (REGRESSION if delta < -limit else NO_CHANGE), None


def apply_gate(rows: list[ThroughputRow], b: Baseline, limit: float,
               steps: StepTimes | None) -> tuple[list[ThroughputRow], Gate]:
    """Rows with baseline img/s and delta filled in, and the verdict of every case both runs measured.
    ``steps``: this run's raw step times (None: compare medians only)."""
    raw = steps is not None and b.steps is not None
    out, verdicts, comparisons = [], {}, {}
    for r in rows:
        old = b.rows[r.case].imgs_per_s if b.rows[r.case].status == "ok" else None
        delta = r.imgs_per_s / old - 1 if old and r.imgs_per_s is not None else None
        out.append(replace(r, baseline_imgs_per_s=old, delta=delta))
        if delta is None:
            continue
        verdicts[r.case], c = case_gate(delta, (b.steps or {}).get(r.case) if raw else None,
                                        (steps or {}).get(r.case) if raw else None, limit)
        if c is not None:
            comparisons[r.case] = c
    return out, Gate(raw, verdicts, comparisons)


def gate_test_text(rows: list[ThroughputRow], gate: Gate, b: Baseline) -> str:
    """Which test the verdicts come from, for the verdict line and env.json."""
    if gate.raw:
        c = next(iter(gate.comparisons.values()), None)
        n = f", {c.n_new} steps here vs {c.n_base} in the baseline" if c else ""
        return f"Mann-Whitney U on per-step times, p < 0.05, and the limit{n}"
    b_row = next(iter(b.rows.values()))
    return (f"medians only, no significance test: {b.path.name if b.steps is None else 'this run'} kept no raw "
            f"step times (medians of {rows[0].repeats} repeats here, of {b_row.repeats} in the baseline)")


def _case_text(r: ThroughputRow, gate: Gate) -> str:
    c = gate.comparisons.get(r.case)
    return f"{r.case} {r.delta:+.1%}" + (f" (p {c.p_value:.2g})" if c else "")


def gate_line(rows: list[ThroughputRow], gate: Gate, b: Baseline, limit: float) -> str:
    test = f"test: {gate_test_text(rows, gate, b)}"
    compared = len(gate.verdicts)
    unsure = [r for r in rows if r.case in gate.comparisons and gate.verdicts[r.case] != REGRESSION
              and r.delta is not None and r.delta < -limit]
    unsure_text = (f"; slower by more than {limit:.0%} but not significant: "
                   f"{', '.join(_case_text(r, gate) for r in unsure)}" if unsure else "")
    if gate.regressed:
        worst = ", ".join(_case_text(r, gate) for r in rows if r.case in gate.regressed)
        return (f"[red]regression: {len(gate.regressed)} of {compared} cases slower than {b.path.name} by more "
                f"than {limit:.0%}: {worst}{unsure_text}. {test}[/red]")
    return (f"[green]no regression beyond {limit:.0%} in {compared} cases against {b.path.name}{unsure_text}. "
            f"{test}[/green]")


def with_scaling(rows: list[ThroughputRow], b: Baseline) -> list[ThroughputRow]:
    """Scaling efficiency against a baseline of another world size: per-device img/s here over per-
    device img/s there (1.0: perfect scaling)."""
    out = []
    for r in rows:
        old = b.rows[r.case] if r.case in b.rows else None
        old_per_device = old.imgs_per_s / old.world_size if old and old.status == "ok" and old.imgs_per_s else None
        eff = r.imgs_per_s_per_device / old_per_device if old_per_device and r.imgs_per_s_per_device else None
        out.append(replace(r, baseline_imgs_per_s=old.imgs_per_s if old else None, scaling_efficiency=eff))
    return out


def gate_env(gate: Gate, test: str) -> dict[str, Any]:
    """What env.json's ``baseline`` records of the gate: the test and each case's verdict."""
    return {"test": test, "raw_step_times": gate.raw,
            "verdicts": {case: {"verdict": v, "p_value": gate.comparisons[case].p_value if case in gate.comparisons
                                else None} for case, v in gate.verdicts.items()}}
