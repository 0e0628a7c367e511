"""The short table a GPU session prints last (the device tool returns only the end of the output).

    python3 tools/session_table.py RESULTS_DIR

One line per throughput case and per (trial, seed) of every run folder under RESULTS_DIR, from
their CSVs; the standard library only, so it prints whatever state the folders were left in.
"""

import csv
import json
import sys
from pathlib import Path


def rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(text: str, fmt: str) -> str:
    return format(float(text), fmt) if text not in ("", None) else "-"


def throughput_lines(run: Path) -> list[str]:
    profiles = {p["case"]: p for p in rows(run / "profile.csv")}
    out = []
    for r in rows(run / "throughput.csv"):
        p = profiles.get(r["case"], {})
        busy = f" busy {num(p.get('device_busy', ''), '.0%')} {num(p.get('kernels_per_step', ''), '.0f')} k/step" \
            if p.get("kernel_ms") else ""
        mfu = f" mfu {num(r['mfu'], '.1%')}" if r.get("mfu") else ""
        out.append(f"  {r['case']:<22} b{r['batch_size']:<5} {r['precision']:<5} {r['compile']:<12} "
                   f"{num(r['imgs_per_s'], ',.0f'):>9} img/s {num(r['step_ms_median'], ',.2f'):>8} ms "
                   f"warm-up {num(r['warmup_s'], '.0f')} s{mfu}{busy} {r['status']}")
    return out


def run_lines(run: Path) -> list[str]:
    out = []
    for r in rows(run / "trials.csv"):
        out.append(f"  {r['trial']:<10} seed {r['seed']} {r['status']:<11} steps {r['steps_to_target'] or '-':>5} "
                   f"time {num(r['time_to_target_s'], '.1f'):>6} s  train {num(r['train_time_s'], '.1f')} s "
                   f"{num(r['train_imgs_per_s'], ',.0f')} img/s  best {num(r['best_test_acc'], '.2%')}  "
                   f"compile {num(r['compile_time_s'], '.0f')} s eval {num(r['eval_time_s'], '.0f')} s")
    return out


def main(results: Path) -> None:
    for env_path in sorted(results.rglob("env.json")):
        run = env_path.parent
        try:
            env = json.loads(env_path.read_text())
        except (OSError, ValueError):
            print(f"{run.relative_to(results)}: env.json unreadable")
            continue
        kind = env.get("kind", "?")
        print(f"{run.relative_to(results)} ({kind}, {env.get('device_name') or env.get('env', {}).get('cpu', '')}, "
              f"{env.get('state', '?')})")
        lines = throughput_lines(run) if kind == "throughput" else run_lines(run) if kind == "run" else []
        print("\n".join(lines) if lines else "  (no rows)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
