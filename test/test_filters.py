"""The one-euro filter (robot/filters.py): a low-pass whose cutoff rises with the signal's speed,
per channel, at any tick period; and the pass-through filter of ``kind: none``."""
import numpy as np
import pytest

from facebot.robot.filters import OneEuroFilter, PassThrough, smoothing_factor


def test_smoothing_factor_is_the_first_order_low_pass_at_that_step():
    # alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi f_c)
    assert smoothing_factor(1.0, 0.01) == pytest.approx(1 / (1 + 1 / (2 * np.pi * 0.01)))
    assert np.allclose(smoothing_factor(np.array([1.0, 10.0]), 0.04),
                       [1 / (1 + 1 / (2 * np.pi * 0.04)), 1 / (1 + 1 / (2 * np.pi * 0.4))])
    assert smoothing_factor(5.0, 0.02) < smoothing_factor(50.0, 0.02) < 1.0


def test_first_sample_passes_and_then_follows_the_equations():
    f = OneEuroFilter(2, min_cutoff_hz=1.0, beta=0.5, d_cutoff_hz=10.0)
    assert not f.primed and f.value is None
    x0, dx0 = f(np.array([1.0, -2.0]), 0.04)
    assert np.array_equal(x0, [1.0, -2.0]) and np.array_equal(dx0, [0.0, 0.0]) and f.primed
    x1, dx1 = f(np.array([2.0, -2.0]), 0.04)
    a_d = 1 / (1 + 1 / (2 * np.pi * 10.0 * 0.04))
    expect_dx = a_d * np.array([25.0, 0.0])  # raw derivative (2 - 1) / 0.04
    cutoff = 1.0 + 0.5 * np.abs(expect_dx)
    a = 1 / (1 + 1 / (2 * np.pi * cutoff * 0.04))
    assert np.allclose(dx1, expect_dx)
    assert np.allclose(x1, [1.0 + a[0], -2.0])
    assert np.array_equal(f.value, x1)


def test_a_still_noisy_signal_is_smoothed_hard_and_a_fast_step_followed_quickly():
    rng = np.random.default_rng(0)
    dt = 0.01
    jitter = 0.01 * rng.standard_normal(400)
    adaptive = OneEuroFilter(1, min_cutoff_hz=1.0, beta=0.5)
    fixed = OneEuroFilter(1, min_cutoff_hz=1.0, beta=0.0)  # the same filter without adaptation
    still = np.array([adaptive(np.array([v]), dt)[0][0] for v in jitter])
    assert still[100:].std() < 0.25 * jitter[100:].std()  # jitter at rest mostly removed
    # a step of 1: the adaptive filter gets most of the way in 50 ms, the fixed one does not
    a = [adaptive(np.array([1.0]), dt)[0][0] for _ in range(5)]
    fixed.reset(np.array([0.0]))
    b = [fixed(np.array([1.0]), dt)[0][0] for _ in range(5)]
    assert b[-1] < 0.3 < a[-1]


def test_channels_have_their_own_cutoff_and_beta():
    f = OneEuroFilter(3, min_cutoff_hz=[0.5, 5.0, 0.5], beta=[0.0, 0.0, 2.0])
    f(np.zeros(3), 0.02)
    x, dx = f(np.ones(3), 0.02)
    assert x[0] < x[1]  # a higher floor cutoff follows faster
    assert x[0] < x[2]  # so does a channel whose cutoff rises with speed
    assert dx[0] == dx[1] == dx[2] > 0  # the derivative filter is shared


def test_irregular_ticks_and_zero_periods():
    f = OneEuroFilter(1, 1.0, 0.0)
    f(np.array([0.0]), 0.01)
    before = f.value
    x, dx = f(np.array([5.0]), 0.0)  # no time passed: nothing changes
    assert np.array_equal(x, before) and np.array_equal(dx, [0.0])
    long_tick, _ = f(np.array([1.0]), 1.0)
    g = OneEuroFilter(1, 1.0, 0.0)
    g(np.array([0.0]), 0.01)
    short_tick, _ = g(np.array([1.0]), 0.01)
    assert long_tick[0] > 0.8 > 0.1 > short_tick[0]  # one long tick moves as far as many short ones


def test_reset_restarts_from_a_value_at_rest():
    f = OneEuroFilter(2, 1.0, 0.1)
    for v in range(5):
        f(np.full(2, float(v)), 0.04)
    f.reset(np.array([10.0, 10.0]))
    x, dx = f(np.array([10.0, 10.0]), 0.04)
    assert np.allclose(x, 10.0) and np.allclose(dx, 0.0)  # no stale derivative
    f.reset()
    assert not f.primed
    assert np.array_equal(f(np.array([3.0, 4.0]), 0.04)[0], [3.0, 4.0])


@pytest.mark.parametrize("kw", [dict(min_cutoff_hz=0.0, beta=0.0), dict(min_cutoff_hz=1.0, beta=-1.0),
                                dict(min_cutoff_hz=1.0, beta=0.0, d_cutoff_hz=0.0)])
def test_bad_parameters_are_refused(kw):
    with pytest.raises(ValueError, match="one-euro filter needs"):
        OneEuroFilter(2, **kw)


def test_pass_through_returns_the_target_and_its_finite_difference():
    p = PassThrough(2)
    assert not p.primed and p.value is None
    x, dx = p(np.array([1.0, 2.0]), 0.1)
    assert np.array_equal(x, [1.0, 2.0]) and np.array_equal(dx, [0.0, 0.0])
    x, dx = p(np.array([2.0, 1.0]), 0.1)
    assert np.array_equal(x, [2.0, 1.0]) and np.allclose(dx, [10.0, -10.0])
    _, dx = p(np.array([5.0, 5.0]), 0.0)
    assert np.array_equal(dx, [0.0, 0.0]) and np.array_equal(p.value, [5.0, 5.0])
    p.reset()
    assert not p.primed
