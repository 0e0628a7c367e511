"""The roofline picture of a throughput run: where each case's step sits against the device's
measured ceilings (sc_fast.ceilings).

x is a step's arithmetic intensity (model FLOPs per byte moved, sc_fast.flops's eager estimate)
and y its achieved model TFLOP/s, both log-scaled. The roofs: one horizontal line per measured
matmul ceiling and the bandwidth diagonal (TFLOP/s = intensity x bandwidth); where they meet, the
ridge point. A case left of its precision's ridge is bound by memory, right of it by compute; the
gap below the roof is what the step leaves on the table. The eager byte count over-counts what a
fused step moves, so a compiled case really sits further right than drawn.
"""

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on benchmark machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.results import atomic_write  # noqa: E402
from sc_fast.ceilings import Ceilings  # noqa: E402


@dataclass(frozen=True)
class RooflinePoint:
    case: str
    precision: str
    intensity_flop_per_byte: float
    tflops: float  # achieved model TFLOP/s


def _x_range(points: list[RooflinePoint], ceilings: Ceilings) -> tuple[float, float]:
    """Wide enough for every case and every ridge point, a factor of 4 of margin each side."""
    xs = [p.intensity_flop_per_byte for p in points] + [ceilings.ridge_flop_per_byte(q) for q in ceilings.matmul_tflops]
    xs = [x for x in xs if np.isfinite(x) and x > 0] or [1.0]
    return min(xs) / 4, max(xs) * 4


def _roofs(ax: plt.Axes, ceilings: Ceilings, x_lo: float, x_hi: float, colours: dict[str, str]) -> None:
    bw_tflops = ceilings.bandwidth_gb_s / 1e3  # TFLOP/s per FLOP/byte of intensity
    top_ridge = max((ceilings.ridge_flop_per_byte(q) for q in ceilings.matmul_tflops), default=x_hi)
    ax.plot([x_lo, top_ridge], [x_lo * bw_tflops, top_ridge * bw_tflops], color="black", linewidth=1.5,
            label=f"memory {ceilings.bandwidth_gb_s:,.0f} GB/s")
    for q, peak in sorted(ceilings.matmul_tflops.items(), key=lambda kv: kv[1]):
        ridge = ceilings.ridge_flop_per_byte(q)
        ax.plot([ridge, x_hi], [peak, peak], color=colours[q], linewidth=1.5, label=f"{q} matmul {peak:,.3g} TFLOP/s")
        ax.plot([x_lo, ridge], [peak, peak], color=colours[q], linewidth=0.8, linestyle=":")
        ax.plot([ridge], [peak], "o", color=colours[q], markersize=4)
        ax.annotate(f"ridge {ridge:,.3g} FLOP/B", (ridge, peak), textcoords="offset points", xytext=(4, 4),
                    fontsize=7, color=colours[q])


def plot_roofline(points: list[RooflinePoint], ceilings: Ceilings, path: Path, title: str) -> None:
    """Roofs from ``ceilings`` and one marker per case (coloured as its precision's roof)."""
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(ceilings.matmul_tflops) + sorted({p.precision for p in points} - set(ceilings.matmul_tflops))
    colours = {q: palette[i % len(palette)] for i, q in enumerate(names)}
    x_lo, x_hi = _x_range(points, ceilings)
    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    _roofs(ax, ceilings, x_lo, x_hi, colours)
    for p in points:
        if not (p.tflops > 0 and p.intensity_flop_per_byte > 0):  # nothing to place on log axes
            continue
        ax.plot([p.intensity_flop_per_byte], [p.tflops], "D", color=colours[p.precision], markersize=6)
        ax.annotate(p.case, (p.intensity_flop_per_byte, p.tflops), textcoords="offset points", xytext=(5, -10),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ys = [p.tflops for p in points if p.tflops > 0] + list(ceilings.matmul_tflops.values())
    if ys:  # room above the highest roof for its label, below the slowest case for its name
        ax.set_ylim(min(ys) / 3, max(ys) * 2)
    ax.set_xlabel("arithmetic intensity (FLOP/byte, eager estimate)")
    ax.set_ylabel("TFLOP/s")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
