"""Shipped pretrained models (odt:NAME): each still scores what its card says, and every command that
takes a run directory takes it."""
import json

import numpy as np
import pytest
import torch

from odt import shipped
from odt.cli import main
from odt.config import ConfigError
from odt.envs.make import make_vector_env
from odt.following import evaluate_target
from odt.policy import Policy, load_policy
from odt.scores import return_stats

NAMES = shipped.names()


def test_the_recommended_presets_ship_a_model_within_10_mb():
    assert {"cpu-vidt", "cpu-small"} <= set(NAMES)
    for name in NAMES:
        card = shipped.card(name)
        assert (shipped.MODELS / f"{name}.safetensors").stat().st_size <= 10 * 2**20
        assert card["preset"] == name and card["command"].startswith("python -m odt.ship ")
        assert card["offline"]["episodes"] == 50 and card["version"]["odt"]


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_model_scores_its_cards_offline_score(name):
    """Re-evaluated as the card was (50 episodes, its seed, one thread): a change that breaks the
    model, its loading or the policy's acting moves the score past the card's standard error."""
    card = shipped.card(name)["offline"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        policy = load_policy(shipped.resolve(f"odt:{name}"), "final")
        envs = make_vector_env(shipped.card(name)["env"], card["episodes"])
        res, _ = evaluate_target(policy, envs, card["target"], card["seed"], None)
        envs.close()
    finally:
        torch.set_num_threads(threads)
    stats = return_stats(shipped.card(name)["env"], res.returns)
    assert abs(stats["normalized_mean"] - card["normalized_mean"]) <= card["normalized_se"], (stats, card)


def test_packing_keeps_every_entry_of_a_checkpoint(tmp_path):
    """The safetensors file and its JSON skeleton give back the checkpoint: int-keyed optimizer
    states, tuples, scalars and tensors alike."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], betas=(0.8, 0.9))
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = {"learner": {"optimizer": opt.state_dict(), "updates": 7, "lr_scale": 0.5, "td3": None},
             "spec": {"embed_dim": 8, "action_head": "tanh"}, "obs_mean": torch.arange(4.0), "extra": {"n": [1, 2]}}
    shipped.pack(state, tmp_path / "m.safetensors")
    back = shipped.unpack(tmp_path / "m.safetensors")
    assert back["learner"]["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    assert list(back["learner"]["optimizer"]["state"]) == [0]
    torch.testing.assert_close(back["learner"]["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert back["learner"]["updates"] == 7 and back["learner"]["td3"] is None and back["extra"] == {"n": [1, 2]}
    torch.testing.assert_close(back["obs_mean"], torch.arange(4.0))


def test_every_command_that_takes_a_run_takes_a_shipped_name(tmp_path, capsys):
    policy = Policy.load("odt:cpu-vidt")
    obs = np.zeros(policy.model.spec.obs_dim, np.float32)
    policy.reset(3600.0)
    assert policy.act(obs).shape == (policy.model.spec.act_dim,)
    assert main(["eval", "--run", "odt:cpu-small", "--episodes", "2", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 2 and np.isfinite(out["return_mean"])
    assert main(["export", "odt:cpu-vidt", "--out", str(tmp_path / "p.pt")]) == 0
    assert (tmp_path / "p.pt").stat().st_size > 0
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    assert "[pretrained: odt:cpu-vidt]" in listing and "[pretrained: odt:cpu-small]" in listing


def test_an_unknown_shipped_name_lists_the_shipped_ones(capsys):
    assert main(["eval", "--run", "odt:nothing"]) == 2
    err = capsys.readouterr().err
    assert "no shipped model odt:nothing" in err and "odt:cpu-vidt" in err and "\n" not in err.strip()
    with pytest.raises(ConfigError, match="no shipped model"):
        Policy.load("odt:nothing")


def test_finetuning_a_shipped_vidt_model_skips_the_critic_warm_up_it_carries(tmp_path):
    """Its critics were warmed up before it shipped: the 7000 critic-only updates are not repeated,
    and the finetuning starts from the card's actor."""
    out = tmp_path / "ft"
    assert main(["finetune", "--init", "odt:cpu-vidt", "--preset", "cpu-vidt", "--online-steps", "60",
                 "--episodes-per-round", "1", "--updates-per-round", "2", "--eval-episodes", "1",
                 "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["critic_pretrain_updates"] == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert not any(r.get("event") == "critic_pretrained" for r in rows)
    assert "initialised from" in (out / "run.log").read_text()


def test_what_a_shipped_model_fixes_is_honoured_and_recorded_unless_a_flag_says_otherwise():
    """A setting the model fixes replaces the preset's (config.json records it); one the user gave
    otherwise is refused. The critic warm-up counts as done for the algorithm the run becomes."""
    from odt.checkpoint import load_from_run
    from odt.config import preset
    from odt.run import Start
    from odt.setup import _from_checkpoint

    source = shipped.resolve("odt:cpu-vidt")
    state = load_from_run(source, "pretrained")[0]
    cfg = preset("cpu-small")  # algo odt, a stochastic actor: the model's is deterministic, with critics
    cfg.critic_pretrain_updates, cfg.critic_hidden = 9000, 64
    fixed = _from_checkpoint(cfg, Start("init", source, state))
    assert fixed["algo"] == "vidt" and fixed["embed_dim"] == state["spec"]["embed_dim"]
    assert fixed["critic_hidden"] == state["ensemble"]["learners"][0]["td3"]["critic"]["q1.0.weight"].shape[0]
    assert fixed["critic_pretrain_updates"] == 9000 - int(state["run"]["critic_pretrained"])
    for given, needle in [({"algo"}, "--algo odt contradicts"), ({"critic_hidden"}, "--critic-hidden 64 contradicts")]:
        with pytest.raises(ConfigError, match=needle):
            _from_checkpoint(cfg, Start("init", source, state, given=frozenset(given)))
