"""The device's frame store: bounded memory, newest-frame-wins, rate limit, round robin, on-demand nearest.

Time comes from a fake clock: nothing here sleeps or depends on the machine's speed.
"""

from __future__ import annotations

import threading

from tofc_ros.pipeline.frame_store import LATEST, FrameStore, Work


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_continuous_keeps_only_the_newest_frame_and_counts_drops():
    store = FrameStore(["a"], history=0, min_period_s=0.0, clock=FakeClock())
    assert store.put("a", 1, "f1") is False
    assert store.put("a", 2, "f2") is True  # f1 never encoded: dropped
    assert store.poll() == Work("a", 2, "f2")
    assert store.poll() is None


def test_continuous_rate_limit_and_round_robin():
    clock = FakeClock()
    store = FrameStore(["a", "b"], history=0, min_period_s=0.2, clock=clock)
    store.put("a", 1, "a1")
    store.put("b", 1, "b1")
    assert {store.poll()[0], store.poll()[0]} == {"a", "b"}
    store.put("a", 2, "a2")
    clock.now += 0.19
    assert store.poll() is None  # camera a's period has not passed
    store.put("a", 3, "a3")  # replaces a2, still waiting
    clock.now += 0.01
    assert store.poll() == Work("a", 3, "a3")
    store.put("b", 2, "b2")
    store.put("a", 4, "a4")
    clock.now += 0.2
    assert [store.poll()[0], store.poll()[0]] == ["b", "a"]  # round robin: b waited longer


def test_take_waits_for_work_put_by_another_thread():
    store = FrameStore(["a"], history=0, min_period_s=0.0)
    got = []
    taker = threading.Thread(target=lambda: got.append(store.take(timeout=30)))
    taker.start()
    store.put("a", 7, "f7")
    taker.join(30)
    assert got == [Work("a", 7, "f7")]
    store.close()
    assert store.take(timeout=30) is None  # closed: returns at once


def test_on_demand_encodes_the_nearest_frame_once_and_bounds_history():
    store = FrameStore(["a"], history=3, min_period_s=0.0, clock=FakeClock())
    for stamp in (10, 20, 30, 40):
        store.put("a", stamp, f"f{stamp}")
    assert store.poll() is None  # nothing requested
    store.request("a", 22, tolerance_ns=5)
    assert store.poll() == Work("a", 20, "f20")
    store.request("a", 21, tolerance_ns=5)  # same frame again: already sent
    store.request("a", 10, tolerance_ns=5)  # evicted from the 3-frame history
    store.request("a", LATEST, tolerance_ns=0)
    assert store.poll() == Work("a", 40, "f40")
    assert store.poll() is None
    assert store.request("zzz", 1, 0) is False


def test_an_adaptive_store_switches_modes_without_losing_its_history():
    clock = FakeClock()
    store = FrameStore(["a"], history=3, min_period_s=0.0, clock=clock, continuous=False)
    store.put("a", 1, "f1")
    assert store.poll() is None  # on demand: nothing encoded unasked
    store.request("a", 1, 0)
    store.set_continuous(True)  # waiting requests go: continuous frames reach the server anyway
    assert store.poll() is None
    store.put("a", 2, "f2")
    assert store.poll() == Work("a", 2, "f2")
    store.put("a", 3, "f3")
    store.set_continuous(False)  # the pending frame goes; the history stays for requests
    assert store.poll() is None
    store.request("a", 2, 0)  # already sent while continuous: the server has it
    store.request("a", 3, 0)
    assert store.poll() == Work("a", 3, "f3")
    try:
        FrameStore(["a"], history=0, min_period_s=0.0, continuous=False)
    except ValueError as exc:
        assert "history" in str(exc)
    else:
        raise AssertionError("on demand without a history must be refused")
