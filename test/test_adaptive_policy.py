"""Adaptive operating points: the link estimator, the policy and the controller on an injected clock (no ROS)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tofc_ros.pipeline.adaptive import (
    AdaptiveController,
    AdaptiveSettings,
    LinkEstimate,
    PointPrior,
    QuestionRate,
    select_point,
)


def _transfer_ms(n_bytes: float, mbps: float, delay_ms: float) -> float:
    return delay_ms + 8 * n_bytes / (mbps * 1e3)


def test_link_estimate_recovers_rate_and_delay_from_two_sizes():
    link = LinkEstimate(initial_mbps=100.0, initial_delay_ms=0.0, window=5)
    for n in (1_000, 50_000, 2_000, 80_000):
        link.observe(n, _transfer_ms(n, mbps=4.0, delay_ms=30.0))
    assert link.delay_ms == pytest.approx(30.0, rel=1e-9)
    assert link.rate_mbps == pytest.approx(4.0, rel=1e-9)
    assert link.transfer_ms(10_000) == pytest.approx(50.0)


def test_link_estimate_follows_a_step_change_within_half_a_window():
    link = LinkEstimate(initial_mbps=10.0, initial_delay_ms=20.0, window=5)
    for _ in range(5):
        link.observe(50_000, _transfer_ms(50_000, 50.0, 20.0))
    assert link.rate_mbps == pytest.approx(50.0)
    seen = []
    for _ in range(3):  # 50 -> 2 Mbit/s: the median of 5 moves on the third sample
        link.observe(50_000, _transfer_ms(50_000, 2.0, 20.0))
        seen.append(link.rate_mbps)
    assert seen[0] == pytest.approx(50.0) and seen[2] == pytest.approx(2.0)


def test_a_transfer_that_is_mostly_delay_raises_the_estimate_at_most_fourfold():
    link = LinkEstimate(initial_mbps=0.1, initial_delay_ms=20.0, window=5)
    seen = []
    for _ in range(8):  # 0.16 ms on the wire in 20.16 ms: "at least" this fast, never a measurement
        link.observe(1_000, _transfer_ms(1_000, 50.0, 20.0))
        seen.append(link.rate_mbps)
    assert seen[:4] == pytest.approx([0.4, 1.6, 6.4, 25.6])
    assert seen[-1] == pytest.approx(8 / (0.01 * 20.16))  # 1 % of the transfer bounds what one frame can claim
    slow = LinkEstimate(initial_mbps=100.0, initial_delay_ms=20.0)
    slow.observe(1_000, _transfer_ms(1_000, 50.0, 20.0))
    assert slow.rate_mbps == 100.0  # it never lowers the estimate


def test_link_estimate_is_robust_to_noise_and_outliers():
    rng = np.random.default_rng(7)  # PCG64: the same jitter on every machine
    link = LinkEstimate(initial_mbps=10.0, initial_delay_ms=20.0, window=7)
    for k in range(60):
        jitter = float(rng.uniform(0.85, 1.15))
        t = _transfer_ms(8_000, 5.0, 20.0) * jitter
        if k % 10 == 9:
            t *= 20  # a stall: one outlier per ten
        link.observe(8_000, t)
    assert link.rate_mbps == pytest.approx(5.0, rel=0.25)


def test_a_lost_frame_bounds_the_rate_at_once_and_unknown_transfers_teach_nothing():
    link = LinkEstimate(initial_mbps=50.0, initial_delay_ms=20.0)
    link.observe(5_000, 0.0)  # transfer unknown (clocks not synchronised)
    for bad in (float("nan"), float("inf"), -3.0):  # what a broken or hostile Answer could carry
        link.observe(5_000, bad)
    assert link.samples == 0 and link.rate_mbps == 50.0
    link.observe_loss(100_000, elapsed_ms=5_020.0)  # 0.8 Mbit not through in 5 s: at most 0.16 Mbit/s
    assert link.rate_mbps == pytest.approx(0.16) and link.losses == 1
    link.observe_loss(1_000, elapsed_ms=1e9)  # a dead link: the estimate falls to its floor, never 0
    assert 0 < link.rate_mbps < 1e-3 and math.isfinite(link.transfer_ms(1_000))


@pytest.mark.parametrize(
    ("predicted", "current", "streak", "expected"),
    [
        ([900, 500, 100], None, 0, (0, 0, False)),  # first frame: the richest that fits
        ([1500, 500, 100], None, 0, (1, 0, False)),
        ([1500, 1200, 100], 1, 0, (2, 0, False)),  # down at once when the current point no longer fits
        ([5000, 3000, 2000], 1, 0, (2, 0, True)),  # nothing fits: the cheapest, starved
        ([700, 500, 100], 1, 0, (1, 1, False)),  # richer fits with margin: wait (hysteresis)
        ([700, 500, 100], 1, 2, (0, 0, False)),  # ... for the third decision in a row
        ([950, 500, 100], 1, 2, (1, 0, False)),  # fits, but without the margin: stay, streak reset
    ],
)
def test_select_point(predicted, current, streak, expected):
    assert select_point(predicted, 1000.0, current, streak, up_margin=0.2, up_hold=3) == expected


def test_select_point_respects_other_constraints():
    # speculative mode: the rich point fits the budget but not the frame period
    assert select_point([300, 200], 1000.0, None, 0, 0.2, 3, allowed=[False, True]) == (1, 0, False)


def test_question_rate_counts_a_sliding_window():
    rate = QuestionRate(window_s=10.0)
    for t in (0.0, 1.0, 2.0, 3.0):
        rate.add(t)
    assert rate.hz(3.0) == pytest.approx(0.4)
    assert rate.hz(10.5) == pytest.approx(0.3)  # the window is (0.5, 10.5]: 0.0 has left it
    assert rate.hz(30.0) == 0.0
    assert rate.peak_hz(30.0) == pytest.approx(0.4)  # the busiest 10 s window of the last 60 s
    assert rate.peak_hz(70.0) == 0.0


POINTS = [
    PointPrior("rich", bytes=500_000, device_ms=200, server_ms=300),
    PointPrior("mid", bytes=20_000, device_ms=250, server_ms=40),
    PointPrior("cheap", bytes=2_000, device_ms=250, server_ms=20),
]


def _settings(**kw):
    base = dict(latency_budget_ms=1500.0, initial_mbps=50.0, initial_delay_ms=20.0, up_hold=2, link_window=3)
    return AdaptiveSettings(**{**base, **kw})


def _frame(ctl: AdaptiveController, now: float, stamp: int, mbps: float) -> str:
    """One on-demand frame: a question, the choice, the send, the Answer with the link's transfer time."""
    ctl.question(now, "front", stamp)
    choice = ctl.choose(now)
    n = POINTS[choice.index].bytes
    ctl.sent(now, "front", stamp, choice.index, int(n), POINTS[choice.index].device_ms)
    transfer = _transfer_ms(n, mbps, 20.0)
    ctl.answered(now + 1.0, "front", stamp, True, False, transfer, POINTS[choice.index].server_ms)
    return choice.name


def test_controller_goes_down_on_a_bad_link_and_back_up_with_hysteresis():
    ctl = AdaptiveController(POINTS, _settings(speculate_on_hz=1e9, speculate_off_hz=1e9))
    chosen = [_frame(ctl, 100.0 * k, k + 1, mbps) for k, mbps in enumerate([50, 2, 2, 2, 2, 50, 50, 50, 50, 50])]
    # Each frame is chosen on the answers before it. 50 Mbit/s: rich fits (200 + 100 + 300 ms). The link's median
    # of 3 sees 2 Mbit/s after two slow answers (frame 4), and the policy goes down at once. Back at 50 Mbit/s the
    # median sees it after two fast answers (frame 8) and the hysteresis waits one more decision (up_hold = 2).
    assert chosen == ["rich", "rich", "rich", "mid", "mid", "mid", "mid", "mid", "rich", "rich"]
    assert ctl.counts["switches"] == 2 and ctl.counts["starved"] == 0


def test_controller_starves_to_the_cheapest_on_a_dead_link_and_counts_it():
    ctl = AdaptiveController(POINTS, _settings(loss_after_s=5.0, speculate_on_hz=1e9, speculate_off_hz=1e9))
    chosen = []
    for k in range(4):  # one frame every 6 s; no Answer ever comes back
        ctl.question(6.0 * k, "front", k + 1)
        choice = ctl.choose(6.0 * k)
        chosen.append((choice.name, choice.starved))
        ctl.sent(6.0 * k, "front", k + 1, choice.index, int(POINTS[choice.index].bytes), 200.0)
    # each lost frame bounds the rate by what would have carried it in 6 s, until not even the cheapest fits
    assert chosen == [("rich", False), ("mid", False), ("cheap", False), ("cheap", True)]
    assert ctl.counts["losses"] == 3 and ctl.snapshot(18.0)["starved"] == 1


def test_controller_switches_to_speculative_encoding_by_question_rate_with_hysteresis():
    ctl = AdaptiveController(POINTS, _settings(speculate_on_hz=0.5, speculate_off_hz=0.2, rate_window_s=10.0))
    assert not ctl.speculative(0.0)
    for k in range(5):  # 5 questions in 10 s: 0.5 Hz
        ctl.question(float(k), "front", 0)
    assert ctl.speculative(5.0)
    assert ctl.speculative(12.0)  # 0.3 Hz left in the window: between the thresholds, stays speculative
    assert not ctl.speculative(13.5)  # 0.1 Hz
    assert ctl.counts["to_speculative"] == 1 and ctl.counts["to_on_demand"] == 1


def test_speculative_mode_refuses_a_point_the_link_cannot_carry_every_frame():
    # budget is generous, but at 2 Mbit/s the rich point's 2 s transfer exceeds the 1 s frame period
    settings = _settings(latency_budget_ms=60_000.0, initial_mbps=2.0, speculate_on_hz=0.0, speculate_off_hz=0.0)
    ctl = AdaptiveController(POINTS, settings)
    choice = ctl.choose(0.0)
    assert choice.speculative and choice.name == "mid"


def test_server_queue_counts_in_the_prediction():
    ctl = AdaptiveController(POINTS, _settings(speculate_on_hz=1e9, speculate_off_hz=1e9))
    idle = ctl.predicted_ms(0, now=0.0)
    for k in range(30):  # 3 questions/s against the rich point's 300 ms each: rho = 0.9
        ctl.question(0.01 + k / 3, "front", 0)
    busy = ctl.predicted_ms(0, now=10.0)
    assert busy - idle == pytest.approx(0.9 * 300 / (2 * 0.1), rel=0.05)
    for k in range(10):
        ctl.question(10 + k / 10, "front", 0)
    assert ctl.predicted_ms(0, now=11.0) == math.inf  # rho >= 1: the server cannot keep up with this point
    # a quiet spell: the burst is remembered for burst_memory_s (60 s), then forgotten
    assert ctl.predicted_ms(0, now=50.0) == math.inf
    assert ctl.predicted_ms(0, now=80.0) == pytest.approx(idle)


def test_settings_refuse_inconsistent_values():
    with pytest.raises(ValueError, match="speculate_off_hz"):
        AdaptiveSettings(latency_budget_ms=100.0, speculate_on_hz=0.1, speculate_off_hz=0.5)
    with pytest.raises(ValueError, match="latency_budget_ms"):
        AdaptiveSettings(latency_budget_ms=0.0)
    with pytest.raises(ValueError):
        AdaptiveController([], _settings())


def test_bad_values_in_answers_leave_the_estimates_alone():
    ctl = AdaptiveController(POINTS, _settings(speculate_on_hz=1e9, speculate_off_hz=1e9))
    before = ctl.predicted_ms(1, now=0.0)
    ctl.sent(0.0, "front", 1, 1, 20_000, float("nan"))
    ctl.answered(0.5, "front", 1, True, False, float("inf"), float("nan"))
    assert ctl.predicted_ms(1, now=1.0) == pytest.approx(before) and ctl.link.samples == 0
