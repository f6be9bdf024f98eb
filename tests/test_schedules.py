"""The toolbox's schedules and return targets against values computed by hand."""
import json
import math

import numpy as np
import pytest

from odt.schedules import ReturnTarget, TargetSettings, decay, linear, noise_std, parse_range


@pytest.mark.parametrize("kind, values", [
    ("constant", [1, 1, 1, 1]),
    ("linear", [1, 0.75, 0.5, 0]),
    ("sqrt", [1, math.sqrt(0.75), math.sqrt(0.5), 0]),
    ("exponential", [1, math.exp(-1.25), math.exp(-2.5), math.exp(-5)]),
    ("cosine", [1, (1 + math.cos(math.pi / 4)) / 2, 0.5, 0]),
])
def test_decay_schedules_match_hand_computed_values(kind, values):
    assert [decay(kind, p) for p in (0, 0.25, 0.5, 1)] == pytest.approx(values, abs=1e-12)


def test_noise_has_a_floor_and_progress_is_clipped():
    assert noise_std(0.3, "linear", 0.5, 0.0) == pytest.approx(0.15)
    assert noise_std(0.3, "linear", 0.9, 0.05) == pytest.approx(0.05)
    assert noise_std(0.3, "linear", 2.0, 0.0) == 0.0
    assert linear(0.5, 0.1, 0.25) == pytest.approx(0.4)


def test_parse_range():
    assert parse_range("0.5:0.1", "offline-ratio") == (0.5, 0.1)
    assert parse_range("0.3", "offline-ratio") == (0.3, 0.3)
    for bad in ("a", "0.1:0.2:0.3", ""):
        with pytest.raises(ValueError, match="START or START:END"):
            parse_range(bad, "offline-ratio")


def test_return_target_strategies_match_hand_computed_values():
    t = ReturnTarget(TargetSettings(return_target="percentile", target_p0=50, target_p1=100), 99.0)
    assert t.value(0.3) == 99.0  # nothing observed yet: the fixed target
    t.observe(np.arange(1, 11))
    assert t.value(0.5) == pytest.approx(7.75)  # 75th percentile of 1..10: 7 + 0.75 * (8 - 7)
    assert t.value(0.0) == pytest.approx(5.5)

    u = ReturnTarget(TargetSettings(return_target="ucb", target_beta0=2.0, target_beta1=0.0), 0.0)
    u.observe([2, 4, 4, 4, 5, 5, 7, 9])  # mean 5, population std 2
    assert u.value(0.0) == pytest.approx(9.0)
    assert u.value(0.5) == pytest.approx(7.0)
    assert u.value(1.0) == pytest.approx(5.0)

    c = ReturnTarget(TargetSettings(return_target="curriculum"), 0.0)
    c.observe([10, 30, 20])
    assert c.value(0.25) == pytest.approx(15.0)

    w = ReturnTarget(TargetSettings(return_target="curriculum", target_window=2), 0.0)  # only the last two returns count
    w.observe([100, 10, 30])
    assert w.value(1.0) == pytest.approx(30.0) and w.highest == 100


def test_return_target_clipping():
    t = ReturnTarget(TargetSettings(return_target="fixed", target_clip=True, target_clip_c=1.2), 100.0)
    t.observe([10, 50])
    assert t.value(0) == pytest.approx(60.0)  # 1.2 x the highest observed
    t.g_fixed = 1.0
    assert t.value(0) == pytest.approx(10.0)  # the lowest observed
    n = ReturnTarget(TargetSettings(return_target="fixed", target_clip=True, target_clip_c=1.2), 0.0)
    n.observe([-100, -50])
    assert n.value(0) == pytest.approx(-40.0)  # optimism stays optimism for negative returns
    s = ReturnTarget(TargetSettings(return_target="ucb"), 0.0)
    s.load_state_dict(json.loads(json.dumps(n.state_dict())))
    assert list(s.recent) == [-100, -50] and (s.lowest, s.highest) == (-100, -50)
