"""Make offline datasets: train a behaviour policy with SAC and record its trajectories.

Used to build the embedded Hopper-v5 defaults (``odt.data.embedded``) and by
``odt data generate``. stable-baselines3 is an optional extra: it is only needed to train
a behaviour policy, never to replay a shipped one.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

# D4RL's medium policies score about a third of the expert reference return.
QUALITY_FRACTION = {"random": 0.0, "medium": 1.0 / 3.0, "medium-replay": 1.0 / 3.0, "expert": 1.0}


@dataclass
class BehaviourPolicy:
    """A squashed-Gaussian MLP actor (SB3 SAC layout) as plain tensors, replayable without SB3."""

    weights: dict[str, torch.Tensor]
    meta: dict

    def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        w = self.weights
        h = torch.as_tensor(obs, dtype=torch.float32)
        n_hidden = sum(1 for k in w if k.startswith("latent_pi.") and k.endswith(".weight"))
        for i in range(n_hidden):
            h = torch.relu(h @ w[f"latent_pi.{2 * i}.weight"].T + w[f"latent_pi.{2 * i}.bias"])
        mu = h @ w["mu.weight"].T + w["mu.bias"]
        log_std = (h @ w["log_std.weight"].T + w["log_std.bias"]).clamp(-20, 2)
        mu, std = mu.numpy().astype(np.float64), log_std.exp().numpy().astype(np.float64)
        pre = mu if deterministic else mu + std * rng.standard_normal(mu.shape)
        return np.tanh(pre).astype(np.float32)

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.weights.items()}, str(path),
                  metadata={"odt_behaviour": json.dumps(self.meta)})

    @classmethod
    def load(cls, path: str | Path) -> "BehaviourPolicy":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            weights = {k: f.get_tensor(k) for k in f.keys()}
            meta = json.loads(f.metadata()["odt_behaviour"])
        return cls(weights, meta)


def _actor_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.actor.state_dict().items()
            if k.startswith(("latent_pi.", "mu.", "log_std."))}


def evaluate_policy(policy: BehaviourPolicy, env_id: str, episodes: int, seed: int) -> tuple[float, float]:
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(policy.act(obs, rng))
            ret += float(r)
            done = term or trunc
        returns.append(ret)
    env.close()
    return float(np.mean(returns)), float(np.std(returns))


def train_behaviour(env_id: str, target_return: float, out_dir: str | Path, seed: int = 0,
                    max_steps: int = 1_000_000, eval_every: int = 5000, eval_episodes: int = 5,
                    log=print) -> BehaviourPolicy:
    """Train SAC until the sampled-action evaluation return reaches ``target_return``.

    Saves the actor (safetensors) and the replay buffer so far (npz, the 'medium-replay' data).
    """
    try:
        from stable_baselines3 import SAC
        from stable_baselines3.common.callbacks import BaseCallback
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise SystemExit("odt: error: training a behaviour policy needs stable-baselines3; "
                         "install it with `pip install 'odt[generate]'`") from e
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make(env_id)
    model = SAC("MlpPolicy", env, seed=seed, verbose=0, device="cpu")
    start = time.time()
    result: dict = {}

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            n = self.num_timesteps
            if n % eval_every:
                return True
            pol = BehaviourPolicy(_actor_weights(self.model), {})
            mean, std = evaluate_policy(pol, env_id, eval_episodes, seed=10_000 + n)
            rate = n / (time.time() - start)
            log(f"[sac] steps {n:>8d}  eval return {mean:8.1f} +- {std:6.1f}  "
                f"target {target_return:.0f}  {rate:.0f} steps/s")
            if mean >= target_return:
                result.update(steps=n, ret=mean, std=std)
                return False
            return True

    model.learn(total_timesteps=max_steps, callback=Stop())
    steps = result.get("steps", model.num_timesteps)
    import mujoco
    import stable_baselines3
    meta = {"env_id": env_id, "target_return": target_return, "train_steps": int(steps),
            "eval_return_mean": result.get("ret"), "eval_return_std": result.get("std"),
            "seed": seed, "versions": {"stable_baselines3": stable_baselines3.__version__,
                                       "gymnasium": gym.__version__, "mujoco": mujoco.__version__,
                                       "torch": torch.__version__}}
    policy = BehaviourPolicy(_actor_weights(model), meta)
    policy.save(out / "policy.safetensors")
    rb = model.replay_buffer
    n = rb.size()
    np.savez_compressed(out / "replay.npz", observations=rb.observations[:n, 0],
                        actions=rb.actions[:n, 0], rewards=rb.rewards[:n, 0],
                        next_observations=rb.next_observations[:n, 0], dones=rb.dones[:n, 0],
                        timeouts=rb.timeouts[:n, 0])
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return policy


if __name__ == "__main__":
    # How the embedded behaviour policy was made (see the README's provenance table):
    #   python -m odt.data.generate Hopper-v5 medium OUT_DIR 0
    import sys

    from ..scores import REFERENCE_RETURNS, task_of

    torch.set_num_threads(1)
    env_id, quality, out = sys.argv[1], sys.argv[2], sys.argv[3]
    expert = REFERENCE_RETURNS[task_of(env_id)][1]
    train_behaviour(env_id, QUALITY_FRACTION[quality] * expert, out, seed=int(sys.argv[4]) if len(sys.argv) > 4 else 0)
