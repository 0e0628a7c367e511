"""Helpers shared by the tests: the repo's bench.toml as a dict with fixed CPU settings, the tiny
throughput baseline case, a small TOML writer (tests mutate a parsed bench.toml and write it back;
the standard library only reads TOML) and the one-line-error check."""

import json
import math
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The baseline case of the tests' tiny throughput configs: eager fp32 NCHW on one fixed batch.
BASE_CASE = """
[throughput.cases.base]
batch_size = {batch}
precision = "fp32"
channels_last = false
compile = "off"
pipeline = "synthetic"
"""


def bench_dict(warmup_steps: int = 0, **data: Any) -> dict[str, Any]:
    """The repo's bench.toml, parsed, with downloads off (and ``data`` keys set), fixed CPU settings
    (fp32 channels_last eager, so a test does not depend on whether this CPU has bf16) and a
    checkpoint at every evaluation."""
    cfg: dict[str, Any] = tomllib.loads((REPO / "bench.toml").read_text())
    cfg.setdefault("data", {}).update(download=False, **data)
    cfg.setdefault("devices", {})["cpu"] = {"precision": "fp32", "channels_last": True, "compile": "off",
                                            "warmup_steps": warmup_steps}
    cfg.setdefault("defaults", {})["checkpoint_interval_s"] = 0  # tiny trials: a checkpoint at every evaluation
    return cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def dump_toml(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """Enough of a TOML writer for bench.toml: scalars and lists first, then sub-tables."""
    lines = [f"[{'.'.join(json.dumps(k) for k in prefix)}]"] if prefix else []
    lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    text = "\n".join(lines) + "\n"
    for k, v in table.items():
        if isinstance(v, dict):
            text += "\n" + dump_toml(v, (*prefix, k))
    return text


def assert_one_line(err: str, *needles: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]
