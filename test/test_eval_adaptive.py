"""The closed-loop replay of adaptive operating points (eval.adaptive) on synthetic measurements: the link, the queue
and the policy are exact arithmetic in virtual time, so every verdict here is exact."""

from __future__ import annotations

import math

import pytest

from tofc_ros.eval.adaptive import question_schedule, simulate, summarise
from tofc_ros.pipeline.adaptive import AdaptiveSettings
from tofc_ros.pipeline.uplink import RateTrace


def _measured(n_images: int = 40, questions: int = 3) -> dict:
    """Two points: 'rich' (200 kB, always right) and 'cheap' (1 kB, always wrong): accuracy says who answered."""

    def frames(n_bytes, correct):
        q = [[correct, 50.0]] * questions
        return [{"bytes": n_bytes, "device_ms": 100.0, "questions": q} for _ in range(n_images)]

    return {
        "points": [{"name": "rich"}, {"name": "cheap"}],
        "images": [{"image": str(k), "questions": questions} for k in range(n_images)],
        "frames": {"rich": frames(200_000, True), "cheap": frames(1_000, False)},
    }


SETTINGS = AdaptiveSettings(latency_budget_ms=1500.0, initial_mbps=100.0)


def test_the_question_schedule_alternates_busy_and_quiet_blocks():
    sched = question_schedule([3] * 40, period_s=1.0, block=10, quiet_every=3)
    busy = [q for q in sched if q[1] < 10]
    quiet = [q for q in sched if 10 <= q[1] < 20]
    assert len(busy) == 30 and [k for _, k, _ in quiet] == [12, 15, 18]
    assert busy[:3] == [(0.2, 0, 0), (0.30000000000000004, 0, 1), (0.4, 0, 2)]


@pytest.mark.parametrize("policy", ["adaptive", 0, 1])
def test_every_question_has_exactly_one_outcome(policy):
    m = _measured()
    run = simulate(m, RateTrace((0.0, 20.0), (100.0, 0.05)), policy, SETTINGS, speculative=False)
    assert len(run["outcomes"]) == len(question_schedule([3] * 40, 1.0))
    assert all(o.status in ("OK", "NO_FRAME") for o in run["outcomes"])
    assert all((o.status == "OK") == math.isfinite(o.latency_ms) or o.status == "NO_FRAME" for o in run["outcomes"])


def test_adaptive_sends_the_rich_point_on_a_good_link_and_the_cheap_one_on_a_bad_link():
    m = _measured(n_images=60)
    trace = RateTrace((0.0, 20.0), (100.0, 0.5))  # 200 kB: 16 ms at 100 Mbit/s, 3.2 s at 0.5 Mbit/s
    run = simulate(m, trace, "adaptive", SETTINGS)
    s = summarise(run, SETTINGS.latency_budget_ms, trace, 1.0)
    good, bad = s["segments"]
    assert good["accuracy"] == 1.0 and good["within_budget"] == 1.0
    # When the rate drops, the rich frames already on the wire (FIFO) delay what follows them; once they are through,
    # the estimate has followed and the cheap point keeps the answers within the budget.
    late = [o for o in run["outcomes"] if o.asked > 30.0]
    assert all(o.point == "cheap" and o.latency_ms <= 1500.0 for o in late)
    assert run["counts"]["switches"] >= 1 and run["counts"]["losses"] >= 1
    fixed_rich = summarise(simulate(m, trace, 0, SETTINGS, speculative=False), 1500.0, trace, 1.0)
    assert fixed_rich["segments"][1]["within_budget"] == 0.0 < bad["within_budget"]


def test_a_dead_link_starves_to_the_cheapest_point_and_counts_it():
    m = _measured()
    trace = RateTrace((0.0, 5.0), (100.0, 0.0))
    run = simulate(m, trace, "adaptive", SETTINGS, timeout_s=3.0)
    assert run["counts"].get("starved", 0) > 0 and run["counts"].get("losses", 0) > 0
    late = [o for o in run["outcomes"] if o.asked > 6.0]
    assert late and all(o.status == "NO_FRAME" for o in late)
