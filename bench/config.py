"""bench.toml -> frozen dataclasses, one per section; every setting's one default is in its dataclass.

A section's fields carry their TOML type and value check as metadata (``setting``). Reading a
table checks every key against them: an unknown key, a wrong type or a bad value raises
``ConfigError`` with one line naming the file and the dotted key. Keys a table leaves out take the
dataclass's default, so bench.toml sets only what it wants different. Trials are resolved (the
``[defaults]`` table and profile overrides applied, schedule built) at load time, so a bad trial
fails before any work.
"""

import hashlib
import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sc_fast.pipeline import AUGMENTS
from sc_fast.schedules import KINDS, OneCycle, Schedule, ScheduleError, canonical_kind
from sc_fast.train import COMPILE_MODES, PRECISIONS, TrainConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "bench.toml"
PIPELINES = ("auto", "dali", "torch")
DEVICES = ("cuda", "cpu")


class ConfigError(Exception):
    """A config problem; str() is one line naming the file and the key."""


# ---- value checks: each returns an error text or None ---------------------------------------

Check = Callable[[Any], str | None]


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _fraction(v: Any) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def _unit(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def _one_of(*choices: str) -> Check:
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


def setting(default: Any = MISSING, type_name: str = "str", check: Check = _any) -> Any:
    """A dataclass field readable from bench.toml: its default, TOML type and value check."""
    meta = {"type": type_name, "check": check}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


def settings_of(cls: type) -> dict[str, Field]:
    """The fields of ``cls`` that a config table may set."""
    return {f.name: f for f in fields(cls) if "type" in f.metadata}


def check_value(key: str, value: Any, f: Field) -> str | None:
    """Why ``value`` is not a valid ``f``, or None."""
    if not _TYPES[f.metadata["type"]](value):
        return f"must be of type {f.metadata['type']}"
    return f.metadata["check"](value)


def _read(table: Mapping[str, Any], cls: type, where: str, path: Path, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of ``table`` checked against ``cls``'s settings (``skip``: keys read elsewhere)."""
    spec, out = settings_of(cls), {}
    for key, value in table.items():
        dotted = f"{where}.{key}" if where else key
        if key in skip:
            continue
        if key not in spec:
            raise ConfigError(f"{path}: unknown key {dotted!r}")
        problem = check_value(key, value, spec[key])
        if problem:
            raise ConfigError(f"{path}: {dotted} {problem}, got {value!r}")
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _table(raw: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where} must be a table")
    return raw


def section(cls: type, raw: Any, where: str, path: Path, **given: Any) -> Any:
    """``cls`` from a config table: its keys checked, the rest from the dataclass's defaults."""
    values = _read(_table(raw, where, path), cls, where, path)
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
               and f.name not in values and f.name not in given]
    if missing:
        raise ConfigError(f"{path}: missing key {where}.{missing[0]}")
    return cls(**given, **values)


# ---- the sections --------------------------------------------------------------------------------

_LOOP = TrainConfig(max_steps=1, eval_every=1)  # the training loop's own defaults, shared with TrialSpec


@dataclass(frozen=True)
class TrialSpec:
    """A trial: its schedule and every training setting (``[defaults]`` changes them for all trials,
    a profile's ``override`` for its trials, ``run --set`` for one run). Steps are optimizer steps:
    50,000 training images are 97 steps an epoch at batch 512, 195 at 256, 50 at 1,000 (the last
    partial batch is dropped)."""

    name: str
    schedule: str
    schedule_args: tuple[tuple[str, Any], ...]
    steps: int = setting(type_name="int", check=_positive)
    batch_size: int = setting(512, "int", _positive)
    eval_batch_size: int = setting(1000, "int", _positive)
    eval_every: int = setting(200, "int", _positive)  # steps between test evaluations (off the training clock)
    # steps-to-target is exact to fine_eval_every steps however sparse eval_every is (sc_fast/train.py); and
    # from fine_eval_from on (0 = never) every fine_eval_every steps is evaluated outright
    fine_eval_from: int = setting(_LOOP.fine_eval_from, "int", _non_negative)
    fine_eval_every: int = setting(_LOOP.fine_eval_every, "int", _positive)
    weight_decay: float = setting(_LOOP.weight_decay, "float", _non_negative)
    nesterov: bool = setting(_LOOP.nesterov, "bool")
    label_smoothing: float = setting(_LOOP.label_smoothing, "float", _unit)
    bn_momentum: float = setting(0.1, "float", _fraction)  # PyTorch convention: weight of the new batch statistic
    augment: str = setting("crop_flip", "str", _one_of(*AUGMENTS))  # crop_flip | flip (the paper's) | none
    train_images: int = setting(0, "int", _non_negative)  # 0 = all 50,000
    eval_images: int = setting(0, "int", _non_negative)  # 0 = all 10,000 test images
    sync_bn: bool = setting(False, "bool")  # under torchrun: SyncBatchNorm instead of BatchNorm per replica
    # `bench run` saves a trial's state every N evaluations (0 = never) for --resume, at most once
    # per checkpoint_interval_s of wall clock (on a GPU an evaluation comes every few seconds)
    checkpoint_every: int = setting(_LOOP.checkpoint_every, "int", _non_negative)
    checkpoint_interval_s: float = setting(_LOOP.checkpoint_interval_s, "float", _non_negative)

    @staticmethod
    def from_json(d: dict[str, Any]) -> "TrialSpec":
        """The inverse of ``dataclasses.asdict``, as stored in a run's env.json (older ones lack the
        newer settings: they read as the defaults)."""
        known = {f.name for f in fields(TrialSpec)} - {"schedule_args"}
        return TrialSpec(**{k: v for k, v in d.items() if k in known},
                         schedule_args=tuple((k, v) for k, v in d["schedule_args"]))

    def build_schedule(self) -> Schedule:
        args = {_RENAME.get(k, k): tuple(v) if isinstance(v, list) else v for k, v in self.schedule_args}
        cls = KINDS[self.schedule]
        if cls is OneCycle:
            args["total_steps"] = self.steps
        return cls(**args)


TRAIN_FIELDS: dict[str, Field] = settings_of(TrialSpec)  # the training settings a trial, [defaults] or --set set

# Schedule parameters by kind (names as in the config; mapped onto the schedule dataclasses).
SCHEDULE_FIELDS: dict[str, dict[str, tuple[str, Check]]] = {
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


@dataclass(frozen=True)
class DeviceSettings:
    """``[devices.<type>]``: execution settings. "auto" is resolved when a command starts from what the
    device can do (bench.build.resolve_settings), printed, and recorded in env.json and every row:
    precision bf16 where the GPU supports it (else fp16 with a grad scaler), on a CPU bf16 only with
    native bf16 (AVX512-BF16 or AMX; AVX2-only CPUs emulate it ~10x slower than fp32), else fp32;
    compile "default" on CUDA where torch.compile can build, eager on a CPU. As a run uses them
    (after resolve_settings) none is "auto"."""

    precision: str = setting("auto", "str", _one_of("auto", *PRECISIONS))
    channels_last: bool | str = setting("auto", "bool or \"auto\"")
    compile: str = setting("auto", "str", _one_of("auto", *COMPILE_MODES))
    warmup_steps: int = setting(2, "int", _non_negative)  # off the clock: compiles the step, then state is reset


# A GPU's first steps also autotune cuDNN and compile: more warm-up there.
DEVICE_DEFAULTS = {"cuda": DeviceSettings(warmup_steps=5), "cpu": DeviceSettings()}


@dataclass(frozen=True)
class DataSettings:
    root: str = setting("")  # empty: $SC_FAST_DATA, then the user cache (~/.cache/sc_fast)
    download: bool = setting(True, "bool")  # fetch the official archive (md5-checked) when not found
    pipeline: str = setting("auto", "str", _one_of(*PIPELINES))  # auto: DALI on CUDA when it imports, else torch


@dataclass(frozen=True)
class Profile:
    name: str
    trials: tuple[str, ...] = setting(type_name="list[str]")
    target: float = setting(type_name="float", check=_fraction)
    description: str = setting("")
    seeds: int = setting(1, "int", _positive)
    stop_at_target: bool = setting(True, "bool")
    device: str | None = setting(None, "str", _one_of(*DEVICES))  # the device it is sized for; None = any
    override: tuple[tuple[str, Any], ...] = ()  # training settings applied to every trial


@dataclass(frozen=True)
class AutoProfiles:
    """``[profiles.auto]``: what `python -m bench run` does with no --profile, per device type."""

    cuda: str = setting("full")
    cpu: str = setting("cpu")
    description: str = setting("")


@dataclass(frozen=True)
class LrFindSettings:
    """``[lr_find]``: fastai's exponential ramp and the paper's linear one (bench/range_test.py)."""

    trial: str = setting("1cycle")  # batch size, weight decay and augmentation come from this trial
    start_lr: float = setting(1e-4, "float", _positive)  # the exponential ramp ...
    end_lr: float = setting(10.0, "float", _positive)
    steps: int = setting(100, "int", _positive)
    smoothing: float = setting(0.98, "float", _unit)  # EMA of the training loss
    diverge_factor: float = setting(4.0, "float", _positive)  # stop once the smoothed loss exceeds 4x its minimum
    linear_end_lr: float = setting(3.0, "float", _positive)  # ... and the linear ramp 0 -> 3, with test evaluations
    linear_steps: int = setting(1000, "int", _positive)
    eval_every: int = setting(50, "int", _positive)
    eval_images: int = setting(2000, "int", _non_negative)
    cpu_steps: int = setting(50, "int", _positive)  # without a GPU (and --steps) every ramp runs this many: minutes


@dataclass(frozen=True)
class ThroughputSettings:
    """``[throughput]``: how each case is timed. A ResNet-56 step at batch 512 takes 1.3-5 s on 2 CPU
    cores: the CPU gets fewer steps; 4 steps a repeat left identical settings 5-26% apart on the
    shared machine, 8 brought it to 7%."""

    steps: int = setting(20, "int", _positive)  # timed steps per repeat (GPU)
    warmup: int = setting(5, "int", _non_negative)  # untimed steps first: compilation, autotuning, capture
    repeats: int = setting(3, "int", _positive)  # img/s is the median over repeats, interleaved across cases
    cpu_steps: int = setting(8, "int", _positive)
    cpu_warmup: int = setting(1, "int", _non_negative)
    cpu_repeats: int = setting(3, "int", _positive)
    baseline_case: str = setting("baseline")  # ratio_to_baseline divides by it
    default_cases: tuple[str, ...] = setting((), "list[str]")  # narrows the matrix; empty: every matrix case


@dataclass(frozen=True)
class CaseSpec:
    """``[throughput.cases.NAME]``; precision, channels_last and compile left out (None) come from
    ``[devices.<type>]``."""

    description: str = setting("")
    batch_size: int = setting(512, "int", _positive)
    precision: str | None = setting(None, "str", _one_of(*PRECISIONS))
    channels_last: bool | None = setting(None, "bool")
    compile: str | None = setting(None, "str", _one_of(*COMPILE_MODES))
    pipeline: str = setting("synthetic", "str", _one_of("synthetic", "torch", "dali", "torchvision"))
    model: bool = setting(True, "bool")  # false: the pipeline alone
    device: str | None = setting(None, "str", _one_of(*DEVICES))  # meant for this device type only
    steps: int | None = setting(None, "int", _positive)  # timed steps a repeat for this case (cheap loaders: more)
    matrix: bool = setting(True, "bool")  # false: measured only when --case names it (long compiles)


@dataclass(frozen=True)
class SuiteSettings:
    """``[suite]``: `python -m bench suite` = throughput matrix + time-to-target profile + range test."""

    cuda_profile: str | None = setting(None)  # the time-to-target part on a GPU (None: [profiles.auto]'s) ...
    cpu_profile: str | None = setting(None)  # ... and without one
    quick_seeds: int = setting(1, "int", _positive)  # --quick: one seed per trial
    quick_repeats: int = setting(2, "int", _positive)  # --quick: throughput repeats per case
    quick_lr_find_steps: int = setting(30, "int", _positive)  # --quick: every range-test ramp bounded to this
    cuda_trace: int = setting(5, "int", _non_negative)  # the throughput part profiles every case this many steps ...
    cpu_trace: int = setting(0, "int", _non_negative)  # ... not on a CPU, where 10 more steps a case cost minutes


@dataclass(frozen=True)
class Config:
    path: Path
    sha256: str
    raw: Mapping[str, Any]
    data: DataSettings
    devices: Mapping[str, DeviceSettings]
    trials: Mapping[str, TrialSpec]
    profiles: Mapping[str, Profile]
    auto: AutoProfiles
    lr_find: LrFindSettings
    suite: SuiteSettings
    throughput: ThroughputSettings
    cases: Mapping[str, CaseSpec]

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
            name = getattr(self.auto, device_type)
        if name not in self.profiles:
            raise ConfigError(f"{self.path}: unknown profile {name!r} (known: auto, {', '.join(self.profiles)})")
        return self.profiles[name]


# ---- trials and profiles ---------------------------------------------------------------------------

def _schedule_args(table: Mapping[str, Any], kind: str, where: str, path: Path) -> dict[str, Any]:
    spec = SCHEDULE_FIELDS[kind]
    out = {}
    for key, value in ((k, v) for k, v in table.items() if k in spec):
        type_name, check = spec[key]
        problem = None if _TYPES[type_name](value) else f"must be of type {type_name}"
        problem = problem or check(value)
        if problem:
            raise ConfigError(f"{path}: {where}.{key} {problem}, got {value!r}")
        out[key] = value
    for name in _required_schedule_keys(kind):
        if name not in out:
            raise ConfigError(f"{path}: missing key {where}.{name}")
    return out


def _required_schedule_keys(kind: str) -> list[str]:
    """Config names of the schedule's parameters that have no default (total_steps comes from steps)."""
    inverse = {v: k for k, v in _RENAME.items()}
    return [inverse.get(f.name, f.name) for f in fields(KINDS[kind])
            if f.init and f.default is MISSING and f.default_factory is MISSING and f.name != "total_steps"]


def _trial(name: str, raw: Any, defaults: Mapping[str, Any], path: Path) -> TrialSpec:
    where = f"trials.{name}"
    table = _table(raw, where, path)
    if "schedule" not in table:
        raise ConfigError(f"{path}: missing key {where}.schedule")
    kind = canonical_kind(str(table["schedule"]))
    if kind not in SCHEDULE_FIELDS:
        raise ConfigError(f"{path}: {where}.schedule must be one of {', '.join(SCHEDULE_FIELDS)}, "
                          f"got {table['schedule']!r}")
    sched = _schedule_args(table, kind, where, path)
    train = _read({k: v for k, v in table.items() if k not in SCHEDULE_FIELDS[kind]}, TrialSpec, where, path,
                  skip=("schedule", "description"))
    merged = {**defaults, **train}
    if "steps" not in merged:
        raise ConfigError(f"{path}: missing key {where}.steps")
    spec = TrialSpec(name=name, schedule=kind, schedule_args=tuple(sorted(sched.items())), **merged)
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
    override = _read(_table(table.get("override", {}), f"{where}.override", path), TrialSpec, f"{where}.override",
                     path)
    prof = section(Profile, {k: v for k, v in table.items() if k != "override"}, where, path, name=name,
                   override=tuple(sorted(override.items())))
    for t in prof.trials:
        if t not in trials:
            raise ConfigError(f"{path}: {where}.trials names unknown trial {t!r}")
        _override(trials[t], prof.override, path, f"{where}.override (trial {t})")
    return prof


def _profiles(raw: Mapping[str, Any], trials: Mapping[str, TrialSpec],
              path: Path) -> tuple[dict[str, Profile], AutoProfiles]:
    tables = dict(_table(raw.get("profiles", {}), "profiles", path))
    auto = section(AutoProfiles, tables.pop("auto", {}), "profiles.auto", path)
    profiles = {n: _profile(n, p, trials, path) for n, p in tables.items()}
    for dev in DEVICES:
        if getattr(auto, dev) not in profiles:
            raise ConfigError(f"{path}: profiles.auto.{dev} must name a profile, got {getattr(auto, dev)!r}")
    return profiles, auto


# ---- the file ----------------------------------------------------------------------------------

TOP = ("defaults", "data", "devices", "trials", "profiles", "lr_find", "throughput", "suite")


def _devices(raw: Mapping[str, Any], path: Path) -> dict[str, DeviceSettings]:
    tables = _table(raw.get("devices", {}), "devices", path)
    for dev in tables:
        if dev not in DEVICES:
            raise ConfigError(f"{path}: unknown key 'devices.{dev}'")
    return {dev: replace(DEVICE_DEFAULTS[dev], **_read(_table(tables.get(dev, {}), f"devices.{dev}", path),
                                                        DeviceSettings, f"devices.{dev}", path)) for dev in DEVICES}


def _throughput(raw: Mapping[str, Any], path: Path) -> tuple[ThroughputSettings, dict[str, CaseSpec]]:
    tables = dict(_table(raw.get("throughput", {}), "throughput", path))
    cases = {n: section(CaseSpec, c, f"throughput.cases.{n}", path)
             for n, c in _table(tables.pop("cases", {}), "throughput.cases", path).items()}
    tp = section(ThroughputSettings, tables, "throughput", path)
    for n in tp.default_cases:
        if n not in cases:
            raise ConfigError(f"{path}: throughput.default_cases names unknown case {n!r}")
    return tp, cases


def _cross_checks(cfg: Config) -> None:
    """Names one section gives another must exist."""
    for dev in DEVICES:
        name = getattr(cfg.suite, f"{dev}_profile")
        if name is not None and name not in cfg.profiles:
            raise ConfigError(f"{cfg.path}: suite.{dev}_profile names unknown profile {name!r}")
    if cfg.lr_find.trial not in cfg.trials:
        raise ConfigError(f"{cfg.path}: lr_find.trial names unknown trial {cfg.lr_find.trial!r}")


def parse(raw: Mapping[str, Any], path: Path, text: str) -> Config:
    for key in raw:
        if key not in TOP:
            raise ConfigError(f"{path}: unknown key {key!r}")
    defaults = _read(_table(raw.get("defaults", {}), "defaults", path), TrialSpec, "defaults", path)
    trials = {n: _trial(n, t, defaults, path) for n, t in _table(raw.get("trials", {}), "trials", path).items()}
    profiles, auto = _profiles(raw, trials, path)
    throughput, cases = _throughput(raw, path)
    cfg = Config(path=path, sha256=hashlib.sha256(text.encode()).hexdigest(), raw=raw,
                 data=section(DataSettings, raw.get("data", {}), "data", path), devices=_devices(raw, path),
                 trials=trials, profiles=profiles, auto=auto,
                 lr_find=section(LrFindSettings, raw.get("lr_find", {}), "lr_find", path),
                 suite=section(SuiteSettings, raw.get("suite", {}), "suite", path), throughput=throughput, cases=cases)
    _cross_checks(cfg)
    return cfg


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
        if key in TRAIN_FIELDS:
            problem = check_value(key, value, TRAIN_FIELDS[key])
        elif key in schedule_fields:
            type_name, check = schedule_fields[key]
            problem = (None if _TYPES[type_name](value) else f"must be of type {type_name}") or check(value)
        else:
            known = ", ".join([*TRAIN_FIELDS, *schedule_fields])
            raise ConfigError(f"--set {key}: not a setting of trial {spec.name!r} ({spec.schedule}); known: {known}")
        if problem:
            raise ConfigError(f"--set {key}={value!r}: {problem}")
        (train if key in TRAIN_FIELDS else sched)[key] = value
    new = replace(spec, schedule_args=tuple(sorted(sched.items())), **train)
    _check_schedule(new, Path("--set"), f"trial {spec.name}", check_range=True)
    return new
