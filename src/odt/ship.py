"""The recipe of each shipped model (odt.shipped): ``python -m odt.ship NAME`` trains it with one
seeded command, evaluates it over 50 episodes and writes its weights and card into the package."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from . import __version__
from .checkpoint import load_from_run, networks_state
from .config import Config, ConfigError
from .data.sources import load_dataset
from .envs.make import make_vector_env
from .following import evaluate_target
from .policy import load_policy
from .scores import return_stats
from .shipped import MODELS, PREFIX, pack

# The run's flags; one thread, so that the recipe gives the same weights wherever it runs.
RECIPES: dict[str, dict] = {
    "cpu-vidt": {"args": ["run", "--preset", "cpu-vidt", "--online-steps", "0", "--seed", "0", "--threads", "1"],
                 "what": "ViDT pretrained on odt/hopper-medium-replay, with its critics after the "
                         "7000 critic-only warm-up updates: ready for online finetuning"},
    "cpu-walker2d-medium-vidt": {
        "args": ["run", "--preset", "cpu-walker2d-medium-vidt", "--online-steps", "0", "--seed", "0", "--threads", "1"],
        "what": "ViDT pretrained on odt/walker2d-medium, with its critics after the 7000 critic-only "
                "warm-up updates: ready for online finetuning"},
    "cpu-small": {"args": ["pretrain", "--preset", "cpu-small", "--seed", "0", "--threads", "1"],
                  "what": "ODT pretrained on odt/hopper-medium"},
}
EVAL_EPISODES, EVAL_SEED = 50, 1000


def make(name: str, work: Path) -> dict:
    """Train the recipe's run in ``work``, evaluate it over 50 episodes, write the weights and card."""
    if name not in RECIPES:
        raise ConfigError(f"no recipe for {name}; choose one of {', '.join(RECIPES)}")
    run = work / name
    args = [*RECIPES[name]["args"], "--out", str(run)]
    # A process of its own, as a user runs it: the card's command is exactly what ran. A finished
    # run in WORK_DIR is packed again as it is (a card's figures change without retraining).
    if not (run / "summary.json").is_file() and subprocess.run([sys.executable, "-m", "odt", *args]).returncode:
        raise ConfigError(f"the run of {name} failed; see {run}/run.log")
    cfg = Config.load(run / "config.json")
    state, path = load_from_run(run, "final" if RECIPES[name]["args"][0] == "run" else "pretrained")
    lead = state["ensemble"]["learners"][0]
    if "td3" in lead:
        # The target actor tracks the actor at tau through the critic-only warm-up (0.95^3500 of the
        # gap is left: they differ by float rounding, 2e-6 at most), so the learner rebuilds it from
        # the actor: 2.4 MB less, which keeps the file under 10 MB.
        lead = {**lead, "td3": {k: v for k, v in lead["td3"].items() if k != "actor_target"}}
    warmed = int(state["run"]["critic_pretrained"])
    kept = networks_state(state["spec"], state["scaling"], [lead], warmed)
    MODELS.mkdir(parents=True, exist_ok=True)
    pack(kept, MODELS / f"{name}.safetensors")
    torch.set_num_threads(1)  # the card's score, as the test re-evaluates it
    policy = load_policy(run, path.stem)
    envs = make_vector_env(cfg.env, EVAL_EPISODES)
    res, _ = evaluate_target(policy, envs, cfg.g_eval, EVAL_SEED, None)
    envs.close()
    stats = return_stats(cfg.env, res.returns, cfg.reference())
    n = len(res.returns)
    ds = load_dataset(cfg.dataset).describe()
    info = {
        "name": f"{PREFIX}{name}", "what": RECIPES[name]["what"], "preset": args[args.index("--preset") + 1],
        "command": f"python -m odt.ship {name}",
        "run_command": "odt " + " ".join(args[:-2]),
        "algo": cfg.algo, "env": cfg.env, "dataset": cfg.dataset,
        "data": {k: ds[k] for k in ("n_episodes", "n_transitions", "return_mean", "return_max")},
        "pretrain_updates": cfg.pretrain_updates, "critic_pretrain_updates": warmed,
        "offline": {"episodes": n, "seed": EVAL_SEED, "target": cfg.g_eval,
                    "return_mean": stats["return_mean"], "return_se": stats["return_std"] / n ** 0.5,
                    "normalized_mean": stats["normalized_mean"], "normalized_se": stats["normalized_std"] / n ** 0.5,
                    "command": f"odt eval --run {PREFIX}{name} --episodes {n} --seed {EVAL_SEED}"},
        "version": {"odt": __version__, "commit": _commit(), "torch": torch.__version__},
        "size_bytes": (MODELS / f"{name}.safetensors").stat().st_size,
        "config": json.loads((run / "config.json").read_text()),
    }
    info["config"]["out"] = None  # where the maker's run lay means nothing to a user
    (MODELS / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":  # python -m odt.ship NAME [WORK_DIR]: the maintainers' recipe
    if len(sys.argv) < 2 or sys.argv[1] not in RECIPES:
        sys.exit("usage: python -m odt.ship NAME [WORK_DIR]  (NAME: " + ", ".join(RECIPES) + ")")
    print(json.dumps(make(sys.argv[1], Path(sys.argv[2] if len(sys.argv) > 2 else "runs/shipped"))["offline"], indent=2))
