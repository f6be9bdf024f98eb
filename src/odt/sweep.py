"""``odt sweep``: a grid of ``odt run``s (presets or datasets x overrides x seeds) on Ray. Each grid
point is a separate ``odt run`` process inside a Ray task and an ordinary run directory under
``--out``; running the same command again skips the complete runs and resumes the killed ones."""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

import tyro

from .config import Config, ConfigError, tomllib
from .data.sources import load_dataset
from .flags import parse_config
from .logging import fmt_time

GROUP_DIR = Path(__file__).parent / "sweeps"
# Settings that say where and how a run writes or computes, not what it learns: a run directory
# made with other values of these still belongs to the grid point (a resumed run keeps its own).
PLUMBING = {"out", "overwrite", "progress", "resume", "extend", "threads", "device", "wandb", "wandb_project", "wandb_mode",
            "capture_video"}
OWN_FLAGS = ("--out", "--resume", "--extend", "--overwrite", "--progress", "--no-progress", "--init")


@dataclass
class SweepArgs:
    out: Path
    """Sweep directory: one run directory per grid point, sweep.json (the manifest)."""
    seeds: Optional[str] = None
    """Seeds, comma-separated (0,1,2): one run each. Default: the run's --seed."""
    preset: Optional[str] = None
    """Preset(s), comma-separated: a grid axis (each preset names its environment and dataset)."""
    dataset: Optional[str] = None
    """Dataset(s), comma-separated: a grid axis."""
    set: tyro.conf.UseAppendAction[list[str]] = field(default_factory=list)
    """KEY=V1,V2,...: a grid axis over any `odt run` setting, e.g. lr=1e-4,1e-3; repeatable (a product)."""
    grid: Optional[Path] = None
    """TOML grid: preset, dataset, seeds (lists), [set] KEY = [values], args (flags); the command line wins."""
    group: Optional[str] = None
    """A grid shipped with odt (odt/sweeps/NAME.toml), e.g. paper-gym: the paper's Gym tasks."""
    address: Optional[str] = None
    """Address of a Ray cluster (auto, HOST:PORT) whose nodes share --out and the data; default: local Ray."""
    num_cpus: Optional[int] = None
    """CPUs of the local Ray instance; default all of this machine's."""
    cpus_per_run: float = 1.0
    """CPUs Ray reserves for each run; also the run's --threads unless the flags set it."""
    gpus_per_run: Optional[float] = None
    """GPUs Ray reserves for each run (0.5: two runs share a GPU). Default: none on a machine without
    GPUs; where Ray sees GPUs, an equal share of them for each of the runs that the CPUs hold at once."""
    retries: int = 1
    """Times a failed run is started again (resuming from its checkpoint) before it counts as failed."""


class RunFailed(RuntimeError):
    """A grid point's ``odt run`` exited non-zero; Ray retries the task on it."""


@dataclass
class Point:
    name: str
    args: list[str]  # `odt run` flags, --out included
    run_dir: Path
    state: str = "new"  # new, complete (summary.json), resume (checkpoints), restart (no checkpoint)
    dataset: tuple[str, bool] = ("", False)  # its --dataset and --download, as parsed by the plan


def _split(values: str, what: str) -> list[str]:
    parts = [v.strip() for v in values.split(",")]
    if not all(parts):
        raise ConfigError(f"{what} {values!r} has an empty value; give comma-separated values such as 1,2,3")
    return parts


def _as_list(value, what: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{what} is an empty list; give at least one value")
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in values]


def _grid_file(a: SweepArgs) -> dict:
    if a.group and a.grid:
        raise ConfigError("--group and --grid both name a grid file; give one")
    path = a.grid
    if a.group:
        path = GROUP_DIR / f"{a.group}.toml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in GROUP_DIR.glob("*.toml")))
            raise ConfigError(f"unknown sweep group {a.group!r}; choose one of: {names}")
    if path is None:
        return {}
    try:
        grid = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read grid file {path}: {e}; give a TOML file (see `odt sweep --help`)") from e
    unknown = sorted(set(grid) - {"description", "preset", "dataset", "seeds", "set", "args"})
    if unknown:
        raise ConfigError(f"grid file {path}: unknown key(s) {', '.join(unknown)}; use preset, dataset, seeds, "
                          "set, args")
    if not isinstance(grid.get("set", {}), dict) or not isinstance(grid.get("args", []), list):
        raise ConfigError(f"grid file {path}: [set] must be a table of KEY = [values], args a list of flags")
    return grid


def build_grid(a: SweepArgs, passthrough: list[str]) -> tuple[dict, list[str]]:
    """The axes ({flag: values}, in name order) and the flags every run gets."""
    grid = _grid_file(a)
    base = [str(x) for x in grid.get("args", [])] + passthrough
    for flag in base:
        if flag.split("=")[0] in OWN_FLAGS:
            raise ConfigError(f"{flag} is the sweep's to set (each run's --out is a directory under the sweep's "
                              "--out; re-running the sweep resumes killed runs); leave it out")
    axes: dict[str, list[str]] = {}
    for name, cli_value in (("preset", a.preset), ("dataset", a.dataset)):
        if cli_value is not None:
            axes[name] = _split(cli_value, f"--{name}")
        elif name in grid:
            axes[name] = _as_list(grid[name], f"{name} in the grid file")
    sets = {k.replace("_", "-"): _as_list(v, f"[set] {k} in the grid file") for k, v in grid.get("set", {}).items()}
    for item in a.set:
        key, eq, values = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: give KEY=V1,V2,... (for example --set lr=1e-4,1e-3)")
        sets[key.strip().lstrip("-").replace("_", "-")] = _split(values, f"--set {key}")
    axis_flags = {"preset": "--preset", "dataset": "--dataset", "seed": "--seeds", "seeds": "--seeds"}
    for key in sets:
        if key in axis_flags:
            raise ConfigError(f"--set {key}=...: give that axis as {axis_flags[key]} V1,V2,...")
        if f"--{key}" in OWN_FLAGS:
            raise ConfigError(f"--set {key}: --{key} is the sweep's to set; leave it out")
    axes.update(sets)
    if a.seeds is not None:
        axes["seed"] = _split(a.seeds, "--seeds")
    elif "seeds" in grid:
        axes["seed"] = _as_list(grid["seeds"], "seeds in the grid file")
    for flag in base:
        # A flag and an axis for one setting would leave the winner to the parser (and --preset's
        # defaults to the first of them): say it once.
        key = flag.split("=")[0][2:].replace("_", "-")
        if flag.startswith("--") and key in axes:
            raise ConfigError(f"{flag.split('=')[0]} is given both as a flag and as an axis of the grid; "
                              "give it in one place")
    return axes, base


def _name_part(key: str, value: str) -> str:
    if key == "seed":
        return f"s{value}"
    if key == "dataset":
        path = Path(value)
        value = path.stem if path.suffix in (".npz", ".hdf5", ".h5") else value
    part = value if key in ("preset", "dataset") else f"{key}={value}"
    return re.sub(r"[^A-Za-z0-9.=+-]+", "-", part).strip("-")


def plan(a: SweepArgs, passthrough: list[str]) -> tuple[dict, list[str], list[Point]]:
    """Every grid point's `odt run` flags, each parsed here, so that a bad preset, key or value ends
    the sweep with one line before Ray starts; and what each run directory holds already."""
    gpus_ok = a.gpus_per_run is None or 0 <= a.gpus_per_run < math.inf
    if not (0 < a.cpus_per_run < math.inf and gpus_ok) or a.retries < 0:  # NaN fails too
        raise ConfigError("--cpus-per-run must be positive, --gpus-per-run and --retries >= 0")
    if a.out.exists() and not a.out.is_dir():
        raise ConfigError(f"--out {a.out} is a file; give a directory for the sweep")
    axes, base = build_grid(a, passthrough)
    explicit_threads = any(f.split("=")[0] == "--threads" for f in base) or "threads" in axes
    points, names = [], {}
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        label = " ".join(f"{k}={v}" for k, v in point.items()) or "the single run"
        args = base + [x for k, v in point.items() for x in (f"--{k}", v)]
        if not explicit_threads and a.cpus_per_run >= 1:
            args += ["--threads", str(int(a.cpus_per_run))]  # as many threads as Ray reserved cores
        try:
            cfg = parse_config("run", args).validate()
        except ConfigError as e:
            raise ConfigError(f"grid point {label}: {e}") from None
        name = "_".join(_name_part(k, v) for k, v in point.items() if k != "seed") or "run"
        name = f"{name}_s{cfg.seed}"
        if name in names:
            raise ConfigError(f"grid points {names[name]} and {label} would share the run directory {name}; "
                              "make the values differ by more than punctuation")
        names[name] = label
        run_dir = a.out / name
        args += ["--out", str(run_dir.resolve()), "--no-progress"]
        p = Point(name, args, run_dir, dataset=(cfg.dataset, cfg.download))
        p.state = _state_of(p, cfg.to_dict())
        points.append(p)
    return axes, base, points


def _state_of(p: Point, settings: dict) -> str:
    """What the run directory holds; refuses one that is not this grid point's run."""
    d = p.run_dir
    if not d.exists():
        return "new"
    if not d.is_dir():
        raise ConfigError(f"{d} is a file where the sweep puts run {p.name}; move it or choose another --out")
    if not (d / "config.json").is_file():
        if {x.name for x in d.iterdir()} <= {"output.log"}:  # an earlier attempt that wrote nothing else
            return "new"
        raise ConfigError(f"{d} exists and is not a run directory (no config.json); move it or choose another --out")
    try:
        saved = json.loads((d / "config.json").read_text())
        Config.from_dict(saved)
        if not {"env", "dataset", "algo", "seed"} <= set(saved):  # what every odt run's config.json holds
            raise ConfigError("no env, dataset, algo and seed")
    except (OSError, ValueError) as e:  # ValueError: JSON's, and ConfigError
        raise ConfigError(f"{d} holds a config.json that is not an odt run's ({str(e)[:80]}); move {d} away or "
                          "choose another --out") from None
    for key, value in settings.items():
        # A run's config.json also records what setup filled in (reference scores, the precision
        # and action head that auto chose, ...).
        if key in PLUMBING or value in (None, "auto") or key not in saved or saved[key] == value:
            continue
        raise ConfigError(f"{d} holds a run with other settings ({key} {saved[key]!r} there, {value!r} in this "
                          "sweep); give another --out, or the settings it was made with")
    if (d / "summary.json").is_file():
        return "complete"
    return "resume" if any((d / "checkpoints").glob("*.pt")) else "restart"


def run_point(name: str, run_dir: str, args: list[str], cwd: str) -> str:
    """One grid point, inside a Ray task. Looks again at the run directory, since a retry follows
    a failed attempt that may have left checkpoints to resume from."""
    d = Path(run_dir)
    if (d / "summary.json").is_file():
        return "complete"
    resume = (d / "config.json").is_file() and any((d / "checkpoints").glob("*.pt"))
    # Without checkpoints nothing was done worth keeping: --overwrite clears the files of a failed try.
    flags = ["--resume", run_dir] if resume else [*args, "--overwrite"]
    cmd = [sys.executable, "-m", "odt", "run", *flags]
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "output.log", "a") as log:
        log.write(f"--- odt sweep {datetime.now():%Y-%m-%d %H:%M:%S}: {shlex.join(cmd)}\n")
        log.flush()
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                              env={**os.environ, "ODT_DIE_WITH_PARENT": "1"}).returncode
    if code:
        raise RunFailed(f"run {name} exited with code {code}; see {d / 'output.log'}")
    return "resumed" if resume else "done"


def _tail(path: Path, n: int = 8) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no output.log)"
    return "\n".join(f"    | {line}" for line in lines[-n:])


class Manifest:
    """SWEEP_DIR/sweep.json: the commands, the grid and every run's flags and status, rewritten as
    runs finish. Runs of earlier sweeps into the same directory stay listed."""

    def __init__(self, out: Path, command: str, axes: dict, base: list[str], points: list[Point]):
        self.path = out / "sweep.json"
        try:
            old = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except json.JSONDecodeError:
            old = {}  # a log, not a result: the run directories say what is done
        self.data = {"commands": old.get("commands", []) + [command], "grid": {"axes": axes, "args": base},
                     "runs": old.get("runs", {})}
        for p in points:
            self.data["runs"][p.name] = {"args": p.args, "status": p.state}
        self.write()

    def set(self, name: str, **fields) -> None:
        self.data["runs"][name].update(fields)
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


def sweep_command(a: SweepArgs, passthrough: list[str], command: str) -> int:
    axes, base, points = plan(a, passthrough)
    if a.address and a.num_cpus is not None:
        raise ConfigError("--num-cpus sizes a local Ray instance; with --address the cluster's resources apply")
    a.out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(a.out, command, axes, base, points)
    todo = [p for p in points if p.state != "complete"]
    counts = {s: sum(p.state == s for p in points) for s in ("complete", "resume", "restart", "new")}
    print(f"odt sweep: {len(points)} runs in {a.out} ({counts['complete']} complete, {counts['resume']} to resume, "
          f"{counts['new'] + counts['restart']} to start)", flush=True)
    if not todo:
        return _finish(a, points, {}, 0.0)
    if a.address is None:
        _prepare_datasets(todo)
    import ray

    start = time.time()
    if a.address:
        ray.init(address=a.address, log_to_driver=False, logging_level="warning")
    else:
        # No dashboard, a small object store (only flags and names travel), and each run's output
        # goes to its own output.log rather than to this terminal.
        ray.init(address="local", num_cpus=a.num_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="warning", object_store_memory=100 * 2**20)
    try:
        have = ray.cluster_resources()
        gpus = gpu_share(a, have)
        if a.address is None and (a.cpus_per_run > have.get("CPU", 0) or gpus > have.get("GPU", 0)):
            raise ConfigError(f"each run asks for {a.cpus_per_run:g} CPUs and {gpus:g} GPUs but this "
                              f"machine's Ray instance has {have.get('CPU', 0):g} and {have.get('GPU', 0):g}; "
                              "lower --cpus-per-run / --gpus-per-run")
        task = ray.remote(run_point).options(num_cpus=a.cpus_per_run, num_gpus=gpus,
                                            max_retries=a.retries, retry_exceptions=True)
        cwd = str(Path.cwd())  # relative dataset paths mean the same in the runs as here
        pending = {task.remote(p.name, str(p.run_dir.resolve()), p.args, cwd): p for p in todo}
        failed = _wait(pending, manifest, len(points), start)
    except KeyboardInterrupt:
        print("odt sweep: interrupted; run the same command again to resume the runs", file=sys.stderr)
        return 130
    finally:
        ray.shutdown()
    return _finish(a, points, failed, time.time() - start)


def gpu_share(a: SweepArgs, have: dict) -> float:
    """--gpus-per-run, or, where Ray sees GPUs and none was given, an equal share: the GPUs over the
    runs that its CPUs hold at once (at most one GPU a run, which is what a run uses; in Ray's
    steps of 1e-4). Each run then counts in Ray's books and gets its CUDA_VISIBLE_DEVICES from Ray,
    instead of every run's --device auto taking GPU 0 unaccounted."""
    if a.gpus_per_run is not None:
        return a.gpus_per_run
    gpus = have.get("GPU", 0)
    if not gpus:
        return 0.0
    at_once = max(1, int(have.get("CPU", 1) // a.cpus_per_run))
    share = min(1.0, math.floor(gpus / at_once * 1e4) / 1e4)
    print(f"odt sweep: each run gets {share:g} of a GPU ({gpus:g} GPUs, {at_once} runs at once); "
          "--gpus-per-run to choose", flush=True)
    return share


def _wait(pending: dict, manifest: Manifest, total: int, start: float) -> dict[str, str]:
    """Record each run as it ends, with a progress line; returns the failed runs and why."""
    import ray

    failed: dict[str, str] = {}
    finished, last_line = 0, 0.0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=60)
        for ref in ready:
            p = pending.pop(ref)
            finished += 1
            try:
                status = ray.get(ref)
            except (RunFailed, ray.exceptions.RayError) as e:
                status = "failed"
                failed[p.name] = str(getattr(e, "cause", None) or e).strip().splitlines()[-1]
            manifest.set(p.name, status=status, finished=f"{datetime.now():%Y-%m-%d %H:%M:%S}")
            print(f"[sweep] {p.name}: {status}", flush=True)
        if ready or time.time() - last_line > 55:
            last_line = time.time()
            elapsed = time.time() - start
            left = elapsed / finished * len(pending) if finished else float("inf")
            print(f"[sweep] {total - len(pending) - len(failed)}/{total} complete, {len(failed)} failed, "
                  f"{len(pending)} to go  elapsed {fmt_time(elapsed)}  left {fmt_time(left)}", flush=True)
    return failed


def _prepare_datasets(points: list[Point]) -> None:
    """Load each dataset of the grid once before the runs start: an embedded dataset is generated
    and cached, a Minari one downloaded, here rather than by several runs at once racing to write
    the same files; and a missing one ends the sweep before it starts."""
    seen = set()
    for p in points:
        if p.state == "resume" or p.dataset in seen or p.dataset[0] == "none":
            continue
        seen.add(p.dataset)
        print(f"odt sweep: loading dataset {p.dataset[0]} once, before the runs", flush=True)
        load_dataset(p.dataset[0], download=p.dataset[1])


def _finish(a: SweepArgs, points: list[Point], failed: dict[str, str], seconds: float) -> int:
    if failed:
        print(f"odt sweep: {len(failed)} of {len(points)} runs failed after {a.retries + 1} attempt(s); "
              "run the same command again to retry them", file=sys.stderr)
        for name, why in failed.items():
            print(f"  {name}: {why}\n{_tail(a.out / name / 'output.log')}", file=sys.stderr)
        return 1
    print(f"odt sweep: all {len(points)} runs complete ({fmt_time(seconds)}); "
          f"report: odt report {shlex.quote(str(a.out))} --out {shlex.quote(str(a.out / 'report'))}")
    return 0
