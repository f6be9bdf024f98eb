"""The ``odt`` command. Flags are derived from ``odt.config.Config`` by tyro; ``--preset`` picks
the defaults, and every other flag overrides them."""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from .config import Config, ConfigError, preset, preset_description, preset_names

COMMANDS = {
    "pretrain": "Pretrain a Decision Transformer on offline data (no environment interaction beyond evaluation).",
    "finetune": "Finetune a pretrained model online (ODT Algorithm 1); --init names the pretrained run.",
    "run": "Pretrain, then finetune online: the whole ODT pipeline in one run directory.",
    "eval": "Evaluate a run's policy: mean actions at a target return over several episodes.",
    "presets": "List the named presets (the paper's tables C.1-C.4 and machine-sized ones).",
    "toy": "The reward hill of the ViDT paper: `odt toy reward-hill [--algo odt vidt] [--seeds 0 1] [--json]`.",
    "data": "Datasets: `odt data inspect SOURCE [--json]`, `odt data list`, `odt data generate --env --quality --out`.",
    "sweep": "A grid of runs (presets/datasets x --set overrides x --seeds) on Ray; other flags go to every `odt run`.",
    "report": "Aggregate runs: per-task table (offline, online, delta), IQM and optimality gap with CIs, plots.",
}


@dataclass
class EvalArgs:
    run: Path
    """Run directory to evaluate."""
    checkpoint: str = "final"
    """Checkpoint name in the run's checkpoints/ (final, latest, pretrained) or a file path."""
    episodes: int = 10
    """Episodes, run together in one vector environment."""
    target: Optional[float] = None
    """Return-to-go target; default the run's g_eval."""
    seed: int = 0
    """Seed of the evaluation environments."""
    sample: bool = False
    """Sample actions instead of taking the mean action."""
    device: str = "cpu"
    """Torch device."""
    json: bool = False
    """Print one JSON object instead of text."""


@dataclass
class ToyArgs:
    algo: list[Literal["dt", "odt", "vidt", "odt-td3"]] = dataclasses.field(default_factory=lambda: ["odt", "vidt"])
    """Algorithms to pretrain and finetune (the preset reward-hill; finetuning at target return 1)."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    """Seeds; one run directory per algorithm and seed."""
    out: Path = Path("runs/reward-hill")
    """Directory for the runs and reward_hill.png."""
    overwrite: bool = False
    """Allow writing into existing run directories."""
    json: bool = False
    """Print JSON: one object (keys algo, seed, action, reward) per run, a list for several."""


@dataclass
class InspectArgs:
    source: tyro.conf.Positional[str]
    """An embedded name, a Minari id, or a .npz / D4RL-format .hdf5 file."""
    json: bool = False
    """Print one JSON object instead of text."""
    download: bool = False
    """Download a Minari dataset that is not in the local store."""


def _data(args: list[str]) -> int:
    from .data.embedded import EMBEDDED, cache_path
    from .data.sources import load_dataset

    sub = args[0] if args else ""
    if sub == "list":
        for name, entry in EMBEDDED.items():
            state = ("shipped" if "file" in entry else "built in code" if "builder" in entry
                     else "cached" if cache_path(name).is_file() else "generated on first use")
            print(f"{name:<34}embedded, {entry['env_id']}, {entry['transitions']} steps ({state})")
        try:
            import minari

            for name in sorted(minari.list_local_datasets()):
                print(f"{name:<34}Minari, local store")
        except ImportError:  # pragma: no cover - minari is a dependency
            pass
        return 0
    if sub == "generate":
        from .data.generate import GenerateArgs, generate_command

        generate_command(parse(GenerateArgs, args[1:], "odt data generate",
                               "Train a behaviour policy with SAC, record it, write a Minari dataset."))
        return 0
    if sub != "inspect":
        raise ConfigError("odt data needs a subcommand: `odt data inspect SOURCE [--json]`, `odt data list` "
                          "or `odt data generate --env ENV --quality QUALITY --out ID`")
    a = parse(InspectArgs, args[1:], "odt data inspect", "Figures of a dataset.")
    d = load_dataset(a.source, download=a.download).describe()
    if a.json:
        print(json.dumps(d))
        return 0
    print(f"{d['name']}: {d['n_episodes']} episodes, {d['n_transitions']} transitions "
          f"({d['n_terminated']} terminated, {d['n_truncated']} truncated)")
    print(f"environment {d['env_id'] or 'unknown'}; observation dim {d['obs_dim']}, action dim {d['act_dim']}")
    print(f"return mean {d['return_mean']:.2f} std {d['return_std']:.2f} min {d['return_min']:.2f} "
          f"max {d['return_max']:.2f}")
    print(f"episode length mean {d['length_mean']:.1f} min {d['length_min']} max {d['length_max']}")
    return 0


def parse(cls, args: list[str], prog: str, description: str, **kwargs):
    """tyro.cli, with tyro's boxed error reports folded into one line (a ConfigError)."""
    err = io.StringIO()
    columns = os.environ.get("COLUMNS")
    if not {"-h", "--help"} & set(args):  # no wrapping in an error box: a message stays on its line
        os.environ["COLUMNS"] = "2000"
    try:
        with contextlib.redirect_stderr(err):
            return tyro.cli(cls, args=args, prog=prog, description=description, **kwargs)
    except SystemExit as e:
        if not e.code:
            sys.stderr.write(err.getvalue())
            raise
        raise ConfigError(_one_line(err.getvalue(), prog)) from None
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns


def _one_line(report: str, prog: str) -> str:
    """'Error parsing --lr: could not convert ...', 'Missing from odt run: --env STR', ...: the
    first line of tyro's report and the flags it names, without their help texts. tyro draws a
    UTF-8 box (title in the top border) or, where stdout is not UTF-8, plain text (title, rule)."""
    lines = [line.rstrip() for line in report.splitlines()]
    if any(line.startswith("╭") for line in lines):
        body = [line[1:].rstrip("│").rstrip() for line in lines if line.startswith("│")]
    else:
        body = [line for line in lines if line.strip()][2:]
    rows, section, perhaps, base = [], 0, False, None
    for line in body:
        text = line.strip()
        if text and set(text) <= set("─-"):  # a rule: a "Perhaps you meant" section may follow
            section += 1
            continue
        indent = len(line) - len(line.lstrip())
        base = indent if base is None else base
        if section == 0 and (not rows or indent == base + 4):  # the message, then each flag it names
            rows.append(text)
        elif text == "Perhaps you meant:":
            perhaps = True
        elif perhaps and indent == base + 4:
            rows.append(f"(did you mean {text}?)")
            perhaps = False
    message = " ".join(rows) or "invalid arguments"
    return f"{message}; see `{prog} --help`"


def _usage() -> str:
    rows = "\n".join(f"  {name:<10}{text}" for name, text in COMMANDS.items())
    return f"usage: odt COMMAND [FLAGS]\n\ncommands:\n{rows}\n\n`odt COMMAND --help` lists a command's flags."


def _preset_from(args: list[str]) -> Optional[str]:
    for i, a in enumerate(args):
        if a == "--preset" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--preset="):
            return a.split("=", 1)[1]
    return None


def parse_config(command: str, args: list[str]) -> Config:
    name = _preset_from(args)
    default = preset(name) if name else Config()
    default.preset = name
    return parse(Config, args, f"odt {command}", COMMANDS[command], default=default)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, args = argv[0], argv[1:]
    try:
        if command not in COMMANDS:
            raise ConfigError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}")
        if command == "presets":
            for name in preset_names():
                print(f"{name:<34}{preset_description(name)}")
            return 0
        if command == "data":
            return _data(args)
        if command == "toy":
            if not args or args[0] != "reward-hill":
                raise ConfigError("odt toy needs the task: `odt toy reward-hill [--algo ...] [--seeds ...]`")
            return _toy(parse(ToyArgs, args[1:], "odt toy reward-hill", COMMANDS["toy"]))
        if command == "eval":
            return _eval(parse(EvalArgs, args, "odt eval", COMMANDS["eval"]))
        if command == "sweep":
            import shlex

            from .sweep import SweepArgs, sweep_command

            a, passthrough = parse(SweepArgs, args, "odt sweep", COMMANDS["sweep"], return_unknown_args=True)
            return sweep_command(a, passthrough, shlex.join(["odt", *argv]))
        if command == "report":
            from .report import ReportArgs, report_command

            return report_command(parse(ReportArgs, args, "odt report", COMMANDS["report"]))
        from .train import execute

        cfg = parse_config(command, args)
        if cfg.resume is not None:
            from .train import resume_run

            resume_run(cfg.resume)
            return 0
        if command == "finetune" and cfg.init is None:
            raise ConfigError("odt finetune needs --init RUN_DIR, a run made by `odt pretrain` (or use `odt run`)")
        execute(cfg, command, pretrain=command in ("pretrain", "run"), finetune=command in ("finetune", "run"),
                init_from=cfg.init if command == "finetune" else None)
        return 0
    except ConfigError as e:
        print(f"odt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("odt: interrupted; the run directory keeps the checkpoints written so far", file=sys.stderr)
        return 130


def _toy(a: ToyArgs) -> int:
    import numpy as np

    from .envs.reward_hill import hill_reward, plot, probe
    from .train import execute

    targets = np.linspace(-1.0, 1.5, 26)
    results = []
    for algo in a.algo:
        for seed in a.seeds:
            cfg = preset("reward-hill")
            cfg.preset, cfg.algo, cfg.seed = "reward-hill", algo, seed
            cfg.out, cfg.overwrite, cfg.progress = a.out / f"{algo}-s{seed}", a.overwrite, False
            execute(cfg, "run", pretrain=True, finetune=True)  # a whole run: `--resume` knows it
            *actions, action = probe(cfg.out, [*targets, 1.0]).tolist()  # the curve, then target 1
            results.append({"algo": algo, "seed": seed, "action": action, "reward": float(hill_reward(action)),
                            "run_dir": str(cfg.out), "targets": targets.tolist(),
                            "actions_by_target": actions})
            if not a.json:
                print(f"{algo:<8} seed {seed}: action at target return 1 = {action:+.3f}, "
                      f"reward {hill_reward(action):.3f} (peak: action 0, reward 1)")
    plot(results, targets, a.out / "reward_hill.png")
    if a.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
    else:
        print(f"plot: {a.out / 'reward_hill.png'}")
    return 0


def _eval(a: EvalArgs) -> int:
    from .checkpoint import load_policy
    from .logging import fmt_return
    from .rollout import make_vector_env, rollout
    from .scores import return_stats
    from .train import make_env_checked

    if a.episodes <= 0:
        raise ConfigError(f"--episodes must be positive, got {a.episodes}")
    cfg = Config.load(a.run / "config.json") if (a.run / "config.json").is_file() else None
    if cfg is None:
        raise ConfigError(f"{a.run} is not a run directory (no config.json); give the --out of an odt run")
    if cfg.tasks:
        raise ConfigError(f"{a.run} is a multi-task run; its per-task evaluations are the eval_<task>_* entries "
                          "of its metrics.jsonl (odt eval takes single-task runs)")
    policy = load_policy(a.run, a.checkpoint, device=a.device, deterministic=not a.sample)
    make_env_checked(cfg.env).close()
    envs = make_vector_env(cfg.env, a.episodes)
    target = cfg.g_eval if a.target is None else a.target
    res = rollout(policy, envs, target, seed=a.seed)
    envs.close()
    out = {"run": str(a.run), "env": cfg.env, "target": target, "episodes": a.episodes,
           **return_stats(cfg.env, res.returns, cfg.reference()), "length_mean": float(res.lengths.mean())}
    if a.json:
        print(json.dumps(out))
    else:
        norm = f", normalized {out['normalized_mean']:.1f} +- {out['normalized_std']:.1f}" if "normalized_mean" in out else ""
        print(f"{cfg.env} at target {target:g} over {a.episodes} episodes: return "
              f"{fmt_return(out['return_mean'])} +- {fmt_return(out['return_std'])}{norm}")
    return 0


def entry() -> None:
    try:
        sys.exit(main())
    except BrokenPipeError:  # `odt presets | head`: the reader left, nothing is wrong
        sys.stderr.close()
        sys.exit(0)
if __name__ == "__main__":
    entry()
