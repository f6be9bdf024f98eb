"""The ``odt`` command: one dispatch to the commands' own modules. Flags are derived from
``odt.config.Config`` by tyro (flags.py); ``--preset`` picks the defaults, every other flag
overrides them."""
from __future__ import annotations

import shlex
import sys

from .config import Config, ConfigError, preset_description, preset_names
from .data.commands import data_command
from .export import ExportArgs, export_command
from .flags import COMMANDS, parse, parse_config
from .evaluate import EvalArgs, eval_command
from .report import ReportArgs, report_command
from .setup import extend_run, init_start, resume_run, run_command
from .shipped import names as shipped_names, resolve
from .sweep import SweepArgs, sweep_command
from .toy import ToyArgs, toy_command


def _usage() -> str:
    rows = "\n".join(f"  {name:<10}{text}" for name, text in COMMANDS.items())
    return f"usage: odt COMMAND [FLAGS]\n\ncommands:\n{rows}\n\n`odt COMMAND --help` lists a command's flags."


def _presets() -> int:
    models = set(shipped_names())
    for name in preset_names():
        mark = f" [pretrained: odt:{name}]" if name in models else ""
        print(f"{name:<34}{preset_description(name)}{mark}")
    return 0


def _train(cfg: Config, command: str, args: list[str]) -> None:
    """`odt pretrain`, `finetune`, `run`, `baseline`, with --resume or --extend where given."""
    if cfg.resume is not None:
        resume_run(cfg.resume)
        return
    if cfg.extend is not None:
        if not any(a == "--online-steps" or a.startswith("--online-steps=") for a in args):
            raise ConfigError("--extend needs the new total budget: --online-steps N")
        extend_run(cfg.extend, cfg.online_steps, cfg.out)
        return
    if command == "finetune" and cfg.init is None:
        raise ConfigError("odt finetune needs --init RUN_DIR, a run made by `odt pretrain` or a Hugging Face "
                          "DecisionTransformerModel directory (or use `odt run`)")
    cfg.validate()  # before a shipped model is unpacked or a Hugging Face one read
    cfg.init = resolve(cfg.init)  # odt:NAME, a shipped model, is a run directory in the cache
    run_command(cfg, command, pretrain=command in ("pretrain", "run"), finetune=command in ("finetune", "run"),
                start=init_start(cfg, command, args))


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
            return _presets()
        if command == "data":
            return data_command(args)
        if command == "toy":
            if not args or args[0] != "reward-hill":
                raise ConfigError("odt toy needs the task: `odt toy reward-hill [--algo ...] [--seeds ...]`")
            return toy_command(parse(ToyArgs, args[1:], "odt toy reward-hill", COMMANDS["toy"]))
        if command == "eval":
            a = parse(EvalArgs, args, "odt eval", COMMANDS["eval"])
            a.run = resolve(a.run)
            return eval_command(a)
        if command == "sweep":
            a, passthrough = parse(SweepArgs, args, "odt sweep", COMMANDS["sweep"], return_unknown_args=True)
            return sweep_command(a, passthrough, shlex.join(["odt", *argv]))
        if command == "export":
            a = parse(ExportArgs, args, "odt export", COMMANDS["export"])
            a.run = resolve(a.run)
            return export_command(a)
        if command == "report":
            return report_command(parse(ReportArgs, args, "odt report", COMMANDS["report"]))
        if command == "baseline":
            if args[:1] in (["-h"], ["--help"]):
                print(f"usage: odt baseline {{sac,iql}} [odt run flags]\n\n{COMMANDS['baseline']}\n"
                      "`odt baseline sac --help` lists the flags (the baselines' own under 'baselines').")
                return 0
            if not args or args[0] not in ("sac", "iql"):
                raise ConfigError("odt baseline needs the algorithm: `odt baseline sac|iql [odt run flags]`")
            cfg = parse_config("baseline", [*args[1:], "--algo", args[0]], prog=f"odt baseline {args[0]}")
            command = "run"
        else:
            cfg = parse_config(command, args)
        _train(cfg, command, args)
        return 0
    except ConfigError as e:
        print(f"odt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("odt: interrupted; the run directory keeps the checkpoints written so far", file=sys.stderr)
        return 130


def entry() -> None:
    try:
        sys.exit(main())
    except BrokenPipeError:  # `odt presets | head`: the reader left, nothing is wrong
        sys.stderr.close()
        sys.exit(0)


if __name__ == "__main__":
    entry()
