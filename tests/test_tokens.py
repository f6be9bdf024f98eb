"""Every token keeps its magnitude: the predicted action must move when the return-to-go moves and
when the state's scale moves, at initialisation and after training. Each token is normalized on
its own (embed_ln), so a zero-bias embedding would keep only the direction of its input."""
import numpy as np
import pytest
import torch

from odt.algos.learner import Learner
from odt.config import OptimSettings
from odt.data.buffer import Batch
from odt.models.transformer import DecisionTransformer, ModelSpec

B, T, OBS, ACT = 64, 5, 11, 3  # Hopper's dimensions


def _model(head: str) -> DecisionTransformer:
    spec = ModelSpec(obs_dim=OBS, act_dim=ACT, embed_dim=128, n_layer=3, n_head=1, dropout=0.0, context_len=T,
                     action_head=head)
    return DecisionTransformer(spec)


@torch.no_grad()
def _act(model, rtg, states, actions):
    model.eval()
    out = model(rtg, states, actions, torch.arange(T).expand(len(states), T))
    return (out if isinstance(out, torch.Tensor) else out.mode())[:, -1]


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(B, T, OBS, generator=g)
    actions = torch.rand(B, T, ACT, generator=g) * 2 - 1
    return states, actions


def _changes(model):
    """How far the action moves when (a) the return-to-go goes from 0.9 to 8.1 (Hopper's scaled
    range), (b) the states are scaled by 1.5, against (c) the move between unrelated states."""
    states, actions = _inputs()
    low, high = torch.full((B, T, 1), 0.9), torch.full((B, T, 1), 8.1)
    base = _act(model, low, states, actions)
    by_rtg = (_act(model, high, states, actions) - base).abs().mean()
    by_scale = (_act(model, low, 1.5 * states, actions) - base).abs().mean()
    by_state = (_act(model, low, states.roll(1, dims=0), actions) - base).abs().mean()
    return float(by_rtg), float(by_scale), float(by_state)


@pytest.mark.parametrize("head", ["deterministic", "tanh_gaussian"])
def test_action_reads_rtg_and_state_scale_at_init(head):
    torch.manual_seed(0)
    by_rtg, by_scale, by_state = _changes(_model(head))
    # Through N(0, 0.02) attention weights the other tokens move a fresh model's action little,
    # but they move it: 0.8% to 3% of what another state does here. A N(0, 0.02) zero-bias
    # embedding moved it by less than 0.005% (LayerNorm's epsilon alone).
    assert by_rtg > 1e-3 * by_state, (by_rtg, by_state)
    assert by_scale > 1e-3 * by_state, (by_scale, by_state)


def test_tokens_keep_the_magnitude_of_their_input():
    torch.manual_seed(0)
    model = _model("tanh_gaussian")
    states, _ = _inputs()
    with torch.no_grad():
        low, high = (model.embed_ln(model.embed_return(torch.full((1, 1), g))) for g in (0.9, 8.1))
        s, s15 = (model.embed_ln(model.embed_state(x)) for x in (states, 1.5 * states))
    assert torch.cosine_similarity(low, high, dim=-1).item() < 0.95
    assert torch.cosine_similarity(s, s15, dim=-1).mean().item() < 0.999


def _train_batch(rng: np.random.Generator) -> Batch:
    """Windows whose every action is a known function of the return-to-go and of the state's
    scale: a_0 = (g - 4.5) / 3.6 for scaled g in [0.9, 8.1], a_1 = c - 1.5 for states c * u with
    u a fixed direction and c in [0.75, 2.25]; a_2 = 0. Drawn afresh at every step, so that the
    earlier actions in the window say nothing about the next one."""
    g = rng.uniform(0.9, 8.1, (B, T, 1))
    c = rng.uniform(0.75, 2.25, (B, T, 1))
    u = np.linspace(-1.0, 1.0, OBS)
    states = c * u
    actions = np.concatenate([(g - 4.5) / 3.6, c - 1.5, np.zeros_like(g)], axis=-1)
    f = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    return Batch(states=f(states), actions=f(actions), rtg=f(g), timesteps=torch.arange(T).expand(B, T),
                 mask=torch.ones(B, T), rewards=torch.zeros(B, T))


def test_action_follows_rtg_and_state_scale_after_training():
    # DT: its MSE must explain a_0 through the return-to-go. (ODT's NLL can leave a_0 to its
    # variance for a long while here; tests/test_return_following.py checks ODT's conditioning.)
    torch.manual_seed(0)
    model = _model("deterministic")
    learner = Learner(model, "dt", OptimSettings(lr=1e-3, weight_decay=0.0, warmup_steps=10, grad_clip=1.0))
    rng = np.random.default_rng(0)
    for _ in range(300):
        learner.update(_train_batch(rng))
    u = torch.linspace(-1.0, 1.0, OBS)
    actions = torch.zeros(1, T, ACT)
    for g, c in [(1.8, 1.0), (4.5, 1.0), (7.2, 1.0), (4.5, 0.9), (4.5, 2.1)]:
        a = _act(model, torch.full((1, T, 1), g), (c * u).expand(1, T, OBS), actions)[0]
        assert abs(float(a[0]) - (g - 4.5) / 3.6) < 0.25, (g, c, a)
        assert abs(float(a[1]) - (c - 1.5)) < 0.25, (g, c, a)
