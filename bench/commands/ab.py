"""``python -m bench ab REV``: the working tree against git revision REV, measured interleaved.

Two runs of ``bench throughput`` made an hour apart on a shared machine can differ by 4x with no
code change, so comparing a run with an old baseline cannot tell a regression from a busy
neighbour. ``ab`` measures both sides in the same minutes instead: REV is checked out in a
temporary ``git worktree add --detach``, then each round runs one child process per side, the
order alternating between rounds (REV first in even rounds, the tree first in odd ones), each a
``python -m bench throughput --repeats 1 --json`` with the same config, cases, steps and warm-up,
its cwd and PYTHONPATH the side's tree so that it imports that tree's code and nothing else
(checked: each child records the commit of the code it ran). Whatever loads the machine then
loads both sides alike.

Per case: ``bench.stats.compare_samples(rev, tree, higher_is_better=True)`` over the rounds'
img/s (ratio = median tree / median REV, its bootstrap interval, Mann-Whitney p) and
``bench.stats.verdict``: a regression is slower than REV by more than ``--max-regression`` AND
significant. Mann-Whitney cannot reach p < 0.05 with fewer than 4 samples a side, so the default
is 6 rounds (smallest p 0.0022).

Both sides read the working tree's config (``--config``, default its bench.toml), so the cases
are the same work; a REV whose code cannot read that config fails in its first child.

Writes a run folder (kind ``ab``): env.json (environment, both commits, settings), ab.csv (one
``AbRow`` per case), ab_samples.csv (every child's img/s per case), summary.md. The worktree and
the children's scratch folders are removed on every way out, Ctrl-C and SIGTERM included.

Exit codes: 0 no case regressed; 1 a case regressed or errored, or a child gave no result; 2 bad
flags, config or REV (nothing written); 130 interrupted (finished rounds kept).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import config as config_mod
from bench import report
from bench.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, check_writable, config_flags,
                          device_flags, device_name, fraction_below_one, make_run_dir, non_negative_int, positive_int,
                          resolve_device)
from bench.config import resolved_dict
from bench.results import AbRow, AbSampleRow, RunError, RunFolder, read_json, write_rows
from bench.stats import REGRESSION, compare_samples, verdict
from sc_fast.env import fingerprint

HELP = "the working tree against a git revision, measured interleaved, with significance"
PARENTS = (config_flags, device_flags)
SIDES = ("rev", "tree")
ROUNDS = 6  # 6 vs 6: smallest Mann-Whitney p 0.0022; below 4 rounds nothing is ever significant
REPO = Path(__file__).resolve().parents[2]  # the working tree whose code runs this command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rev", metavar="REV", help="a commit of this repository: HEAD~1, a branch, a tag, a sha")
    p.add_argument("--case", action="append", help="measure only this case (repeatable); the baseline always runs")
    p.add_argument("--rounds", type=positive_int, default=ROUNDS,
                   help=f"rounds of one child per side (default {ROUNDS}; below 4 nothing can be significant)")
    p.add_argument("--max-regression", type=fraction_below_one, default=0.05, metavar="FRAC",
                   help="exit 1 when a case is slower than REV by more than this fraction and significantly")
    p.add_argument("--steps", type=positive_int, help="timed steps per child (default: the config's)")
    p.add_argument("--warmup", type=non_negative_int, help="untimed steps per child (default: the config's)")


@dataclass(frozen=True)
class Side:
    name: str  # rev | tree
    path: Path  # the tree whose code the side's children import (their cwd and PYTHONPATH)
    commit: str


class ChildFailed(Exception):
    """A child that gave no measurement, or ran the wrong code; str() says which side and why."""


# ---- git ----------------------------------------------------------------------------------------

def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=120, check=False)


def repo_root() -> Path:
    top = git(REPO, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UsageError(f"ab: {REPO} is not inside a git repository (ab checks REV out beside it)")
    return Path(top.stdout.strip()).resolve()


def resolve_rev(repo: Path, rev: str) -> str:
    """REV as a full commit sha; UsageError when this repository has no such commit."""
    found = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if found.returncode != 0:
        raise UsageError(f"REV {rev}: not a commit of the repository at {repo}")
    return found.stdout.strip()


@contextmanager
def signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM blocked in the signal mask until the block ends (then delivered): cleanup
    is not cut short. Blocked, not caught: the handlers stay as they are, and the git processes
    started inside inherit the mask, so a Ctrl-C does not cut them short either."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def rev_worktree(repo: Path, sha: str) -> Iterator[Path]:
    """``sha`` checked out (detached) in a temporary worktree, removed on every way out."""
    scratch = Path(tempfile.mkdtemp(prefix="sc_fast-ab-"))
    path = scratch / "rev"
    try:
        added = git(repo, "worktree", "add", "--detach", str(path), sha)
        if added.returncode != 0:
            raise RunError(f"ab: git worktree add {path} {sha[:10]}: {added.stderr.strip()}")
        yield path
    finally:
        with signals_blocked():
            git(repo, "worktree", "remove", "--force", str(path))
            git(repo, "worktree", "prune")
            shutil.rmtree(scratch, ignore_errors=True)


# ---- one child ------------------------------------------------------------------------------------

def child_command(args: argparse.Namespace, config: Path, device: str, out: Path) -> list[str]:
    """The same ``bench throughput`` for either side: one repeat, machine-readable result."""
    cmd = [sys.executable, "-m", "bench", "throughput", "--config", str(config), "--device", device,
           "--repeats", "1", "--out", str(out), "--json"]
    cmd += [flag for case in args.case or [] for flag in ("--case", case)]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    if args.warmup is not None:
        cmd += ["--warmup", str(args.warmup)]
    if args.data:
        cmd += ["--data", str(Path(args.data).resolve())]
    return cmd


def commands(args: argparse.Namespace, config: Path, device: str, scratch: Path) -> Callable[[int, str], list[str]]:
    """(round, side) -> that child's command; each child writes its run folder under ``scratch``."""
    return lambda rnd, side: child_command(args, config, device, scratch / f"{rnd}-{side}")


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def check_code(result: dict[str, Any], side: Side) -> None:
    """The child must have run its side's code: its env.json records the commit it imported."""
    env = read_json(Path(result["run_dir"]) / "env.json")
    ran = env.get("env", {}).get("git", {}).get("commit")
    if ran and ran != side.commit:
        raise ChildFailed(f"the {side.name} child ran the code of commit {ran[:10]}, not {side.commit[:10]} "
                          f"(it must import {side.path}: check PYTHONPATH and the installed package)")


def run_child(cmd: list[str], side: Side) -> dict[str, Any]:
    """One child in the side's tree (cwd and PYTHONPATH), killed if this process is interrupted."""
    env = {**os.environ, "PYTHONPATH": str(side.path)}
    proc = subprocess.Popen(cmd, cwd=side.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = _last_json(out)
    if proc.returncode not in (EXIT_OK, EXIT_FAILED) or result is None:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        raise ChildFailed(f"the {side.name} side ({side.commit[:10]}) exited {proc.returncode}: {tail}")
    check_code(result, side)
    return result


def samples_of(result: dict[str, Any], rnd: int, side: str, first: bool) -> list[AbSampleRow]:
    return [AbSampleRow(round=rnd, side=side, first=first, case=r["case"],
                        imgs_per_s=r["imgs_per_s"] if r["status"] == "ok" else None,
                        status=r["status"], error=r.get("error") or "") for r in result["rows"]]


# ---- the statistics (pure) -------------------------------------------------------------------------

def case_summary(case: str, samples: list[AbSampleRow], limit: float) -> AbRow:
    """One case's samples -> its row: skipped everywhere, errored somewhere, or compared."""
    got = {side: [s.imgs_per_s for s in samples if s.side == side and s.imgs_per_s is not None] for side in SIDES}
    statuses = {s.status for s in samples}
    medians = [statistics.median(got[side]) if got[side] else None for side in SIDES]
    if statuses == {"skipped"}:
        return AbRow(case, 0, None, None, None, None, None, None, "skipped")
    if statuses != {"ok"} or not all(got.values()):
        return AbRow(case, 0, *medians, None, None, None, None, "error")
    c = compare_samples(got["rev"], got["tree"], higher_is_better=True)
    rounds = min(len(got["rev"]), len(got["tree"]))
    return AbRow(case, rounds, *medians, c.ratio, c.ci_low, c.ci_high, c.p_value, verdict(c, limit))


def summarise(samples: list[AbSampleRow], limit: float) -> list[AbRow]:
    """ab.csv from ab_samples.csv: one row per case, in the order the children measured them."""
    cases = list(dict.fromkeys(s.case for s in samples))
    return [case_summary(c, [s for s in samples if s.case == c], limit) for c in cases]


# ---- the rounds ------------------------------------------------------------------------------------

def round_text(rnd: int, rounds: int, order: tuple[str, ...], samples: list[AbSampleRow]) -> str:
    now = [s for s in samples if s.round == rnd]
    cases = ", ".join(f"{c}: " + " / ".join(next((f"{s.imgs_per_s:,.1f}" if s.imgs_per_s else s.status)
                                                   for s in now if s.case == c and s.side == side) for side in SIDES)
                      for c in dict.fromkeys(s.case for s in now))
    return f"round {rnd + 1}/{rounds} ({order[0]} first), img/s rev / tree: {cases}"


def measure_rounds(run_dir: Path, sides: dict[str, Side], command: Callable[[int, str], list[str]], rounds: int,
                   limit: float, console: Console) -> list[AbSampleRow]:
    """Rounds of one child per side, order alternating; samples and ab.csv rewritten after each round."""
    samples: list[AbSampleRow] = []
    for rnd in range(rounds):
        order = SIDES if rnd % 2 == 0 else SIDES[::-1]
        for pos, name in enumerate(order):
            samples += samples_of(run_child(command(rnd, name), sides[name]), rnd, name, pos == 0)
        write_rows(run_dir / "ab_samples.csv", samples, AbSampleRow)
        write_rows(run_dir / "ab.csv", summarise(samples, limit), AbRow)
        console.print(round_text(rnd, rounds, order, samples))
    return samples


# ---- the command ----------------------------------------------------------------------------------

def verdict_lines(rows: list[AbRow], limit: float) -> list[str]:
    lines = []
    for r in rows:
        if r.verdict == REGRESSION:
            lines.append(f"[red]regression: {r.case}: the working tree is {1 - r.ratio:.1%} slower than REV "
                         f"(ratio {r.ratio:.3f}, 95% CI {r.ci_low:.3f}-{r.ci_high:.3f}, p {r.p_value:.2g}, "
                         f"{r.rounds} rounds; limit {limit:.0%})[/red]")
        elif r.verdict == "error":
            lines.append(f"[red]{r.case}: errored in a child (ab_samples.csv has the error)[/red]")
    compared = [r for r in rows if r.ratio is not None]
    if not lines:
        lines.append(f"[green]no regression beyond {limit:.0%} and significant in {len(compared)} cases[/green]")
    return lines


def plan_env(run_dir: Path, args: argparse.Namespace, cfg: config_mod.Config, device_text: str, name: str,
             sha: str, fp: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run_dir.name, "kind": "ab", "device": device_text, "device_name": name,
            "rev": {"spec": args.rev, "commit": sha},
            "tree": {"path": str(REPO), "commit": fp["git"]["commit"], "dirty": fp["git"]["dirty"]},
            "settings": {"rounds": args.rounds, "max_regression": args.max_regression, "cases": args.case,
                         "steps": args.steps, "warmup": args.warmup, "repeats_per_child": 1,
                         "order": "rev first in even rounds, tree first in odd rounds"},
            "env": fp, "config": resolved_dict(cfg)}


def main(args: argparse.Namespace, console: Console) -> int:
    cfg = config_mod.load(args.config)
    for n in args.case or []:
        if n not in cfg.cases:
            raise UsageError(f"--case {n}: unknown case (known: {', '.join(cfg.cases)})")
    device = resolve_device(args.device)
    repo = repo_root()
    sha = resolve_rev(repo, args.rev)
    check_writable(Path(args.out))
    fp = fingerprint(repo)
    tree = Side("tree", REPO, fp["git"]["commit"])
    run_dir = make_run_dir(Path(args.out), device)
    folder = RunFolder(run_dir)
    folder.write_env({**plan_env(run_dir, args, cfg, str(device), device_name(fp, device), sha, fp),
                      "state": "running"})
    console.print(f"run folder: {run_dir}\nworking tree {tree.commit[:10]}{' (dirty)' if fp['git']['dirty'] else ''}"
                  f" against {args.rev} = {sha[:10]}: {args.rounds} rounds of one child per side, interleaved")
    if args.rounds < 4:
        console.print("[yellow]note: with fewer than 4 rounds no difference can be significant[/yellow]")
    try:
        with rev_worktree(repo, sha) as rev_path, tempfile.TemporaryDirectory(prefix="sc_fast-ab-out-") as scratch:
            sides = {"rev": Side("rev", rev_path / REPO.relative_to(repo), sha), "tree": tree}
            command = commands(args, cfg.path.resolve(), device.type, Path(scratch))
            samples = measure_rounds(run_dir, sides, command, args.rounds, args.max_regression, console)
    except KeyboardInterrupt:
        folder.set_state("interrupted")
        console.print(f"[yellow]interrupted: finished rounds are in {run_dir}[/yellow]")
        return EXIT_INTERRUPTED
    except ChildFailed as e:
        folder.set_state("failed")
        console.print(f"[red]{e}[/red]")
        return EXIT_FAILED
    return finish(folder, summarise(samples, args.max_regression), args.max_regression, console)


def finish(folder: RunFolder, rows: list[AbRow], limit: float, console: Console) -> int:
    failed = [r for r in rows if r.verdict in (REGRESSION, "error")]
    folder.set_state("failed" if any(r.verdict == "error" for r in rows) else "complete")
    report.render_ab(folder.path, console)
    for line in verdict_lines(rows, limit):
        console.print(line)
    return EXIT_FAILED if failed else EXIT_OK
