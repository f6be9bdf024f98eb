"""odt's policy out to Hugging Face: `odt export RUN --format hf --out DIR` writes a
``transformers.DecisionTransformerModel`` directory (config.json, model.safetensors) with a model
card. The weight mapping is hf.py's, read the other way."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import safetensors.torch
import torch

from .checkpoint import scaling_of
from .config import Config, ConfigError
from .hf import DEFAULTS, is_model_dir, weight_pairs
from .models.transformer import DecisionTransformer


def to_hf(model: DecisionTransformer, obs_mean, obs_std, rtg_scale: float, context: int, target_return: float,
          env_id: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json and the weights of a DecisionTransformerModel that computes ``model``'s mean action."""
    spec = model.spec
    if spec.action_head == "gaussian":
        raise ConfigError("the action head gaussian (its mean, clipped to [-1, 1]) has no counterpart in Hugging "
                          "Face's DecisionTransformerModel (tanh of the action, or no squashing and no clip)")
    d, sd = spec.embed_dim, model.state_dict()
    head = "linear" if spec.action_head == "deterministic" else "mu"
    w = {hf: sd[odt].t() if conv else sd[odt] for odt, hf, conv in weight_pairs(spec.n_layer, head)}
    # odt has no position embedding: HF adds wpe row 0 to every token, so zeros keep odt's function.
    w["encoder.wpe.weight"] = torch.zeros(DEFAULTS["n_positions"], d)
    w["embed_timestep.weight"] = (sd["embed_timestep.weight"] if spec.timestep_embedding
                                  else torch.zeros(spec.max_ep_len, d))  # no timestep embedding: zeros, exactly
    w["encoder.wte.weight"] = torch.zeros(1, d)  # unused: the tokens come in as embeddings
    # odt does not predict states or returns: zeros, so that the file holds every weight HF expects.
    w.update({"predict_state.weight": torch.zeros(spec.obs_dim, d), "predict_state.bias": torch.zeros(spec.obs_dim),
              "predict_return.weight": torch.zeros(1, d), "predict_return.bias": torch.zeros(1)})
    config = {"architectures": ["DecisionTransformerModel"], "model_type": "decision_transformer",
              **DEFAULTS, "state_dim": spec.obs_dim, "act_dim": spec.act_dim, "hidden_size": d,
              "n_layer": spec.n_layer, "n_head": spec.n_head, "n_inner": 4 * d, "max_ep_len": spec.max_ep_len,
              "resid_pdrop": spec.dropout, "embd_pdrop": spec.dropout, "attn_pdrop": spec.dropout,
              "vocab_size": 1, "bos_token_id": None, "eos_token_id": None, "use_cache": False, "dtype": "float32",
              "state_mean": [float(v) for v in obs_mean], "state_std": [float(v) for v in obs_std],
              "return_scale": float(rtg_scale), "context_length": int(context), "target_return": float(target_return),
              "env_id": env_id, "odt_context_len": spec.context_len}  # the acting window above, the training one here
    return config, {k: v.detach().float().contiguous().clone() for k, v in w.items()}


def export_run(run: Path, cfg: Config, models: list[DecisionTransformer], state: dict, checkpoint: Path,
               out: Path) -> int:
    """`odt export RUN --format hf --out DIR`: config.json, model.safetensors and README.md (the
    model card), written to DIR.tmp and renamed (an existing --out was cleared by --overwrite)."""
    if len(models) > 1:
        raise ConfigError(f"{run} is an ensemble of {len(models)} networks; Hugging Face's DecisionTransformerModel "
                          "holds one (use --format torchscript or onnx, which average the members)")
    scaling = scaling_of(state)
    if models[0].spec.frames:
        raise ConfigError(f"{run} reads frames through convolutions, which Hugging Face's DecisionTransformerModel "
                          "does not have (use --format torchscript or onnx)")
    if scaling.discrete:
        raise ConfigError(f"{run} acts in {cfg.env}'s discrete actions; Hugging Face's DecisionTransformerModel "
                          "predicts continuous ones (use --format torchscript or onnx, which return the index)")
    if not scaling.unit_actions:
        raise ConfigError(f"{cfg.env}'s action bounds are not [-1, 1]: odt rescales its actions, which Hugging "
                          "Face's DecisionTransformerModel cannot (use --format torchscript or onnx)")
    if out.is_dir() and any(out.iterdir()) and not is_model_dir(out):
        raise ConfigError(f"--out {out} is a directory that holds no model; odt export replaces only a model "
                          "directory: give a new --out")
    config, weights = to_hf(models[0], scaling.obs_mean, scaling.obs_std, cfg.rtg_scale, cfg.eval_context,
                            cfg.g_eval, cfg.env)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        safetensors.torch.save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "README.md").write_text(model_card(run, cfg, checkpoint, config, out))
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} (Hugging Face DecisionTransformerModel, {size:.1f} MB): {cfg.env}, context "
          f"{cfg.eval_context}, obs {config['state_dim']}, actions {config['act_dim']}, target {cfg.g_eval:g}")
    return 0


def model_card(run: Path, cfg: Config, checkpoint: Path, config: dict, out: Path) -> str:
    """README.md: what the model is, how it was made (the run's command, dataset and scores, from
    its config.json and summary.json), how to use it and how to upload it."""
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    critics = " (its TD3 critics are not part of it)" if cfg.td3 else ""
    head = (f"the deterministic actor's action{critics}" if cfg.resolved_action_head() == "deterministic" else
            "the stochastic actor's mean action, tanh of its mean (the log-std layer "
            f"{'and the TD3 critics are' if cfg.td3 else 'is'} not part of it)")
    command = summary.get("command") or "(not recorded: the run has no summary.json)"
    return f"""---
library_name: transformers
tags:
- reinforcement-learning
- decision-transformer
- odt
- {cfg.env}
---

# Decision Transformer for {cfg.env}, trained with odt (`--algo {cfg.algo}`)

A `transformers` `DecisionTransformerModel` exported by odt (`odt export --format hf`) from the
run `{run.name}`, checkpoint `{checkpoint.name}`. It computes {head}.

## How it was trained

* command: `{command}`
* algorithm: `{cfg.algo}`, dataset: `{cfg.dataset}`, environment: `{cfg.env}`, seed {cfg.seed}
* transformer: {config['hidden_size']} wide, {config['n_layer']} layers, {config['n_head']} head(s), \
training context {cfg.context_len}

{_scores_table(summary)}

Returns are undiscounted episode returns at the target return `target_return` (mean actions);
normalized scores are D4RL's (0 random, 100 expert) where the environment has a reference.

""" + _card_usage(config, run, out)


def _scores_table(summary: dict) -> str:
    rows = []
    for name, what in (("offline", "after pretraining"), ("final", "after finetuning"), ("best", "best evaluation")):
        s = summary.get(name)
        if s and "return_mean" in s:
            std = f" +- {s['return_std']:.1f}" if "return_std" in s else ""
            norm = f"{s['normalized_mean']:.1f}" if "normalized_mean" in s else "-"
            rows.append(f"| {name} ({what}) | {s.get('updates', '-')} | {s.get('online_steps', '-')} | "
                        f"{s['return_mean']:.1f}{std} | {norm} | {s.get('episodes', '-')} |")
    if not rows:
        return "The run has no summary.json (it did not finish), so no scores are recorded."
    return ("| evaluation | updates | online steps | return (mean +- std) | normalized | episodes |\n"
            "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows))


def _card_usage(config: dict, run: Path, out: Path) -> str:
    """The card's sections on using the model and uploading it."""
    return f"""## Using it

config.json holds, beside the architecture, what acting needs:

| key | value | meaning |
| --- | --- | --- |
| `env_id` | `{config['env_id']}` | the Gymnasium environment |
| `state_mean`, `state_std` | lists of {config['state_dim']} | the model's states are `(obs - state_mean) / state_std` |
| `return_scale` | {config['return_scale']:g} | returns-to-go are divided by it |
| `context_length` | {config['context_length']} | the acting window, in timesteps |
| `target_return` | {config['target_return']:g} | the return to ask for at the first step |

With `transformers`, as in its Decision Transformer example: keep the last `context_length`
states (normalized), actions (zero for the current step), returns-to-go (`target_return /
return_scale`, lowered by each reward / `return_scale`) and timesteps, left-padded to
`context_length` with `attention_mask` zeros, and take `action_preds[0, -1]`: it is the
environment's action. With odt: `Policy.load(DIR)`, `odt eval --run DIR`, or
`odt finetune --init DIR` to finetune it online.

## Uploading

```
huggingface-cli login
huggingface-cli upload YOUR_NAME/{run.name} {out} .
```
"""

