"""``python -m bench suite``: everything a device owner runs to benchmark a device, into one folder
with one summary. This is the command that turns an hour on someone's GPU into a shareable result.

Three parts, in order, each a normal run folder of its kind inside the suite folder, made by the
command itself (its arguments parsed exactly as on the command line):

1. ``throughput``: the whole case matrix (every compile mode and pipeline that fits the device),
   each case profiled after its timing (``--trace``) for ``[suite].<device>_trace`` steps;
2. ``run``: the time-to-target profile, ``[suite].cuda_profile`` on a GPU (``full``) or
   ``[suite].cpu_profile`` without one (``cpu``);
3. ``lr-find``: the LR range test.

``--quick`` runs a short version of each: ``[suite].quick_repeats`` throughput repeats, one seed
per trial (``quick_seeds``), every ramp of the range test bounded to ``quick_lr_find_steps``.

The suite's env.json (kind "suite") records each part's folder and state. SIGTERM or Ctrl-C ends
the part in flight the way that command ends (exit 130, files kept); ``--resume SUITE_DIR`` skips
the parts that completed, resumes an interrupted ``run`` or ``throughput`` part with that command's
``--resume`` (finished trials and cases are kept: on a machine that allows 10-minute commands, a
compile-heavy case matrix finishes over several) and redoes an interrupted range test (minutes at
most). ``bench compare`` takes suite folders and lines up their parts.
"""

import argparse
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console

from bench import config as config_mod
from bench import report
from bench.commands import lr_find, run, throughput
from bench.common import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Parser, check_writable, config_flags,
                          device_flags, make_run_dir, resolve_device)
from bench.results import RunError, RunFolder
from sc_fast.env import fingerprint

HELP = "throughput matrix + time-to-target profile + LR range test, one folder, one summary"
PARENTS = (config_flags, device_flags)
PARTS: dict[str, ModuleType] = {"throughput": throughput, "run": run, "lr-find": lr_find}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a short version of each part")
    p.add_argument("--resume", metavar="SUITE_DIR", help="finish an interrupted suite")


def part_argv(name: str, cfg: config_mod.Config, device_type: str, quick: bool) -> list[str]:
    """The part's command line, less --config/--device/--data/--out (added by the caller)."""
    s = cfg.suite
    if name == "throughput":
        trace = getattr(s, f"{device_type}_trace")
        repeats = ["--repeats", str(s.quick_repeats)] if quick else []
        return repeats + (["--trace", str(trace)] if trace else [])
    if name == "run":
        profile = getattr(s, f"{device_type}_profile") or getattr(cfg.auto, device_type)
        return ["--profile", profile] + (["--seeds", str(s.quick_seeds)] if quick else [])
    return ["--steps", str(s.quick_lr_find_steps)] if quick else []


def _parse(module: ModuleType, argv: list[str]) -> argparse.Namespace:
    p = Parser(prog=f"suite part {module.__name__}", parents=[make() for make in module.PARENTS])
    module.add_arguments(p)
    return p.parse_args(argv)


def _new_folder(parent: Path, before: set[Path]) -> str | None:
    made = sorted(p for p in parent.iterdir() if p.is_dir() and p not in before)
    return made[-1].name if made else None


def run_part(name: str, folder: RunFolder, env: dict[str, Any], args: argparse.Namespace,
             console: Console) -> int:
    """Runs one part (resuming it where it can) and records its folder and state in env.json."""
    part = env["parts"][name]
    common = ["--config", env["config_path"], "--device", env["device"], "--out", str(folder.path)]
    common += ["--data", args.data] if args.data else []
    resumable = name in ("run", "throughput") and part.get("folder")
    if resumable:  # a cut-off run or case matrix goes on where it stopped
        argv = ["--resume", str(folder.path / part["folder"])] + (["--data", args.data] if args.data else [])
    else:
        argv = common + part["argv"]
    console.rule(f"suite part: {name} ({' '.join(argv)})")
    before = set(folder.path.iterdir())
    rc = PARTS[name].main(_parse(PARTS[name], argv), console)
    part["folder"] = part["folder"] if resumable else _new_folder(folder.path, before)
    part["exit"] = rc
    part["state"] = {EXIT_OK: "complete", EXIT_INTERRUPTED: "interrupted"}.get(rc, "failed")
    folder.write_env(env)
    return rc


def _start(args: argparse.Namespace, console: Console) -> tuple[RunFolder, dict[str, Any]]:
    cfg = config_mod.load(args.config)
    device = resolve_device(args.device)
    out = Path(args.out)
    check_writable(out)
    folder = RunFolder(make_run_dir(out, device))
    parts = {name: {"argv": part_argv(name, cfg, device.type, args.quick), "state": "pending"} for name in PARTS}
    env = {"run_id": folder.run_id, "kind": "suite", "state": "running", "quick": args.quick,
           "device": device.type, "config_path": str(cfg.path), "env": fingerprint(), "parts": parts}
    folder.write_env(env)
    return folder, env


def _reopen(args: argparse.Namespace) -> tuple[RunFolder, dict[str, Any]]:
    folder = RunFolder.open(Path(args.resume))
    env = folder.env()
    if env.get("kind") != "suite" or not isinstance(env.get("parts"), dict):
        raise RunError(f"{folder.path}: not a `bench suite` folder (env.json kind {env.get('kind')!r})")
    return folder, env


def main(args: argparse.Namespace, console: Console) -> int:
    folder, env = _reopen(args) if args.resume else _start(args, console)
    console.print(f"suite folder: {folder.path}")
    for name, part in env["parts"].items():
        if part["state"] in ("complete", "failed"):  # failed: a case or trial errored, recorded as such
            continue
        if run_part(name, folder, env, args, console) == EXIT_INTERRUPTED:
            folder.set_state("interrupted")
            console.print(f"[yellow]suite interrupted in part {name}; continue with: "
                          f"python -m bench suite --resume {folder.path}[/yellow]")
            return EXIT_INTERRUPTED
    failed = any(p["state"] == "failed" for p in env["parts"].values())
    folder.set_state("failed" if failed else "complete")
    report.render_suite(folder.path, console)
    return EXIT_FAILED if failed else EXIT_OK
