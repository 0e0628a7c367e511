"""Run ids: unique even for runs started at the same moment into different --out folders, sortable
by start time, read back as times (the new form and the older one of the committed runs); and the
committed results tree holds no two runs with one id."""

import csv
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.results import new_run_dir, run_started
from bench.results import run_id as run_id_of

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 24, 5, 43, 55, 482913, tzinfo=timezone.utc)


def test_runs_started_at_the_same_moment_into_other_folders_get_other_ids(tmp_path: Path) -> None:
    dirs = [new_run_dir(tmp_path / f"out{i}", "cpu", now=T0) for i in range(20)]  # no mkdir can see the others
    ids = [d.name for d in dirs]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"20261124T054355\.482Z-[0-9a-f]{4}-cpu", i) for i in ids)
    assert {run_started(i) for i in ids} == {T0.replace(microsecond=482000)}
    # and into one folder: each its own folder
    same = [new_run_dir(tmp_path / "one", "cpu", now=T0) for _ in range(20)]
    assert len({d.name for d in same}) == 20 and all(d.is_dir() for d in same)


def test_run_ids_sort_by_start_time(tmp_path: Path) -> None:
    times = [T0 + timedelta(milliseconds=ms) for ms in (0, 1, 999, 1000, 60_000, 86_400_000)]
    ids = [new_run_dir(tmp_path / str(i), "nvidia-h100-80gb-hbm3", now=t).name for i, t in enumerate(times)]
    assert sorted(ids) == ids
    assert [run_started(i) for i in ids] == [t.replace(microsecond=t.microsecond // 1000 * 1000) for t in times]


def test_older_run_ids_read_back_as_their_second() -> None:
    second = datetime(2026, 11, 24, 5, 43, 55, tzinfo=timezone.utc)
    assert run_started("20261124T054355Z-cpu") == second
    assert run_started("20261124T054355Z-cpu-1") == second  # the suffix an older collision got
    assert run_started("damaged") is None and run_started("cpu-profile-peak0.4") is None


def committed_runs() -> list[Path]:
    return sorted(p.parent for p in (REPO / "results").rglob("env.json"))


def test_committed_runs_have_unique_ids_recorded_consistently() -> None:
    runs = committed_runs()
    assert runs
    ids: dict[str, list[Path]] = {}
    for run in runs:
        run_id = json.loads((run / "env.json").read_text()).get("run_id")
        assert run_id == run_id_of(run), f"{run}: env.json's run_id is {run_id!r}"
        ids.setdefault(run_id, []).append(run)
        assert run_started(run_id) is not None, run
        for name in ("trials.csv", "curves.csv", "throughput.csv"):
            if (run / name).exists():
                with open(run / name, newline="") as f:
                    assert {r["run_id"] for r in csv.DictReader(f)} <= {run_id}, run / name
    assert {i: ps for i, ps in ids.items() if len(ps) > 1} == {}
