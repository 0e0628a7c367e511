"""Helpers shared by the config and robustness tests: a small TOML writer (tests mutate a parsed
bench.toml and write it back; the standard library only reads TOML) and the one-line-error check."""

import json
import math
from typing import Any


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
