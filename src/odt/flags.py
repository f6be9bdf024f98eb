"""Command-line parsing shared by `odt` and `odt sweep`: tyro, with its error reports folded into
one line, and ``parse_config``, which applies --preset before the other flags."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
from typing import Annotated, Optional

import tyro

from .config import Config, ConfigError, preset

COMMANDS = {
    "pretrain": "Pretrain a Decision Transformer on offline data (no environment interaction beyond evaluation).",
    "finetune": "Finetune a pretrained model online (ODT Algorithm 1); --init names the pretrained run.",
    "run": "Pretrain, then finetune online: the whole ODT pipeline in one run directory.",
    "baseline": "A baseline of the paper's Table 5.1 as an odt run: `odt baseline sac|iql [odt run flags]`.",
    "eval": "Evaluate a run's policy: mean actions at a target return over several episodes.",
    "presets": "List the named presets (the paper's tables C.1-C.4 and machine-sized ones).",
    "toy": "The reward hill of the ViDT paper: `odt toy reward-hill [--algo odt vidt] [--seeds 0 1] [--json]`.",
    "data": "Datasets: `odt data inspect SOURCE [--json]`, `odt data list`, `odt data generate --env --quality --out`.",
    "sweep": "A grid of runs (presets/datasets x --set overrides x --seeds) on Ray; other flags go to every `odt run`.",
    "export": "A run's policy as one file that runs without odt: `odt export RUN --format torchscript|onnx --out FILE`, or a transformers DecisionTransformerModel directory with `--format hf --out DIR`.",
    "report": "Aggregate runs: per-task table (offline, online, delta), IQM and optimality gap with CIs, plots.",
}


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


def _preset_from(args: list[str]) -> Optional[str]:
    """The --preset given, if any. Given twice it is refused: its defaults are read before the
    other flags, so the first would set them and the last be recorded."""
    names = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--preset"]
    names += [a.split("=", 1)[1] for a in args if a.startswith("--preset=")]
    if len(names) > 1:
        raise ConfigError(f"--preset is given {len(names)} times ({', '.join(names)}); give one preset and "
                          "override its settings with flags")
    return names[0] if names else None


# The sections of `odt run --help`: Config's groups, each a nested dataclass whose flags keep their
# flat names (--embed-dim, not --model.embed-dim).
SECTIONS = dict(zip(("run", "model", "optimisation", "td3", "online", "toolbox", "baselines", "output"),
                    Config.GROUPS))
Sections = dataclasses.make_dataclass(
    "Sections", [(name, Annotated[group, tyro.conf.OmitArgPrefixes]) for name, group in SECTIONS.items()])


def parse_config(command: str, args: list[str], prog: str | None = None) -> Config:
    name = _preset_from(args)
    default = preset(name) if name else Config()
    default.preset = name
    sections = parse(Sections, args, prog or f"odt {command}", COMMANDS[command],
                     default=Sections(**{s: default.group(g) for s, g in SECTIONS.items()}))
    return Config(**{k: v for s in SECTIONS for k, v in vars(getattr(sections, s)).items()})
