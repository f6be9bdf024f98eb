"""Hugging Face's DecisionTransformerModel in and out of odt (odt.hf): odt acts as transformers does
over whole Hopper-v5 episodes, finetunes a model directory, exports one that transformers loads
and odt loads back exactly, and refuses in one line what cannot map. Models have random weights,
made here: nothing is downloaded."""
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from odt import Policy
from odt.cli import main
from odt.config import Config, ConfigError
from odt.models.transformer import DecisionTransformer, ModelSpec
from odt.policy import load_models

transformers = pytest.importorskip("transformers")
from transformers import DecisionTransformerConfig, DecisionTransformerModel  # noqa: E402

transformers.utils.logging.disable_progress_bar()  # its bars on stderr would mix with odt's one-line errors
transformers.utils.logging.set_verbosity_error()

C = 5  # the acting window: the Hopper episodes below outlive it, so it slides


def make_hf_dir(path: Path, weights: str = "safetensors", seed: int = 0, **overrides) -> Path:
    """A DecisionTransformerModel with random weights (biases and LayerNorms too, and wpe: the
    mapping of every one of them matters), saved as transformers saves it, with odt's keys."""
    rng = np.random.default_rng(seed)
    settings = dict(state_dim=11, act_dim=3, hidden_size=64, n_layer=2, n_head=2, max_ep_len=1000,
                    bos_token_id=None, eos_token_id=None, state_mean=rng.normal(size=11).tolist(),
                    state_std=rng.uniform(0.5, 2.0, 11).tolist(), return_scale=1000.0, context_length=C,
                    target_return=3600.0, env_id="Hopper-v5")
    torch.manual_seed(seed)
    model = DecisionTransformerModel(DecisionTransformerConfig(**settings))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(path)
    if weights == "bin":  # the older format: a state dict, which odt reads with weights_only
        (path / "model.safetensors").unlink()
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    if overrides:
        edit_config(path, **overrides)
    return path


def edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (path / "config.json").write_text(json.dumps(cfg))


def get_action(model, states, actions, rewards, returns_to_go, timesteps, max_length):
    """transformers' own example (docs: Decision Transformer, `get_action`), with the window given
    as an argument: transformers 5 keeps no max_length in the model's config."""
    states = states.reshape(1, -1, model.config.state_dim)
    actions = actions.reshape(1, -1, model.config.act_dim)
    returns_to_go = returns_to_go.reshape(1, -1, 1)
    timesteps = timesteps.reshape(1, -1)
    states = states[:, -max_length:]
    actions = actions[:, -max_length:]
    returns_to_go = returns_to_go[:, -max_length:]
    timesteps = timesteps[:, -max_length:]
    # pad all tokens to sequence length
    attention_mask = torch.cat([torch.zeros(max_length - states.shape[1]), torch.ones(states.shape[1])])
    attention_mask = attention_mask.to(dtype=torch.long).reshape(1, -1)
    states = torch.cat([torch.zeros((1, max_length - states.shape[1], model.config.state_dim)), states],
                       dim=1).float()
    actions = torch.cat([torch.zeros((1, max_length - actions.shape[1], model.config.act_dim)), actions],
                        dim=1).float()
    returns_to_go = torch.cat([torch.zeros((1, max_length - returns_to_go.shape[1], 1)), returns_to_go],
                              dim=1).float()
    timesteps = torch.cat([torch.zeros((1, max_length - timesteps.shape[1]), dtype=torch.long), timesteps], dim=1)
    _, action_preds, _ = model(states=states, actions=actions, rewards=rewards, returns_to_go=returns_to_go,
                               timesteps=timesteps, attention_mask=attention_mask, return_dict=False)
    return action_preds[0, -1]


def episode_both(policy, model, seed=0, max_steps=1000):
    """One whole Hopper-v5 episode driven by odt's ``policy``; at every step transformers' ``model``
    acts too, fed as its example feeds it (its own history, its own actions). Both sequences."""
    c = model.config
    mean, std = torch.tensor(c.state_mean).float(), torch.tensor(c.state_std).float()
    scale, target = c.return_scale, c.target_return
    env = gym.make(c.env_id)
    obs, _ = env.reset(seed=seed)
    policy.reset(target)
    states = torch.from_numpy(obs).reshape(1, c.state_dim).float()
    actions, rewards = torch.zeros((0, c.act_dim)), torch.zeros(0)
    rtg, timesteps = torch.tensor(target / scale).reshape(1, 1), torch.tensor(0).reshape(1, 1)
    ours, theirs, reward = [], [], None
    for t in range(max_steps):
        a = policy.act(obs, reward)
        actions = torch.cat([actions, torch.zeros((1, c.act_dim))], dim=0)
        rewards = torch.cat([rewards, torch.zeros(1)])
        with torch.no_grad():
            b = get_action(model, (states - mean) / std, actions, rewards, rtg, timesteps, c.context_length)
        actions[-1] = b
        ours.append(a), theirs.append(b.numpy())
        obs, reward, terminated, truncated, _ = env.step(a)
        states = torch.cat([states, torch.from_numpy(obs).reshape(1, c.state_dim).float()], dim=0)
        rewards[-1] = reward
        rtg = torch.cat([rtg, (rtg[0, -1] - reward / scale).reshape(1, 1)], dim=1)
        timesteps = torch.cat([timesteps, torch.ones((1, 1)).long() * (t + 1)], dim=1)
        if terminated or truncated:
            break
    env.close()
    return np.array(ours), np.array(theirs)


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_odt_acts_as_transformers_over_a_whole_episode(weights, tmp_path):
    path = make_hf_dir(tmp_path / "hf", weights)
    ours, theirs = episode_both(Policy.load(path), DecisionTransformerModel.from_pretrained(path).eval())
    assert len(ours) > 2 * C  # the window slid
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.abs(np.diff(ours, axis=0)).max() > 1e-3  # the actions move, so the comparison means something


def test_missing_keys_come_from_flags_or_are_named(tmp_path, capsys):
    path = make_hf_dir(tmp_path / "hf", return_scale=None, context_length=None, env_id=None)
    with pytest.raises(ConfigError, match="no return_scale.*rtg_scale="):
        Policy.load(path)
    full = Policy.load(make_hf_dir(tmp_path / "full"))
    given = Policy.load(path, rtg_scale=1000.0, context=C)
    assert (given.rtg_scale, given.context) == (full.rtg_scale, full.context) == (1000.0, C)
    # odt eval: one line naming the key and the flag, exit 2; with the flags it runs.
    assert main(["eval", "--run", str(path), "--episodes", "1", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "env_id" in err and "--env" in err and "\n" not in err and "Traceback" not in err
    assert main(["eval", "--run", str(path), "--episodes", "2", "--threads", "1", "--json", "--env", "Hopper-v5",
                 "--rtg-scale", "1000", "--eval-context", str(C), "--seed", "7"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["env"], res["target"], res["episodes"]) == ("Hopper-v5", 3600.0, 2) and "normalized_mean" in res
    # The same run from the complete directory's config.json gives the same returns.
    assert main(["eval", "--run", str(tmp_path / "full"), "--episodes", "2", "--threads", "1", "--json",
                 "--seed", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["return_mean"] == res["return_mean"]
    # An environment of other dimensions: one line, no rollout.
    assert main(["eval", "--run", str(path), "--env", "MountainCarContinuous-v0", "--rtg-scale", "1000",
                 "--eval-context", str(C)]) == 2
    err = capsys.readouterr().err.strip()
    assert "state/action dimensions" in err and "\n" not in err
    edit_config(path, state_std=None)
    with pytest.raises(ConfigError, match="no state_std"):
        Policy.load(path, rtg_scale=1000.0, context=C)
    # odt eval's flags that read an odt run's own files are refused, not ignored.
    assert main(["eval", "--run", str(tmp_path / "full"), "--checkpoint", "best"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_finetune_from_a_model_directory(tmp_path, hopper_npz, capsys):
    path = make_hf_dir(tmp_path / "hf")
    out = tmp_path / "ft"
    assert main(["finetune", "--init", str(path), "--algo", "odt", "--preset", "cpu-small", "--dataset",
                 str(hopper_npz), "--out", str(out), "--online-steps", "200", "--updates-per-round", "3",
                 "--episodes-per-round", "1", "--eval-every", "2", "--eval-episodes", "2", "--batch-size", "8",
                 "--threads", "1", "--precision", "fp32", "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["init"] == str(path) and cfg["algo"] == "odt" and cfg["restart_optimizers"]
    assert (cfg["embed_dim"], cfg["n_layer"], cfg["n_head"], cfg["timestep_embedding"]) == (64, 2, 2, True)
    assert (cfg["rtg_scale"], cfg["eval_context"], cfg["context_len"], cfg["g_eval"], cfg["env"]) == \
        (1000.0, C, C, 3600.0, "Hopper-v5")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in rows if r.get("event") == "round"]
    assert rounds and rounds[-1]["online_steps"] >= 200 and rounds[-1]["updates"] == 3 * len(rounds)
    state = load_models(out, "final")[1]
    np.testing.assert_array_equal(state["scaling"]["obs_mean"].numpy(), np.float32(json.loads(
        (path / "config.json").read_text())["state_mean"]))
    # Before its first update the finetuning run's policy is the model's: its first evaluation
    # (seed 1000000, mean actions at g_eval) returns what `odt eval` of the directory returns.
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--run", str(path), "--episodes", "2", "--threads", "1", "--json", "--seed", "1000000"]) == 0
    assert json.loads(capsys.readouterr().out)["return_mean"] == pytest.approx(summary["offline"]["return_mean"],
                                                                               rel=1e-9)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, hopper_npz):
    """A short odt run of cpu-small's shape (128 wide, 3 layers, 1 head; no timestep embedding)."""
    out = tmp_path_factory.mktemp("hf-export") / "run"
    assert main(["pretrain", "--preset", "cpu-small", "--dataset", str(hopper_npz), "--out", str(out),
                 "--pretrain-updates", "10", "--batch-size", "8", "--eval-episodes", "1", "--threads", "1",
                 "--no-progress"]) == 0
    return out


def test_export_loads_in_transformers_and_back_in_odt(run_dir, tmp_path):
    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(out)]) == 2  # exists: --overwrite replaces it
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(out), "--overwrite"]) == 0
    assert main(["export", str(out), "--format", "hf", "--out", str(tmp_path / "again")]) == 2  # not a run
    model, info = DecisionTransformerModel.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # every weight in its place, none missing or left over
    run_cfg = Config.load(run_dir / "config.json")
    c, state = model.config, load_models(run_dir, "final")[1]
    assert (c.hidden_size, c.n_layer, c.n_head, c.context_length, c.return_scale, c.target_return, c.env_id) == \
        (128, 3, 1, run_cfg.eval_context, run_cfg.rtg_scale, run_cfg.g_eval, "Hopper-v5")
    np.testing.assert_array_equal(np.float32(c.state_mean), state["scaling"]["obs_mean"].numpy())

    # transformers' model acts as odt's policy (its mean action) over a whole episode.
    ours, theirs = episode_both(Policy.load(run_dir), model.eval())
    assert len(ours) > 2 * c.context_length
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    assert np.abs(np.diff(ours, axis=0)).max() > 1e-3

    # odt loads its own export back exactly: the same weights, the same actions.
    back = Policy.load(out)
    original = load_models(run_dir, "final")[0][0]
    mine = back.model.state_dict()
    for name, value in original.state_dict().items():
        name = name.replace("head.mu.", "head.linear.")
        if not name.startswith("head.log_std"):
            assert torch.equal(mine[name], value), name
    assert not mine["embed_timestep.weight"].any()  # no timestep embedding: zeros, exactly
    a, b = episode_both(back, model.eval())[0], ours
    np.testing.assert_array_equal(a, b)
    # The training window travels too (context_length is the acting one): a finetuning of the export
    # trains on the run's window, not on its acting window.
    assert json.loads((out / "config.json").read_text())["odt_context_len"] == run_cfg.context_len != c.context_length
    from odt import hf
    cfg = Config.load(run_dir / "config.json")
    init = hf.finetune_start(cfg, out, [])
    assert init is not None and cfg.context_len == run_cfg.context_len and cfg.eval_context == c.context_length

    card = (out / "README.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["command"] in card and str(run_cfg.dataset) in card and "huggingface-cli upload" in card
    assert f"{summary['offline']['return_mean']:.1f}" in card


def test_a_timestep_embedding_and_a_deterministic_head_export_exactly(tmp_path):
    """The mapping alone, for the parts cpu-small lacks: learned timesteps and dt's head."""
    from odt import hf_export
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = DecisionTransformer(ModelSpec(obs_dim=11, act_dim=3, embed_dim=32, n_layer=2, n_head=4, dropout=0.0,
                                          timestep_embedding=True, max_ep_len=100, action_head="deterministic")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    config, weights = hf_export.to_hf(model, np.zeros(11), np.ones(11), 1000.0, 4, 3600.0, "Hopper-v5")
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(weights, str(tmp_path / "model.safetensors"))
    theirs = DecisionTransformerModel.from_pretrained(tmp_path).eval()
    B, T = 2, 4
    states, actions, rtg = torch.randn(B, T, 11), torch.rand(B, T, 3) * 2 - 1, torch.randn(B, T, 1)
    timesteps = torch.randint(0, 100, (B, T))
    with torch.no_grad():
        ref = theirs(states=states, actions=actions, returns_to_go=rtg, timesteps=timesteps).action_preds
        np.testing.assert_allclose(model(rtg, states, actions, timesteps).numpy(), ref.numpy(), atol=1e-5)
        back = Policy.load(tmp_path).model
        assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


def test_export_refuses_what_transformers_cannot_compute(tmp_path):
    from odt import hf_export as hf

    model = DecisionTransformer(ModelSpec(obs_dim=11, act_dim=3, embed_dim=16, n_layer=1, action_head="gaussian"))
    with pytest.raises(ConfigError, match="gaussian"):
        hf.to_hf(model, np.zeros(11), np.ones(11), 1000.0, 4, 3600.0, "Hopper-v5")
    state = {"scaling": {"act_low": -torch.ones(3), "act_high": torch.ones(3), "obs_mean": torch.zeros(11),
                         "obs_std": torch.ones(11), "discrete": False}}
    with pytest.raises(ConfigError, match="ensemble of 2"):
        hf.export_run(tmp_path, Config(), [model, model], state, tmp_path / "final.pt", tmp_path / "out")
    state["scaling"]["act_high"] = 2 * torch.ones(3)
    with pytest.raises(ConfigError, match="action bounds"):
        hf.export_run(tmp_path, Config(), [model], state, tmp_path / "final.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    state["scaling"]["act_high"] = torch.ones(3)
    with pytest.raises(ConfigError, match="holds no model"):  # --overwrite replaces a model directory only
        hf.export_run(tmp_path, Config(), [model], state, tmp_path / "final.pt", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


class NotATensor:  # a pickled object: torch.load(weights_only=True) must refuse it
    pass


def _bad(case: str, path: Path) -> None:
    if case.startswith("config:"):
        key, value = case[len("config:"):].split("=")
        edit_config(path, **{key: json.loads(value)})
    elif case == "no weights":
        (path / "model.safetensors").unlink()
    elif case == "truncated weights":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[:len(data) // 2])
    elif case == "pickled code":
        (path / "model.safetensors").unlink()
        torch.save({"x": NotATensor()}, path / "pytorch_model.bin")
    elif case == "config not JSON":
        (path / "config.json").write_text("{not json")
    elif case == "weights of another size":
        edit_config(path, hidden_size=32, n_head=1)


@pytest.mark.parametrize("case,needle", [
    ("config:activation_function=\"gelu\"", "activation_function"),
    ("config:n_inner=192", "n_inner"),
    ("config:scale_attn_by_inverse_layer_idx=true", "scale_attn_by_inverse_layer_idx"),
    ("config:reorder_and_upcast_attn=true", "reorder_and_upcast_attn"),
    ("config:attn_pdrop=0.2", "attn_pdrop"),
    ("config:action_tanh=false", "action_tanh"),
    ("config:layer_norm_epsilon=1e-6", "layer_norm_epsilon"),
    ("config:model_type=\"gpt2\"", "not a Decision Transformer"),
    ("config:state_mean=[1, 2]", "state_mean"),
    ("no weights", "no weights file"),
    ("truncated weights", "cannot read"),
    ("pickled code", "could run code"),
    ("config not JSON", "cannot read"),
    ("weights of another size", "shape"),
])
def test_what_cannot_map_is_refused_in_one_line(case, needle, tmp_path, hopper_npz, capsys):
    path = make_hf_dir(tmp_path / "hf")
    _bad(case, path)
    for argv in (["eval", "--run", str(path), "--episodes", "1"],
                 ["finetune", "--init", str(path), "--preset", "cpu-small", "--dataset", str(hopper_npz),
                  "--out", str(tmp_path / "ft")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "ft").exists()  # nothing written


def test_export_help_names_the_hf_format(capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", "--help"])
    assert e.value.code == 0
    assert "hf" in capsys.readouterr().out


@pytest.mark.parametrize("flags,needle", [
    (["--embed-dim", "128"], "--embed-dim 128 contradicts the pretrained model"),
    (["--n-layer=1"], "--n-layer 1 contradicts"),
    (["--no-timestep-embedding"], "--timestep-embedding False contradicts"),
])
def test_a_flag_the_model_directory_contradicts_is_refused(flags, needle, tmp_path, hopper_npz, capsys):
    """The model's architecture (64 wide, 2 layers, a timestep embedding) replaces the preset's, but
    never a flag the user gave: that is refused, not overridden unsaid."""
    path = make_hf_dir(tmp_path / "hf")
    assert main(["finetune", "--init", str(path), "--preset", "cpu-small", "--dataset", str(hopper_npz),
                 "--out", str(tmp_path / "ft"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err, err
    assert not (tmp_path / "ft").exists()
