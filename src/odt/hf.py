"""Hugging Face's ``transformers.DecisionTransformerModel`` into odt (docs/huggingface.md; out of
odt: hf_export.py).

``Policy.load(DIR)``, ``odt eval --run DIR`` and ``odt finetune --init DIR`` take a model
directory (config.json, and model.safetensors or pytorch_model.bin). Nothing here imports transformers: the
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

import dataclasses
import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError

from .checkpoint import networks_state
from .config import Config, ConfigError
from .envs.make import action_width, make_env_checked, obs_width
from .models.transformer import DecisionTransformer, ModelSettings, ModelSpec
from .run import Start, given_settings, refuse_contradicted
from .scaling import Scaling

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


def weight_pairs(n_layer: int, head: str) -> list[tuple[str, str, bool]]:
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


def build(m: HFModel, action_head: str, context_len: int, seed: int, log_std: tuple[float, float]) -> DecisionTransformer:
    """odt's transformer with the model's weights. What HF lacks (a Gaussian head's log-std layer,
    bounded by ``log_std``) starts as a fresh odt model's would, seeded by ``seed``."""
    c = m.config
    if action_head == "gaussian":
        raise ConfigError("--action-head gaussian would act with the mean unsquashed; the Hugging Face model's action "
                          "is tanh of it: use tanh_gaussian (the default of --algo odt) or deterministic")
    spec = ModelSpec(obs_dim=c["state_dim"], act_dim=c["act_dim"], embed_dim=c["hidden_size"], n_layer=c["n_layer"],
                     n_head=c["n_head"], dropout=float(c["resid_pdrop"]), context_len=context_len,
                     timestep_embedding=True, max_ep_len=c["max_ep_len"], action_head=action_head,
                     log_std_min=log_std[0], log_std_max=log_std[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DecisionTransformer(spec)
    w, where = m.weights, m.weights_file.name
    pairs = weight_pairs(spec.n_layer, "linear" if action_head == "deterministic" else "mu")
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
    # HF's own head is deterministic: no log-std bounds apply, the settings' defaults stand in.
    model = build(m, "deterministic", context, 0, (ModelSettings.log_std_min, ModelSettings.log_std_max)).to(device)
    ones = np.ones(m.config["act_dim"], np.float32)
    return model, Scaling(mean, std, -ones, ones), float(rtg_scale), int(context)


def check_env(m: HFModel, env_id: str) -> None:
    """The environment the model is to act in: its dimensions, and actions in [-1, 1] (the model's
    tanh acts in the environment's own units)."""
    env = make_env_checked(env_id)
    space = env.action_space
    dims = (obs_width(env.observation_space), action_width(space))
    env.close()
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"{m.path} predicts continuous actions, and {env_id}'s are {space}; give an environment "
                          "with continuous actions")
    low, high = space.low, space.high
    if dims != (m.config["state_dim"], m.config["act_dim"]):
        raise ConfigError(f"{m.path} is a model for state/action dimensions {m.config['state_dim']}/"
                          f"{m.config['act_dim']}, but {env_id} has {dims[0]}/{dims[1]}")
    if not (np.allclose(low, -1) and np.allclose(high, 1)):
        raise ConfigError(f"{m.path} acts in [-1, 1] (tanh) in the environment's own units, but {env_id}'s action "
                          "bounds are not [-1, 1]; odt cannot map its actions")


def _given(args: list[str], name: str) -> bool:
    flag = "--" + name.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") for a in args)


def finetune_start(cfg: Config, init: Path, args: list[str]) -> Start:
    """`odt finetune --init DIR` of a Hugging Face model directory: the model as an odt checkpoint,
    in memory, and ``cfg`` takes its architecture and config.json's settings where the command
    line gave no flag. No optimizer state comes with it: the optimizers, the warmup and lambda
    start afresh (--restart-optimizers)."""
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
    model = build(m, cfg.resolved_action_head(), context_len, cfg.seed, (cfg.log_std_min, cfg.log_std_max))
    spec = dataclasses.asdict(model.spec)
    fixed = {name: spec[name] for name in ("embed_dim", "n_layer", "n_head", "timestep_embedding", "max_ep_len")}
    refuse_contradicted(cfg, fixed, given_settings(args), init)
    for name, value in {**fixed, "context_len": context_len}.items():
        setattr(cfg, name, value)  # before setup validates the config, as the checkpoint fixes them
    check_env(m, cfg.env)
    cfg.restart_optimizers = True
    ones = np.ones(spec["act_dim"], np.float32)
    learner = {"model": model.state_dict(), "log_lambda": torch.tensor(math.log(cfg.init_lambda)), "updates": 0}
    return Start("init", Path(init), networks_state(spec, Scaling(obs_mean, obs_std, -ones, ones).state_dict(), [learner]))
