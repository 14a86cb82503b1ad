"""The device's frame store: bounded memory, newest-frame-wins, rate limit, round robin, on-demand nearest."""

from __future__ import annotations

import time

from tofc_ros.pipeline.frames import LATEST, FrameStore


def test_continuous_keeps_only_the_newest_frame_and_counts_drops():
    store = FrameStore(["a"], history=0, min_period_s=0.0)
    assert store.put("a", 1, "f1") is False
    assert store.put("a", 2, "f2") is True  # f1 never encoded: dropped
    assert store.take(0.1) == ("a", 2, "f2")
    assert store.take(0.05) is None


def test_continuous_rate_limit_and_round_robin():
    store = FrameStore(["a", "b"], history=0, min_period_s=0.2)
    store.put("a", 1, "a1")
    store.put("b", 1, "b1")
    assert {store.take(0.1)[0], store.take(0.1)[0]} == {"a", "b"}
    store.put("a", 2, "a2")
    t0 = time.monotonic()
    assert store.take(1.0) == ("a", 2, "a2")
    assert time.monotonic() - t0 >= 0.15  # waited out the camera's period


def test_on_demand_encodes_the_nearest_frame_once_and_bounds_history():
    store = FrameStore(["a"], history=3, min_period_s=0.0)
    for stamp in (10, 20, 30, 40):
        store.put("a", stamp, f"f{stamp}")
    assert store.take(0.05) is None  # nothing requested
    store.request("a", 22, tolerance_ns=5)
    assert store.take(0.1) == ("a", 20, "f20")
    store.request("a", 21, tolerance_ns=5)  # same frame again: already sent
    store.request("a", 10, tolerance_ns=5)  # evicted from the 3-frame history
    store.request("a", LATEST, tolerance_ns=0)
    assert store.take(0.1) == ("a", 40, "f40")
    assert store.take(0.05) is None
    assert store.request("zzz", 1, 0) is False
