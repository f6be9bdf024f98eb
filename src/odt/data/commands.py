"""`odt data`: list the datasets at hand, inspect one, or generate one (generate.py)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import tyro

from ..config import ConfigError
from ..flags import parse
from .embedded import EMBEDDED, cache_path
from .generate import GenerateArgs, generate_command
from .sources import load_dataset


@dataclass
class InspectArgs:
    source: tyro.conf.Positional[str]
    """An embedded name, a Minari id, or a .npz / D4RL-format .hdf5 file."""
    json: bool = False
    """Print one JSON object instead of text."""
    download: bool = False
    """Download a Minari dataset that is not in the local store."""


def data_command(args: list[str]) -> int:
    """`odt data list|inspect|generate`."""
    sub = args[0] if args else ""
    if sub == "list":
        for name, entry in EMBEDDED.items():
            state = ("shipped" if "file" in entry else "built in code" if "builder" in entry
                     else "cached" if cache_path(name).is_file() else "generated on first use")
            print(f"{name:<34}embedded, {entry['env_id']}, {entry['transitions']} steps ({state})")
        try:
            import minari  # slow to import: only where it is used

            for name in sorted(minari.list_local_datasets()):
                print(f"{name:<34}Minari, local store")
        except ImportError:  # pragma: no cover - minari is a dependency
            pass
        return 0
    if sub == "generate":
        generate_command(parse(GenerateArgs, args[1:], "odt data generate",
                               "Train a behaviour policy with SAC (PointMaze: a waypoint controller), record it, "
                               "write a Minari dataset."))
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
