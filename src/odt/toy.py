"""`odt toy reward-hill`: ODT and ViDT on the ViDT paper's reward hill, the policy's action probed
at each target return, and a plot of both over the hill and the offline data."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .config import preset
from .data.embedded import reward_hill_dataset
from .envs.reward_hill import hill_reward
from .policy import load_policy
from .setup import run_command


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



def probe(run_dir, targets, checkpoint: str = "final") -> np.ndarray:
    """The policy's mean action at each target return (the one observation there is)."""
    policy = load_policy(run_dir, checkpoint)
    targets = np.asarray(targets, np.float32)
    policy.reset(targets, n=len(targets))
    return policy.act(np.zeros((len(targets), 1), np.float32))[:, 0]


def plot(results: list[dict], targets: np.ndarray, path) -> None:
    """Each run's action against the target return, over the hill and the offline data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional and slow to import: only when a plot is drawn

    data = reward_hill_dataset()
    fig, (hill, act) = plt.subplots(1, 2, figsize=(10, 4))
    a = np.linspace(-1, 1, 201)
    hill.plot(a, hill_reward(a), color="black", label="reward")
    offline = np.array([e.actions[0, 0] for e in data.episodes])
    hill.scatter(offline, hill_reward(offline), s=8, color="grey", label="offline data")
    colors = {"odt": "tab:blue", "vidt": "tab:red", "dt": "tab:green", "odt-td3": "tab:purple"}
    for r in results:
        hill.scatter([r["action"]], [r["reward"]], color=colors.get(r["algo"]), marker="x")
        act.plot(targets, r["actions_by_target"], color=colors.get(r["algo"]), alpha=0.7,
                 label=f"{r['algo']} seed {r['seed']}")
    hill.set(xlabel="action", ylabel="reward", title="final actions at target return 1")
    act.scatter(hill_reward(offline), offline, s=8, color="grey", label="offline data")
    act.axhline(0.0, color="black", lw=0.5, ls="--")
    act.set(xlabel="target return", ylabel="mean action", title="action against target return")
    hill.legend(fontsize=7)
    act.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def toy_command(a: ToyArgs) -> int:
    targets = np.linspace(-1.0, 1.5, 26)
    results = []
    for algo in a.algo:
        for seed in a.seeds:
            cfg = preset("reward-hill")
            cfg.preset, cfg.algo, cfg.seed = "reward-hill", algo, seed
            cfg.out, cfg.overwrite, cfg.progress = a.out / f"{algo}-s{seed}", a.overwrite, False
            run_command(cfg, "run", pretrain=True, finetune=True)  # a whole run: `--resume` knows it
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
