"""Loading never executes code from a file: checkpoints with weights_only, datasets without pickle."""
import os

import numpy as np
import pytest
import torch

from odt.cli import main
from odt.config import Config, ConfigError


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this runs a shell command
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_in_place_of_a_checkpoint_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    Config().save(run / "config.json")
    marker = tmp_path / "pwned"
    torch.save({"learner": _Payload(marker)}, run / "checkpoints" / "final.pt")
    assert main(["eval", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and len(err.strip().splitlines()) == 1
    from odt import Policy

    with pytest.raises(ConfigError, match="refusing to load"):
        Policy.load(run)
    assert not marker.exists()


def test_object_arrays_in_a_dataset_are_refused(tmp_path):
    from odt.data.sources import load_dataset

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    arrays = dict(observations=np.zeros((2, 3), np.float32), actions=np.zeros((2, 1), np.float32),
                  rewards=np.zeros(2, np.float32), terminals=np.array([False, True]), timeouts=np.zeros(2, bool))
    np.savez(path, **arrays, payload=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(ConfigError, match="cannot read dataset"):
        load_dataset(str(path))
    assert not marker.exists()


def test_corrupted_latest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    from dataclasses import asdict

    from odt.algos.learner import Learner
    from odt.checkpoint import load_checkpoint, load_from_run, networks_state, save_checkpoint
    from odt.config import OptimSettings
    from odt.models.transformer import DecisionTransformer, ModelSpec
    from odt.scaling import Scaling

    learner = Learner(DecisionTransformer(ModelSpec(obs_dim=3, act_dim=2, embed_dim=16, n_layer=1, n_head=1)), "odt",
                      OptimSettings(lr=1e-3, weight_decay=0.0, warmup_steps=1, grad_clip=1.0))
    path = tmp_path / "checkpoints" / "latest.pt"
    stats = Scaling(obs_mean=np.zeros(3), obs_std=np.ones(3), act_low=-np.ones(2), act_high=np.ones(2))
    for updates in (1, 2):
        learner.updates = updates
        save_checkpoint(path, networks_state(asdict(learner.model.spec), stats.state_dict(), [learner.state_dict()]))
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "latest.prev.pt", "latest.prev.pt.sha256", "latest.pt", "latest.pt.sha256"]
    assert load_from_run(tmp_path, "latest")[0]["ensemble"]["learners"][0]["updates"] == 2
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="does not match its checksum"):
        load_checkpoint(path)
    state, chosen = load_from_run(tmp_path, "latest")
    assert chosen.name == "latest.prev.pt" and state["ensemble"]["learners"][0]["updates"] == 1
    assert "latest.pt failed its checksum" in capsys.readouterr().err
    prev = path.with_name("latest.prev.pt")
    prev.write_bytes(prev.read_bytes()[:100])
    with pytest.raises(ConfigError, match="every checkpoint .* failed its checksum"):
        load_from_run(tmp_path, "latest")
