"""What the hardware decides: the precision a run computes in, a training step that never waits
on the host (so that a GPU can run it ahead or capture it), and the CPU's cheaper dropout."""
import copy
import json
import math

import numpy as np
import pytest
import torch
from helpers import make_buffer, make_episode, step
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import odt.precision as precision
from odt.algos.lamb import Lamb
from odt.algos.learner import Learner
from odt.config import OptimSettings, TD3Settings, preset
from odt.models.transformer import DecisionTransformer, ModelSpec, dropout
from odt.policy import EnsemblePolicy, Policy
from odt.scaling import Scaling
from odt.setup import setup


def _cpu(amx: bool, avx512_bf16: bool, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


@pytest.mark.parametrize("amx,avx512_bf16,expected", [(True, True, "bf16"), (False, True, "fp32"),
                                                      (False, False, "fp32")])
def test_auto_precision_follows_the_cpus_bf16_hardware(amx, avx512_bf16, expected, monkeypatch):
    _cpu(amx, avx512_bf16, monkeypatch)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    chosen, why, warning = precision.resolve_precision("auto", "cpu")
    assert chosen == expected and warning is None
    assert why.startswith("auto: ") and ("AMX" in why)
    if avx512_bf16 and not amx:  # why AVX512_BF16 alone is not enough: measured, and said so
        assert "AVX512_BF16 but no AMX" in why


def test_a_capped_onednn_emulates_bf16(monkeypatch):
    _cpu(True, True, monkeypatch)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.resolve_precision("auto", "cpu")[0] == "fp32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert precision.resolve_precision("auto", "cpu")[0] == "bf16"


def test_auto_precision_on_gpus(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "GPU")
    for capability, expected in (((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp32")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert precision.resolve_precision("auto", "cuda")[0] == expected


def test_bf16_asked_of_hardware_without_it_runs_with_a_measured_warning(monkeypatch):
    _cpu(False, False, monkeypatch)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(precision, "bf16_slowdown", lambda device: 9.6)
    chosen, _, warning = precision.resolve_precision("bf16", "cpu")
    assert chosen == "bf16" and "\n" not in warning
    assert "9.6x the time of fp32" in warning and "--precision auto" in warning
    assert precision.resolve_precision("fp32", "cpu")[2] is None
    _cpu(True, True, monkeypatch)
    assert precision.resolve_precision("bf16", "cpu")[2] is None


def test_bf16_slowdown_is_a_measured_ratio():
    assert 0.01 < precision.bf16_slowdown("cpu", reps=2) < 100


@pytest.mark.parametrize("amx", [True, False])
def test_the_run_directory_and_the_first_log_line_record_the_choice(amx, tmp_path, monkeypatch):
    _cpu(amx, amx, monkeypatch)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    cfg = preset("reward-hill")
    cfg.out, cfg.progress, cfg.pretrain_updates, cfg.online_steps = tmp_path / "run", False, 1, 0
    trainer = setup(cfg, "pretrain")
    trainer.close()
    expected = "bf16" if amx else "fp32"
    # config.json keeps what was asked, so that a run continued on another machine resolves it there
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "auto"
    assert trainer.learner.precision == expected
    first = (tmp_path / "run" / "run.log").read_text().splitlines()[0]
    assert f"in {expected} (auto: this CPU" in first and ("has AMX" if amx else "no AMX") in first


# -- a step that never waits on the host ---------------------------------------------------------

class HostReads(TorchDispatchMode):
    """Every read of a tensor's value by the host: .item(), float(), int(), bool(), `if t:`."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


class HostCopies(TorchFunctionMode):
    """Copies to the host that the dispatcher does not see as reads (.tolist(), .numpy(), .cpu())."""

    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu):
            self.copies.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _learner(algo, **kw):
    head = "deterministic" if algo == "vidt" else "tanh_gaussian"
    model = DecisionTransformer(ModelSpec(obs_dim=3, act_dim=2, embed_dim=32, n_layer=2, n_head=2, dropout=0.1, context_len=5, action_head=head))
    td3 = TD3Settings(**kw) if algo in ("vidt", "odt-td3") else None
    learner = Learner(model, "dt" if algo == "vidt" else "odt", OptimSettings(warmup_steps=1), td3=td3)
    buf = make_buffer(10, obs_dim=3, rtg_scale=10.0, keep_next=True)
    for i in range(4):
        buf.add(make_episode(12, seed=i))
    return learner, buf.sample(16, 5, np.random.default_rng(0))


def _device_halves(learner, batch):
    if learner.td3 is not None:
        learner.critics.update(batch)
    return learner._actor_update(batch)


@pytest.mark.parametrize("algo,kw", [("odt", {}), ("vidt", {}), ("odt-td3", {"rl_normalize": True})])
def test_a_training_step_never_reads_a_tensor_on_the_host(algo, kw):
    learner, batch = _learner(algo, **kw)
    learner.set_anchor(0.1)
    learner.update(batch)  # optimizer states exist: the steps below are the steady state
    with HostReads() as reads, HostCopies() as copies:
        metrics = _device_halves(learner, batch)
    assert reads.reads == [] and copies.copies == []
    assert all(isinstance(v, torch.Tensor) for v in metrics.values())  # read once, after the step
    learner.update(batch)


@pytest.mark.parametrize("algo,kw", [("odt", {}), ("vidt", {}), ("odt-td3", {"rl_normalize": True})])
def test_compile_takes_each_part_of_the_step_whole_and_never_recompiles(algo, kw, monkeypatch):
    """--compile: the forward with its loss, and clipping with the optimizer step, are each one
    graph (fullgraph: a break raises), and the warmup's changing rate, the step count and a skipped
    step change tensors, not the graphs: no recompile. aot_eager traces forward and backward as
    inductor would, without its code generation."""
    import torch._dynamo
    monkeypatch.setattr(Learner, "compile_backend", "aot_eager")
    torch._dynamo.reset()
    eager, batch = _learner(algo, **kw)
    compiled, _ = _learner(algo, **kw)
    compiled.compile = "default"
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))
    for learner in (eager, compiled):  # dropout off: eager's CPU mask and the graph's draw differ
        learner.model.eval().train = lambda mode=True, m=learner.model: m
        learner.set_lr_scale(1.0)
    # A copy with the drawn batch's strides (a view into the windows): the graphs do not recompile for them.
    actions = torch.empty_strided(batch.actions.shape, batch.actions.stride()).copy_(batch.actions)
    actions[0, 0, 0] = math.nan
    bad = type(batch)(**{**batch.__dict__, "actions": actions})
    for b in (batch, batch, bad, batch, batch):
        torch.manual_seed(1)
        a = step(eager, b)
        torch.manual_seed(1)
        with torch._dynamo.config.patch(error_on_recompile=True):
            c = step(compiled, b)
        assert a.keys() == c.keys() and all(a[k] == pytest.approx(c[k], rel=1e-4, abs=1e-6) for k in a)
    for p, q in zip(eager.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert len(compiled._compiled_fns) == (3 if compiled.td3 is not None else 2)


def test_lamb_loads_a_checkpoint_with_a_host_step_and_rate():
    """Checkpoints written before the step count and rate moved to the device (an int and a float
    in the group) load, and the next step is the one the old optimizer would have taken."""
    torch.manual_seed(0)
    params = [torch.randn(4, 3, requires_grad=True)]
    opt = Lamb(params, lr=1e-2, weight_decay=1e-3)
    params[0].grad = torch.randn(4, 3)
    opt.step()
    old = copy.deepcopy(opt.state_dict())
    old["param_groups"][0].update(step=1, lr=1e-2)
    restored = [params[0].detach().clone().requires_grad_()]
    again = Lamb(restored, lr=5.0)
    again.load_state_dict(old)
    group = again.param_groups[0]
    assert torch.is_tensor(group["step"]) and group["step"] == 1 and group["lr"] == pytest.approx(1e-2)
    params[0].grad = restored[0].grad = torch.ones(4, 3)
    opt.step(), again.step()
    torch.testing.assert_close(params[0], restored[0], rtol=0, atol=0)
    # Saved before its first step, the old optimizer's state held no moments: they start at zero.
    fresh = Lamb([torch.zeros(2, requires_grad=True)], lr=1e-2).state_dict()
    fresh["state"], fresh["param_groups"][0]["step"] = {}, 0
    empty = Lamb([torch.zeros(2, requires_grad=True)], lr=1.0)
    empty.load_state_dict(fresh)
    empty.param_groups[0]["params"][0].grad = torch.ones(2)
    empty.step()
    assert float(empty.param_groups[0]["params"][0][0].detach()) == pytest.approx(-1e-2)


def test_the_host_read_detector_sees_what_would_creep_in(monkeypatch):
    learner, batch = _learner("odt")
    real = learner.loss_fn

    def loss_with_a_read(pred, b, lam, samples):
        loss, h, m = real(pred, b, lam, samples)
        if loss > 1e9:  # a Python branch on a tensor's value
            pass
        return loss, h, {**m, "nll": torch.tensor(float(m["nll"]))}
    learner.loss_fn = loss_with_a_read
    with HostReads() as reads:
        learner._actor_update(batch)
    assert len(reads.reads) == 2


def test_a_skipped_step_leaves_weights_moments_and_counts_as_they_were():
    learner, batch = _learner("odt")
    step(learner, batch)
    state = {k: v.clone() if isinstance(v, torch.Tensor) else v
             for k, v in torch.utils._pytree.tree_flatten_with_path(learner.state_dict())[0]}
    # A copy with the drawn batch's strides (a view into the windows): the graphs do not recompile for them.
    actions = torch.empty_strided(batch.actions.shape, batch.actions.stride()).copy_(batch.actions)
    actions[0, 0, 0] = math.nan
    bad = type(batch)(**{**batch.__dict__, "actions": actions})
    assert step(learner, bad) == {"skipped": 1.0}
    after = dict(torch.utils._pytree.tree_flatten_with_path(learner.state_dict())[0])
    for k, v in state.items():
        assert torch.equal(after[k], v) if isinstance(v, torch.Tensor) else after[k] == v, k


def test_lamb_found_inf_is_a_skip_and_zero_is_the_plain_step():
    torch.manual_seed(0)
    plain = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    guarded = [p.detach().clone().requires_grad_() for p in plain]
    opt, opt_guarded = Lamb(plain, lr=1e-2, weight_decay=1e-3), Lamb(guarded, lr=1e-2, weight_decay=1e-3)
    for step in range(3):
        grads = [torch.randn_like(p) for p in plain]
        for p, q, g in zip(plain, guarded, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        opt_guarded.found_inf = torch.tensor(0.0)
        opt_guarded.step()
        before = [p.detach().clone() for p in guarded]
        moments = [s[k].clone() for s in opt_guarded.state.values() for k in ("exp_avg", "exp_avg_sq")]
        for p in guarded:
            p.grad.fill_(math.nan)
        opt_guarded.found_inf = torch.tensor(1.0)
        opt_guarded.step()  # skipped: weights, moments and the step count unchanged, on the device
        assert all(torch.equal(a, b) for a, b in zip(before, guarded))
        assert all(torch.equal(a, s[k]) for a, (s, k) in
                   zip(moments, [(s, k) for s in opt_guarded.state.values() for k in ("exp_avg", "exp_avg_sq")]))
        for a, b in zip(plain, guarded):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert opt_guarded.param_groups[0]["step"] == 3


# -- dropout -------------------------------------------------------------------------------------

def test_cpu_dropout_drops_at_rate_p_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(400_001)  # odd: the 16-bit draws come two to a 32-bit word
    y = dropout(x, 0.1, True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 4 * math.sqrt(0.1 * 0.9 / x.numel())  # 4 sigma of a Bernoulli mean
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - 6554 / 65536)))
    assert abs(y.mean().item() - 1.0) < 0.005
    # Halves of one 32-bit draw are independent: both dropped as often as p^2 says.
    pairs = (y[:400_000].view(-1, 2) == 0).all(1).float().mean().item()
    assert abs(pairs - 0.01) < 4 * math.sqrt(0.01 * 0.99 / 200_000)
    assert torch.equal(dropout(x, 0.1, False), x) and torch.equal(dropout(x, 0.0, True), x)


def test_cpu_dropout_backward_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 60, 128, requires_grad=True)
    y = dropout(x, 0.1, True)
    y.sum().backward()
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad, kept.float() / (1 - 6554 / 65536))


def test_cpu_dropout_keeps_the_autocast_dtype():
    x = torch.randn(8, 16, dtype=torch.bfloat16)
    assert dropout(x, 0.1, True).dtype == torch.bfloat16


# -- no tensor made on the wrong device ----------------------------------------------------------

@pytest.mark.parametrize("algo", ["dt", "odt", "vidt", "odt-td3"])
def test_a_step_and_an_action_make_no_tensor_off_the_runs_device(algo):
    """Under a default device of ``meta``, a tensor made without ``device=`` lands on meta and
    meets the run's CPU tensors: the step or the action fails. On a GPU it would land on the CPU."""
    learner, batch = _learner("vidt" if algo == "dt" else algo)
    learner.set_anchor(0.1)
    learner.update(batch)
    action = "mean+noise" if learner.model.spec.action_head == "deterministic" else "sample"
    policy = Policy(learner.model, Scaling.unit(3, 2), 10.0, 5, action, 0.1, torch.Generator().manual_seed(0))
    policy.reset(3.0, n=2)
    policy.act(np.zeros((2, 3), np.float32))
    with torch.device("meta"):
        learner.update(batch)
        policy.act(np.ones((2, 3), np.float32), np.ones(2, np.float32))
        members = [Policy(learner.model, Scaling.unit(3, 2), 10.0, 5) for _ in range(2)]
        ensemble = EnsemblePolicy(members, "disagreement", 1.0, True, 0.1, torch.Generator(device="cpu").manual_seed(0))
        ensemble.reset(3.0, n=2)
        ensemble.act(np.ones((2, 3), np.float32))
    assert all(p.device.type == "cpu" for p in learner.model.parameters())


def test_a_checkpoint_from_another_kind_of_device_resumes_with_fresh_random_streams(tmp_path):
    """A CUDA generator's state (16 bytes) in a checkpoint read on a CPU: the run resumes, says
    that sampled actions and dropout draw afresh, and the batches' generators go on."""
    import shutil
    from pathlib import Path

    from odt.checkpoint import load_checkpoint, save_checkpoint
    from odt.cli import main

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "run-vidt-ensemble", run)
    (run / "summary.json").unlink()
    for name in ("latest",):
        state = load_checkpoint(run / "checkpoints" / f"{name}.pt")
        state["generators"] = {"torch": state["generators"]["torch"], "policy": torch.zeros(16, dtype=torch.uint8),
                               "cuda": torch.zeros(16, dtype=torch.uint8)}
        (run / "checkpoints" / f"{name}.pt").unlink()
        save_checkpoint(run / "checkpoints" / f"{name}.pt", state)
    assert main(["run", "--resume", str(run)]) == 0
    log = (run / "run.log").read_text()
    assert "written on another kind of device than cpu: the random streams of sampled actions and dropout restart" in log
    assert json.loads((run / "summary.json").read_text())["device"] == "cpu"


def test_a_run_that_asks_for_a_missing_device_says_how_to_continue_it(tmp_path, capsys):
    import shutil
    from pathlib import Path

    from odt.cli import main

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "run-vidt-ensemble", run)
    (run / "summary.json").unlink()
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "device": "cuda"}))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "asks for --device cuda" in err and '"device": "auto"' in err and "\n" not in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
