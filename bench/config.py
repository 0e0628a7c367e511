"""bench.toml -> frozen dataclasses.

Every key is declared below with its type and check; an unknown key, a wrong type or a bad value
raises ``ConfigError`` with one line naming the file and the dotted key. Trials are resolved
(profile overrides applied, schedule built) at load time, so a bad trial fails before any work.
"""

import hashlib
import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any

from sc_fast.pipeline import AUGMENTS
from sc_fast.schedules import KINDS, OneCycle, Schedule, ScheduleError, canonical_kind
from sc_fast.train import COMPILE_MODES, PRECISIONS

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "bench.toml"
PIPELINES = ("auto", "dali", "torch")


class ConfigError(Exception):
    """A config problem; str() is one line naming the file and the key."""


# ---- value checks: each returns an error text or None ---------------------------------------

def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _fraction(v: Any) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def _unit(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def _any(v: Any) -> str | None:
    return None


# type name -> python check; ints are accepted where floats are, bools never count as numbers
_TYPES: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "list[int]": lambda v: isinstance(v, list) and all(_TYPES["int"](x) for x in v),
    "bool or \"auto\"": lambda v: isinstance(v, bool) or v == "auto",
}

Field = tuple[str, Callable[[Any], str | None]]

# Training settings a trial takes (each has a default in [defaults], or below) and a profile may override.
TRAIN_FIELDS: dict[str, Field] = {
    "steps": ("int", _positive),
    "batch_size": ("int", _positive),
    "eval_batch_size": ("int", _positive),
    "eval_every": ("int", _positive),
    # Near a crossing (multistep's first drop, the end of a cycle): at step fine_eval_from and every
    # fine_eval_every steps after it, instead of every eval_every; 0 = never. Steps-to-target gets that precision
    # without paying for dense evaluations over the whole run.
    "fine_eval_from": ("int", _non_negative),
    "fine_eval_every": ("int", _positive),
    "weight_decay": ("float", _non_negative),
    "nesterov": ("bool", _any),
    "label_smoothing": ("float", _unit),
    "bn_momentum": ("float", _fraction),
    "augment": ("str", _one_of(*AUGMENTS)),
    "train_images": ("int", _non_negative),
    "eval_images": ("int", _non_negative),
    "sync_bn": ("bool", _any),  # data parallel: SyncBatchNorm instead of per-replica BatchNorm
    "checkpoint_every": ("int", _non_negative),  # evaluations between checkpoints; 0 = none
    "checkpoint_interval_s": ("float", _non_negative),  # ... and at most one per this many wall seconds
}
# Schedule parameters by kind (names as in the config; mapped onto the schedule dataclasses).
SCHEDULE_FIELDS: dict[str, dict[str, Field]] = {
    "constant": {"lr": ("float", _positive), "momentum": ("float", _unit)},
    "clr": {"min_lr": ("float", _positive), "max_lr": ("float", _positive),
            "stepsize": ("int", _positive), "momentum": ("float", _unit)},
    "multistep": {"lr": ("float", _positive), "milestones": ("list[int]", _any),
                  "gamma": ("float", _positive), "momentum": ("float", _unit),
                  "warmup": ("int", _non_negative)},  # steps of linear warm-up to lr; 0 = none
    "onecycle": {"min_lr": ("float", _positive), "max_lr": ("float", _positive),
                 "cycle_frac": ("float", _fraction), "final_lr": ("float", _positive),
                 "max_momentum": ("float", _unit), "min_momentum": ("float", _unit)},
}
_RENAME = {"lr": "base_lr", "momentum": "base_momentum"}
# "auto": resolved from what the device can do when a command starts (bench.build.resolve_settings)
DEVICE_FIELDS: dict[str, Field] = {
    "precision": ("str", _one_of("auto", *PRECISIONS)),
    "channels_last": ("bool or \"auto\"", _any),
    "compile": ("str", _one_of("auto", *COMPILE_MODES)),
    "warmup_steps": ("int", _non_negative),
}
DATA_FIELDS: dict[str, Field] = {
    "root": ("str", _any), "download": ("bool", _any), "pipeline": ("str", _one_of(*PIPELINES)),
}
PROFILE_FIELDS: dict[str, Field] = {
    "description": ("str", _any), "trials": ("list[str]", _any), "seeds": ("int", _positive),
    "target": ("float", _fraction), "stop_at_target": ("bool", _any),
    "device": ("str", _one_of("cuda", "cpu")),
}
LR_FIND_FIELDS: dict[str, Field] = {
    "trial": ("str", _any), "start_lr": ("float", _positive), "end_lr": ("float", _positive),
    "linear_end_lr": ("float", _positive), "steps": ("int", _positive),
    "linear_steps": ("int", _positive), "eval_every": ("int", _positive),
    "eval_images": ("int", _non_negative), "smoothing": ("float", _unit),
    "diverge_factor": ("float", _positive),
    "cpu_steps": ("int", _positive),  # without a GPU every ramp is bounded to this (the full test: ~1 h)
}
THROUGHPUT_FIELDS: dict[str, Field] = {
    "steps": ("int", _positive), "warmup": ("int", _non_negative), "repeats": ("int", _positive),
    "default_cases": ("list[str]", _any), "baseline_case": ("str", _any),
    # the CPU is ~50x slower than a GPU: the same statistics from fewer steps
    "cpu_steps": ("int", _positive), "cpu_warmup": ("int", _non_negative),
    "cpu_repeats": ("int", _positive),
}
SUITE_FIELDS: dict[str, Field] = {
    "cuda_profile": ("str", _any), "cpu_profile": ("str", _any),
    "quick_seeds": ("int", _positive), "quick_repeats": ("int", _positive),
    "quick_lr_find_steps": ("int", _positive),
    "cuda_trace": ("int", _non_negative), "cpu_trace": ("int", _non_negative),
}
CASE_FIELDS: dict[str, Field] = {
    "description": ("str", _any), "batch_size": ("int", _positive),
    "precision": ("str", _one_of(*PRECISIONS)), "channels_last": ("bool", _any),
    "compile": ("str", _one_of(*COMPILE_MODES)),
    "pipeline": ("str", _one_of("synthetic", "torch", "dali", "torchvision")),
    "model": ("bool", _any), "device": ("str", _one_of("cuda", "cpu")),
    "steps": ("int", _positive),  # timed steps per repeat for this case (cheap loader steps: more)
    "matrix": ("bool", _any),  # false: measured only when --case names it (long compiles)
}


@dataclass(frozen=True)
class TrialSpec:
    name: str
    schedule: str
    schedule_args: tuple[tuple[str, Any], ...]
    steps: int
    batch_size: int
    eval_batch_size: int
    eval_every: int
    weight_decay: float
    nesterov: bool
    label_smoothing: float
    bn_momentum: float
    augment: str
    train_images: int
    eval_images: int
    # Settings newer than most config files and run folders: a config or a stored plan may leave
    # them out and gets these defaults (TRAIN_DEFAULTS below is read off them).
    sync_bn: bool = False
    checkpoint_every: int = 1
    fine_eval_from: int = 0
    fine_eval_every: int = 25
    checkpoint_interval_s: float = 60.0

    @staticmethod
    def from_json(d: dict[str, Any]) -> "TrialSpec":
        """The inverse of ``dataclasses.asdict``, as stored in a run's env.json."""
        return TrialSpec(**{**d, "schedule_args": tuple((k, v) for k, v in d["schedule_args"])})

    def build_schedule(self) -> Schedule:
        args = {_RENAME.get(k, k): tuple(v) if isinstance(v, list) else v for k, v in self.schedule_args}
        cls = KINDS[self.schedule]
        if cls is OneCycle:
            args["total_steps"] = self.steps
        return cls(**args)


TRAIN_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(TrialSpec) if f.default is not MISSING}


@dataclass(frozen=True)
class DeviceSettings:
    """Execution settings; as read from bench.toml any of the first three may be "auto", as a run
    uses them (after bench.build.resolve_settings) none is."""

    precision: str
    channels_last: bool | str
    compile: str
    warmup_steps: int


@dataclass(frozen=True)
class DataSettings:
    root: str
    download: bool
    pipeline: str


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    trials: tuple[str, ...]
    seeds: int
    target: float
    stop_at_target: bool
    device: str | None  # the device the profile is meant for; None = any
    override: tuple[tuple[str, Any], ...]  # training settings applied to every trial


@dataclass(frozen=True)
class Config:
    path: Path
    sha256: str
    raw: Mapping[str, Any]
    data: DataSettings
    devices: Mapping[str, DeviceSettings]
    trials: Mapping[str, TrialSpec]
    profiles: Mapping[str, Profile]
    auto: Mapping[str, str]  # device type -> profile name
    lr_find: Mapping[str, Any]
    suite: Mapping[str, Any]
    throughput: Mapping[str, Any]
    cases: Mapping[str, Mapping[str, Any]]

    def resolve(self, profile: Profile, names: list[str] | None = None) -> list[TrialSpec]:
        """The profile's trials (or ``names``), with the profile's overrides applied."""
        chosen = names or list(profile.trials)
        for n in chosen:
            if n not in self.trials:
                raise ConfigError(f"{self.path}: unknown trial {n!r} (known: {', '.join(self.trials)})")
        return [_override(self.trials[n], profile.override, self.path, f"profiles.{profile.name}.override")
                for n in chosen]

    def profile(self, name: str, device_type: str) -> Profile:
        if name == "auto":
            name = self.auto.get(device_type) or self.auto["cpu"]
        if name not in self.profiles:
            raise ConfigError(f"{self.path}: unknown profile {name!r} (known: auto, {', '.join(self.profiles)})")
        return self.profiles[name]


# ---- parsing ------------------------------------------------------------------------------------

def _table(raw: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where} must be a table")
    return raw


def _read(table: Mapping[str, Any], spec: Mapping[str, Field], where: str, path: Path,
          extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Checks every key of ``table`` against ``spec``; returns the checked values."""
    out = {}
    for key, value in table.items():
        dotted = f"{where}.{key}" if where else key
        if key in extra:
            continue
        if key not in spec:
            raise ConfigError(f"{path}: unknown key {dotted!r}")
        type_name, check = spec[key]
        if not _TYPES[type_name](value):
            raise ConfigError(f"{path}: {dotted} must be of type {type_name}, got {value!r}")
        problem = check(value)
        if problem:
            raise ConfigError(f"{path}: {dotted} {problem}, got {value!r}")
        out[key] = value
    return out


def _require(values: Mapping[str, Any], keys: Any, where: str, path: Path) -> None:
    for k in keys:
        if k not in values:
            raise ConfigError(f"{path}: missing key {where}.{k}")


def _required_schedule_keys(kind: str) -> list[str]:
    """Config names of the schedule's parameters that have no default (total_steps comes from steps)."""
    inverse = {v: k for k, v in _RENAME.items()}
    return [inverse.get(f.name, f.name) for f in fields(KINDS[kind])
            if f.init and f.default is MISSING and f.default_factory is MISSING and f.name != "total_steps"]


def _trial(name: str, raw: Any, defaults: Mapping[str, Any], path: Path) -> TrialSpec:
    where = f"trials.{name}"
    table = _table(raw, where, path)
    _require(table, ("schedule",), where, path)
    kind = canonical_kind(str(table.get("schedule")))
    if kind not in SCHEDULE_FIELDS:
        raise ConfigError(f"{path}: {where}.schedule must be one of {', '.join(SCHEDULE_FIELDS)}, "
                          f"got {table.get('schedule')!r}")
    sched = _read({k: v for k, v in table.items() if k in SCHEDULE_FIELDS[kind]},
                  SCHEDULE_FIELDS[kind], where, path)
    _require(sched, _required_schedule_keys(kind), where, path)
    train = _read({k: v for k, v in table.items() if k not in SCHEDULE_FIELDS[kind]},
                  TRAIN_FIELDS, where, path, extra=("schedule", "description"))
    merged = {**TRAIN_DEFAULTS, **defaults, **train}
    _require(merged, TRAIN_FIELDS, where, path)
    spec = TrialSpec(name=name, schedule=kind, schedule_args=tuple(sorted(sched.items())),
                     **{k: merged[k] for k in TRAIN_FIELDS})
    _check_schedule(spec, path, where)
    return spec


def _check_schedule(spec: TrialSpec, path: Path, where: str, check_range: bool = True) -> None:
    # A profile may shorten a trial (smoke: 20 steps) so that milestones never fire; the trial's
    # own definition must still place them inside its run.
    ms = dict(spec.schedule_args).get("milestones")
    if check_range and ms is not None and any(m >= spec.steps for m in ms):
        raise ConfigError(f"{path}: {where}.milestones must lie below steps ({spec.steps}), got {ms}")
    if spec.eval_every > spec.steps:
        raise ConfigError(f"{path}: {where}.eval_every ({spec.eval_every}) exceeds steps ({spec.steps})")
    try:
        spec.build_schedule()
    except (ScheduleError, TypeError) as e:
        raise ConfigError(f"{path}: {where}: trial {spec.name!r}: {e}") from None


def _override(spec: TrialSpec, override: tuple[tuple[str, Any], ...], path: Path, where: str) -> TrialSpec:
    if not override:
        return spec
    new = replace(spec, **dict(override))
    _check_schedule(new, path, f"{where} (trial {spec.name})", check_range=False)
    return new


def _profile(name: str, raw: Any, trials: Mapping[str, TrialSpec], path: Path) -> Profile:
    where = f"profiles.{name}"
    table = _table(raw, where, path)
    values = _read(table, PROFILE_FIELDS, where, path, extra=("override",))
    override = _read(_table(table.get("override", {}), f"{where}.override", path), TRAIN_FIELDS,
                     f"{where}.override", path)
    _require(values, ("trials", "target"), where, path)
    for t in values["trials"]:
        if t not in trials:
            raise ConfigError(f"{path}: {where}.trials names unknown trial {t!r}")
    prof = Profile(name=name, description=values.get("description", ""), trials=tuple(values["trials"]),
                   seeds=values.get("seeds", 1), target=values["target"],
                   stop_at_target=values.get("stop_at_target", True), device=values.get("device"),
                   override=tuple(sorted(override.items())))
    for t in prof.trials:
        _override(trials[t], prof.override, path, f"{where}.override (trial {t})")
    return prof


def parse(raw: Mapping[str, Any], path: Path, text: str) -> Config:
    top = {"defaults", "data", "devices", "trials", "profiles", "lr_find", "throughput", "suite"}
    for key in raw:
        if key not in top:
            raise ConfigError(f"{path}: unknown key {key!r}")
    defaults = _read(_table(raw.get("defaults", {}), "defaults", path), TRAIN_FIELDS, "defaults", path)
    data = _read(_table(raw.get("data", {}), "data", path), DATA_FIELDS, "data", path)
    devices = {}
    for dev, table in _table(raw.get("devices", {}), "devices", path).items():
        if dev not in ("cuda", "cpu"):
            raise ConfigError(f"{path}: unknown key 'devices.{dev}'")
        values = _read(_table(table, f"devices.{dev}", path), DEVICE_FIELDS, f"devices.{dev}", path)
        _require(values, ("precision", "channels_last", "compile"), f"devices.{dev}", path)
        devices[dev] = DeviceSettings(warmup_steps=values.get("warmup_steps", 3),
                                      **{k: values[k] for k in ("precision", "channels_last", "compile")})
    _require(devices, ("cuda", "cpu"), "devices", path)
    trials = {n: _trial(n, t, defaults, path) for n, t in _table(raw.get("trials", {}), "trials", path).items()}
    profiles_raw = dict(_table(raw.get("profiles", {}), "profiles", path))
    auto = _read(_table(profiles_raw.pop("auto", {}), "profiles.auto", path),
                 {"cuda": ("str", _any), "cpu": ("str", _any), "description": ("str", _any)},
                 "profiles.auto", path)
    profiles = {n: _profile(n, p, trials, path) for n, p in profiles_raw.items()}
    for dev in ("cuda", "cpu"):
        if auto.get(dev) not in profiles:
            raise ConfigError(f"{path}: profiles.auto.{dev} must name a profile, got {auto.get(dev)!r}")
    lr_find = _read(_table(raw.get("lr_find", {}), "lr_find", path), LR_FIND_FIELDS, "lr_find", path)
    suite = _read(_table(raw.get("suite", {}), "suite", path), SUITE_FIELDS, "suite", path)
    for dev in ("cuda", "cpu"):
        if suite.get(f"{dev}_profile", auto.get(dev)) not in profiles:
            raise ConfigError(f"{path}: suite.{dev}_profile names unknown profile {suite.get(f'{dev}_profile')!r}")
    if lr_find.get("trial", next(iter(trials), None)) not in trials:
        raise ConfigError(f"{path}: lr_find.trial names unknown trial {lr_find.get('trial')!r}")
    tp_raw = dict(_table(raw.get("throughput", {}), "throughput", path))
    cases_raw = _table(tp_raw.pop("cases", {}), "throughput.cases", path)
    throughput = _read(tp_raw, THROUGHPUT_FIELDS, "throughput", path)
    cases = {n: _read(_table(c, f"throughput.cases.{n}", path), CASE_FIELDS, f"throughput.cases.{n}", path)
             for n, c in cases_raw.items()}
    for n in throughput.get("default_cases", []):
        if n not in cases:
            raise ConfigError(f"{path}: throughput.default_cases names unknown case {n!r}")
    return Config(path=path, sha256=hashlib.sha256(text.encode()).hexdigest(), raw=raw,
                  data=DataSettings(root=data.get("root", ""), download=data.get("download", True),
                                    pipeline=data.get("pipeline", "auto")),
                  devices=devices, trials=trials, profiles=profiles, auto=auto, lr_find=lr_find,
                  suite=suite, throughput=throughput, cases=cases)


def load(path: str | Path | None = None) -> Config:
    p = Path(path) if path else DEFAULT_CONFIG
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config ({e.strerror or e})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: TOML syntax error: {e}") from None
    return parse(raw, p, text)


def resolved_dict(cfg: Config) -> dict[str, Any]:
    """The config as written plus the resolved trials: what env.json records."""
    return {"path": str(cfg.path), "sha256": cfg.sha256, "toml": json.loads(json.dumps(cfg.raw, default=str)),
            "trials": {n: {f.name: getattr(t, f.name) for f in fields(t)} for n, t in cfg.trials.items()}}


# ---- `run --set KEY=VALUE`: one trial setting overridden for one run ------------------------------

def with_sets(spec: TrialSpec, sets: list[tuple[str, Any]]) -> TrialSpec:
    """``spec`` with each (key, value) applied: a training setting or a parameter of the trial's
    schedule kind; an unknown key or a bad value is a ConfigError naming ``--set KEY``."""
    if not sets:
        return spec
    schedule_fields = SCHEDULE_FIELDS[spec.schedule]
    train, sched = dict(), dict(spec.schedule_args)
    for key, value in sets:
        spec_of = TRAIN_FIELDS.get(key) or schedule_fields.get(key)
        if spec_of is None:
            known = ", ".join([*TRAIN_FIELDS, *schedule_fields])
            raise ConfigError(f"--set {key}: not a setting of trial {spec.name!r} ({spec.schedule}); known: {known}")
        type_name, check = spec_of
        problem = None if _TYPES[type_name](value) else f"must be of type {type_name}"
        problem = problem or check(value)
        if problem:
            raise ConfigError(f"--set {key}={value!r}: {problem}")
        (train if key in TRAIN_FIELDS else sched)[key] = value
    new = replace(spec, schedule_args=tuple(sorted(sched.items())), **train)
    _check_schedule(new, Path("--set"), f"trial {spec.name}", check_range=True)
    return new
