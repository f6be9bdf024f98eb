"""Hugging Face's ``transformers.DecisionTransformerModel`` in and out of odt (docs/huggingface.md).

In: ``Policy.load(DIR)``, ``odt eval --run DIR`` and ``odt finetune --init DIR`` take a model
directory (config.json, and model.safetensors or pytorch_model.bin). Out: ``odt export RUN
--format hf --out DIR`` writes one, with a model card. Nothing here imports transformers: the
format is a JSON file and a safetensors file, and weights are read without running code
(safetensors, or torch.load with weights_only).

The two networks compute the same function, so the weights map exactly. HF: each token is
embed(x) + embed_timestep(t), then embed_ln; its GPT-2 then adds wpe(0) to every token (the DT
passes position id 0 everywhere), drops out, runs pre-LayerNorm blocks and ln_f; predict_action
reads the state tokens, then tanh. odt: the same without wpe. wpe row 0 is one constant vector
added right after embed_ln, so it folds into embed_ln's bias; GPT-2's Conv1D is a Linear whose
weight is stored transposed. A config whose model odt does not compute is refused by name.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError

from .config import Config, ConfigError
from .envs.make import make_env_checked
from .models.transformer import DecisionTransformer, ModelSpec

WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# DecisionTransformerConfig's defaults: transformers fills a key config.json leaves out with these.
DEFAULTS = {"state_dim": 17, "act_dim": 4, "hidden_size": 128, "max_ep_len": 4096, "action_tanh": True,
            "n_positions": 1024, "n_layer": 3, "n_head": 1, "n_inner": None, "activation_function": "relu",
            "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "layer_norm_epsilon": 1e-5,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "add_cross_attention": False}
ALIASES = {"num_attention_heads": "n_head", "num_hidden_layers": "n_layer", "max_position_embeddings": "n_positions"}
LN_EPS = 1e-5  # torch's LayerNorm default, which every LayerNorm of odt's transformer uses


@dataclass
class HFModel:
    """A model directory, read and checked: config.json (defaults filled in) and its weights."""

    path: Path
    config: dict
    weights: dict[str, torch.Tensor]
    weights_file: Path


def is_model_dir(path) -> bool:
    """A Hugging Face model directory rather than an odt run: weights at its top level, or a
    config.json with a model_type (an odt run's has none)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in WEIGHTS):
        return True
    try:
        return "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def read(path) -> HFModel:
    """The directory's config.json and weights; one line (a ConfigError) for anything odt cannot
    map exactly, naming the field."""
    path = Path(path)
    cfg_file = path / "config.json"
    try:
        raw = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {cfg_file} ({_first_line(e)}); a Hugging Face model directory "
                          "holds a DecisionTransformerModel's config.json") from None
    kind = raw.get("model_type") if isinstance(raw, dict) else None
    if kind != "decision_transformer":
        raise ConfigError(f"{cfg_file} is not a Decision Transformer's (model_type {kind!r}, not "
                          "'decision_transformer'); odt maps transformers' DecisionTransformerModel only")
    config = {**DEFAULTS, **{ALIASES.get(k, k): v for k, v in raw.items()}}
    _check_mappable(config, cfg_file)
    weights, weights_file = _read_weights(path)
    return HFModel(path, config, weights, weights_file)


def _check_mappable(c: dict, where: Path) -> None:
    for key in ("state_dim", "act_dim", "hidden_size", "n_layer", "n_head", "max_ep_len", "n_positions"):
        if not isinstance(c[key], int) or isinstance(c[key], bool) or c[key] <= 0:
            raise ConfigError(f"{where}: {key} must be a positive integer, got {c[key]!r}")
    for key in ("resid_pdrop", "attn_pdrop", "embd_pdrop"):
        if not isinstance(c[key], (int, float)) or isinstance(c[key], bool) or not 0 <= c[key] < 1:
            raise ConfigError(f"{where}: {key} must be a dropout rate in [0, 1), got {c[key]!r}")
    d = c["hidden_size"]
    # (field, whether odt computes it, what odt computes instead)
    checks = [
        ("activation_function", c["activation_function"] == "relu", "odt's MLP uses relu"),
        ("n_inner", c["n_inner"] in (None, 4 * d), f"odt's MLP is 4 x hidden_size = {4 * d} wide"),
        ("layer_norm_epsilon", c["layer_norm_epsilon"] == LN_EPS, f"odt's LayerNorms use eps {LN_EPS}"),
        ("scale_attn_weights", c["scale_attn_weights"] is True, "odt scales attention by 1/sqrt(head_dim)"),
        ("scale_attn_by_inverse_layer_idx", c["scale_attn_by_inverse_layer_idx"] is False,
         "odt does not scale attention by layer"),
        ("reorder_and_upcast_attn", c["reorder_and_upcast_attn"] is False, "odt does not reorder or upcast attention"),
        ("add_cross_attention", c["add_cross_attention"] is False, "odt's blocks have no cross-attention"),
        ("action_tanh", c["action_tanh"] is True, "odt's actions are tanh of the action head"),
        ("n_head", d % c["n_head"] == 0, f"hidden_size {d} must split evenly into heads"),
        ("attn_pdrop", c["attn_pdrop"] == c["resid_pdrop"], "odt has one dropout rate, resid_pdrop's, for all"),
        ("embd_pdrop", c["embd_pdrop"] == c["resid_pdrop"], "odt has one dropout rate, resid_pdrop's, for all"),
    ]
    for field, ok, odt_has in checks:
        if not ok:
            raise ConfigError(f"{where}: {field} = {json.dumps(c[field])} cannot map onto odt's transformer "
                              f"({odt_has})")


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    file = next((path / n for n in WEIGHTS if (path / n).is_file()), None)
    if file is None:
        raise ConfigError(f"{path} has no weights file ({' or '.join(WEIGHTS)}) beside its config.json")
    try:
        if file.suffix == ".safetensors":
            weights = safetensors.torch.load_file(str(file))
        else:
            weights = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise ConfigError(f"refusing to load {file}: it holds more than tensors (loading it could run code); "
                              "save the state dict alone, or as model.safetensors") from None
        error = e
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as e:
        error = e
    else:
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise ConfigError(f"{file} is not a state dict (names to tensors)")
        return {k: v.float() for k, v in weights.items()}, file
    raise ConfigError(f"cannot read {file} ({_first_line(error)}); it is truncated or not a weights file")


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def _pairs(n_layer: int, head: str) -> list[tuple[str, str, bool]]:
    """(odt's name, HF's name, whether GPT-2's Conv1D stores it transposed) of every parameter that
    maps one to one. embed_ln.bias also takes wpe row 0 (see the module's doc)."""
    pairs = [(f"{m}.{p}", f"{m}.{p}", False) for m in ("embed_return", "embed_state", "embed_action", "embed_ln")
             for p in ("weight", "bias")]
    pairs += [(f"ln_f.{p}", f"encoder.ln_f.{p}", False) for p in ("weight", "bias")]
    pairs += [(f"head.{head}.{p}", f"predict_action.0.{p}", False) for p in ("weight", "bias")]
    for i in range(n_layer):
        for odt, hf, conv in (("ln1", "ln_1", False), ("ln2", "ln_2", False), ("attn.qkv", "attn.c_attn", True),
                              ("attn.proj", "attn.c_proj", True), ("mlp.0", "mlp.c_fc", True),
                              ("mlp.2", "mlp.c_proj", True)):
            pairs += [(f"blocks.{i}.{odt}.weight", f"encoder.h.{i}.{hf}.weight", conv),
                      (f"blocks.{i}.{odt}.bias", f"encoder.h.{i}.{hf}.bias", False)]
    return pairs


# HF weights odt drops: the unused token embedding and the state and return predictions (odt trains
# neither); also old GPT-2 versions' causal-mask buffers (*.attn.bias, *.attn.masked_bias).
DROPPED = ("encoder.wte.weight", "predict_state.weight", "predict_state.bias", "predict_return.weight",
           "predict_return.bias")


def build(m: HFModel, action_head: str, context_len: int, seed: int = 0, log_std_min: float = -5.0,
          log_std_max: float = 2.0) -> DecisionTransformer:
    """odt's transformer with the model's weights. What HF lacks (a Gaussian head's log-std layer)
    starts as a fresh odt model's would, seeded by ``seed``."""
    c = m.config
    if action_head == "gaussian":
        raise ConfigError("--action-head gaussian would act with the mean unsquashed; the Hugging Face model's action "
                          "is tanh of it: use tanh_gaussian (the default of --algo odt) or deterministic")
    spec = ModelSpec(obs_dim=c["state_dim"], act_dim=c["act_dim"], embed_dim=c["hidden_size"], n_layer=c["n_layer"],
                     n_head=c["n_head"], dropout=float(c["resid_pdrop"]), context_len=context_len,
                     timestep_embedding=True, max_ep_len=c["max_ep_len"], action_head=action_head,
                     log_std_min=log_std_min, log_std_max=log_std_max)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DecisionTransformer(spec)
    w, where = m.weights, m.weights_file.name
    pairs = _pairs(spec.n_layer, "linear" if action_head == "deterministic" else "mu")
    mapped = {"embed_timestep.weight", "encoder.wpe.weight", *(hf for _, hf, _ in pairs)}
    missing = sorted(mapped - set(w))
    if missing:
        raise ConfigError(f"{where} of {m.path} has no {missing[0]}; is it a DecisionTransformerModel's, with "
                          f"config.json's n_layer {spec.n_layer}?")
    extra = sorted(k for k in set(w) - mapped - set(DROPPED) if not k.endswith((".attn.bias", ".attn.masked_bias")))
    if extra:
        raise ConfigError(f"{where} of {m.path} holds {extra[0]}, which has no place in odt's transformer")
    own = model.state_dict()
    expected = {hf: (own[odt].t() if conv else own[odt]).shape for odt, hf, conv in pairs}
    expected["embed_timestep.weight"] = own["embed_timestep.weight"].shape
    for hf, shape in expected.items():
        if w[hf].shape != shape:
            raise ConfigError(f"{where} of {m.path}: {hf} has shape {tuple(w[hf].shape)}, but config.json's sizes "
                              f"give {tuple(shape)}")
    wpe = w["encoder.wpe.weight"]
    if wpe.ndim != 2 or wpe.shape[1] != spec.embed_dim:
        raise ConfigError(f"{where} of {m.path}: encoder.wpe.weight has shape {tuple(wpe.shape)}, but config.json's "
                          f"sizes give (n_positions, {spec.embed_dim})")
    state = {odt: w[hf].t() if conv else w[hf] for odt, hf, conv in pairs}
    state["embed_ln.bias"] = w["embed_ln.bias"] + w["encoder.wpe.weight"][0]
    state["embed_timestep.weight"] = w["embed_timestep.weight"]
    model.load_state_dict({**own, **state})
    return model.eval()


def setting(m: HFModel, key: str, given=None, flag: str | None = None):
    """What a policy needs beyond the weights (state_mean, state_std, return_scale, context_length,
    target_return, env_id): ``given`` (what a flag gave) if any, else config.json's key; neither:
    one line naming the key and the flag."""
    if given is not None:
        return given
    if key in m.config and m.config[key] is not None:
        return _checked(m, key, m.config[key])
    how = f" or give {flag}" if flag else " (what the model was trained with: no flag can know it)"
    raise ConfigError(f"{m.path / 'config.json'} has no {key}; add it there{how}")


def _checked(m: HFModel, key: str, value):
    c, where = m.config, m.path / "config.json"
    if key in ("state_mean", "state_std"):
        ok = isinstance(value, list) and len(value) == c["state_dim"] and all(
            isinstance(v, (int, float)) and math.isfinite(v) and (key == "state_mean" or v > 0) for v in value)
        need = f"a list of state_dim = {c['state_dim']} {'positive ' if key == 'state_std' else ''}numbers"
    elif key in ("context_length", "odt_context_len"):
        ok, need = isinstance(value, int) and not isinstance(value, bool) and value > 0, "a positive integer"
    elif key == "env_id":
        ok, need = isinstance(value, str) and bool(value), "a Gymnasium environment id"
    else:
        positive = key == "return_scale"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok, need = ok and (not positive or value > 0), f"a {'positive ' if positive else ''}number"
    if not ok:
        raise ConfigError(f"{where}: {key} must be {need}, got {json.dumps(value)[:80]}")
    return value


def normalizer(m: HFModel) -> tuple[np.ndarray, np.ndarray]:
    """state_mean and state_std: the model's inputs are (state - mean) / std, and no flag can know them."""
    return tuple(np.asarray(setting(m, key), np.float32) for key in ("state_mean", "state_std"))


def policy_parts(path, device: str = "cpu", rtg_scale: float | None = None, context: int | None = None) -> tuple:
    """``Policy``'s arguments from a model directory: the model (deterministic head: HF's action),
    the normalizer, the action box (HF's actions are the environment's own: the identity), the
    returns-to-go scale and the acting window; rtg_scale and context override config.json's."""
    m = read(path)
    rtg_scale = setting(m, "return_scale", rtg_scale, "Policy.load(..., rtg_scale=...)")
    context = setting(m, "context_length", context, "Policy.load(..., context=...)")
    mean, std = normalizer(m)
    model = build(m, "deterministic", context_len=context).to(device)
    ones = np.ones(m.config["act_dim"], np.float32)
    return model, mean, std, -ones, ones, float(rtg_scale), int(context)


def check_env(m: HFModel, env_id: str) -> None:
    """The environment the model is to act in: its dimensions, and actions in [-1, 1] (the model's
    tanh acts in the environment's own units)."""
    env = make_env_checked(env_id)
    low, high = env.action_space.low, env.action_space.high
    dims = (env.observation_space.shape[0], env.action_space.shape[0])
    env.close()
    if dims != (m.config["state_dim"], m.config["act_dim"]):
        raise ConfigError(f"{m.path} is a model for state/action dimensions {m.config['state_dim']}/"
                          f"{m.config['act_dim']}, but {env_id} has {dims[0]}/{dims[1]}")
    if not (np.allclose(low, -1) and np.allclose(high, 1)):
        raise ConfigError(f"{m.path} acts in [-1, 1] (tanh) in the environment's own units, but {env_id}'s action "
                          "bounds are not [-1, 1]; odt cannot map its actions")


def _given(args: list[str], name: str) -> bool:
    flag = "--" + name.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") for a in args)


@contextlib.contextmanager
def finetune_init(cfg: Config, init: Path | None, args: list[str]):
    """`odt finetune --init`: an odt run as it is; a Hugging Face model directory as an odt
    checkpoint (what --init reads) in a temporary directory, and ``cfg`` takes its architecture and
    config.json's settings where the command line gave no flag. No optimizer state comes with it:
    the optimizers, the warmup and lambda start afresh (--restart-optimizers)."""
    if init is None or not is_model_dir(init):
        yield init
        return
    m = read(init)
    for key, name, flag in (("env_id", "env", "--env"), ("return_scale", "rtg_scale", "--rtg-scale"),
                            ("context_length", "eval_context", "--eval-context"),
                            ("target_return", "g_eval", "--g-eval")):
        setattr(cfg, name, setting(m, key, getattr(cfg, name) if _given(args, name) else None, flag))
    obs_mean, obs_std = normalizer(m)
    # The training window: --context-len where given; else what the model was trained with (odt's
    # export records it as odt_context_len; HF's own models train with context_length); else the preset's.
    key = "odt_context_len" if "odt_context_len" in m.config else "context_length"
    trained = None if _given(args, "context_len") else m.config.get(key)
    context_len = cfg.context_len if trained is None else _checked(m, key, trained)
    model = build(m, cfg.resolved_action_head(), context_len, cfg.seed, cfg.log_std_min, cfg.log_std_max)
    spec = dataclasses.asdict(model.spec)
    for name in ("embed_dim", "n_layer", "n_head", "context_len", "timestep_embedding", "max_ep_len"):
        setattr(cfg, name, spec[name])  # before setup validates the config, as the checkpoint fixes them
    check_env(m, cfg.env)
    cfg.restart_optimizers = True
    ones = torch.ones(spec["act_dim"])
    state = {"learner": {"model": model.state_dict(), "log_lambda": torch.tensor(math.log(cfg.init_lambda)),
                         "updates": 0},
             "spec": spec, "obs_mean": torch.as_tensor(obs_mean), "obs_std": torch.as_tensor(obs_std),
             "act_low": -ones, "act_high": ones, "extra": {}}
    with tempfile.TemporaryDirectory(prefix="odt-hf-") as tmp:
        run = Path(tmp) / Path(init).resolve().name
        (run / "checkpoints").mkdir(parents=True)
        torch.save(state, run / "checkpoints" / "pretrained.pt")
        yield run


def to_hf(model: DecisionTransformer, obs_mean, obs_std, rtg_scale: float, context: int, target_return: float,
          env_id: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json and the weights of a DecisionTransformerModel that computes ``model``'s mean action."""
    spec = model.spec
    if spec.action_head == "gaussian":
        raise ConfigError("the action head gaussian (its mean, clipped to [-1, 1]) has no counterpart in Hugging "
                          "Face's DecisionTransformerModel (tanh of the action, or no squashing and no clip)")
    d, sd = spec.embed_dim, model.state_dict()
    head = "linear" if spec.action_head == "deterministic" else "mu"
    w = {hf: sd[odt].t() if conv else sd[odt] for odt, hf, conv in _pairs(spec.n_layer, head)}
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
    low, high = state["act_low"].cpu().numpy(), state["act_high"].cpu().numpy()
    if not (np.allclose(low, -1) and np.allclose(high, 1)):
        raise ConfigError(f"{cfg.env}'s action bounds are not [-1, 1]: odt rescales its actions, which Hugging "
                          "Face's DecisionTransformerModel cannot (use --format torchscript or onnx)")
    if out.is_dir() and any(out.iterdir()) and not is_model_dir(out):
        raise ConfigError(f"--out {out} is a directory that holds no model; odt export replaces only a model "
                          "directory: give a new --out")
    config, weights = to_hf(models[0], state["obs_mean"].cpu().numpy(), state["obs_std"].cpu().numpy(),
                            cfg.rtg_scale, cfg.eval_context, cfg.g_eval, cfg.env)
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
    rows = []
    for name, what in (("offline", "after pretraining"), ("final", "after finetuning"), ("best", "best evaluation")):
        s = summary.get(name)
        if s and "return_mean" in s:
            std = f" +- {s['return_std']:.1f}" if "return_std" in s else ""
            norm = f"{s['normalized_mean']:.1f}" if "normalized_mean" in s else "-"
            rows.append(f"| {name} ({what}) | {s.get('updates', '-')} | {s.get('online_steps', '-')} | "
                        f"{s['return_mean']:.1f}{std} | {norm} | {s.get('episodes', '-')} |")
    scores = ("| evaluation | updates | online steps | return (mean +- std) | normalized | episodes |\n"
              "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows)) if rows else \
        "The run has no summary.json (it did not finish), so no scores are recorded."
    command = summary.get("command") or "(not recorded: the run has no summary.json)"
    critics = " (its TD3 critics are not part of it)" if cfg.td3 else ""
    head = (f"the deterministic actor's action{critics}" if cfg.resolved_action_head() == "deterministic" else
            "the stochastic actor's mean action, tanh of its mean (the log-std layer "
            f"{'and the TD3 critics are' if cfg.td3 else 'is'} not part of it)")
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

{scores}

Returns are undiscounted episode returns at the target return `target_return` (mean actions);
normalized scores are D4RL's (0 random, 100 expert) where the environment has a reference.

## Using it

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

