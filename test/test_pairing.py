"""Question/frame pairing: bounded cache, bounded waiting, exactly one exit per question."""

from __future__ import annotations

import pytest

from tofc_ros.pipeline.pairing import LATEST, FrameCache, Pairing, Refused, Waiting
from tofc_ros.pipeline.records import Status


def _w(qid, camera="front", stamp=LATEST, deadline=100):
    return Waiting(qid, camera, stamp, deadline, request=qid)


def test_cache_keeps_the_newest_frames_per_camera_and_bounds_cameras():
    cache = FrameCache(per_camera=2, max_cameras=2)
    for stamp in (1, 2, 3):
        cache.add("a", stamp, f"a{stamp}")
    cache.add("b", 5, "b5")
    assert (cache.get("a", 1), cache.get("a", 2), cache.get("a", LATEST), len(cache)) == (None, "a2", "a3", 3)
    with pytest.raises(Refused, match="already tracking 2 cameras"):
        cache.add("c", 1, "c1")
    assert cache.get("c", LATEST) is None


def test_latest_is_the_last_added_even_if_its_stamp_is_older():
    cache = FrameCache(per_camera=3, max_cameras=1)
    cache.add("a", 10, "new-clock")
    cache.add("a", 5, "bag-restarted")
    assert cache.get("a", LATEST) == "bag-restarted"


def test_questions_wait_then_pair_or_expire_exactly_once():
    pairing = Pairing(FrameCache(4, 4), max_waiting=10)
    assert pairing.ask(_w("latest")) is None
    assert pairing.ask(_w("exact", stamp=7, deadline=50)) is None
    assert pairing.ask(_w("other-cam", camera="rear")) is None
    assert pairing.ask(_w("late", stamp=8, deadline=20)) is None
    assert [w.question_id for w in pairing.add_frame("front", 6, "f6")] == ["latest"]
    assert [w.question_id for w in pairing.expire(now_ns=20)] == ["late"]
    assert [w.question_id for w in pairing.add_frame("front", 7, "f7")] == ["exact"]
    assert pairing.add_frame("front", 8, "f8") == []  # "late" already left
    assert pairing.ask(_w("cached", stamp=6)) == "f6"
    assert [w.question_id for w in pairing.drain()] == ["other-cam"]
    assert pairing.waiting == 0


def test_duplicate_ids_and_the_bound_are_refused():
    pairing = Pairing(FrameCache(4, 4), max_waiting=2)
    pairing.ask(_w("a"))
    with pytest.raises(Refused) as exc:
        pairing.ask(_w("a"))
    assert exc.value.status == Status.BAD_REQUEST
    with pytest.raises(Refused) as exc:
        pairing.ask(_w("b"), in_flight=1)
    assert exc.value.status == Status.BUSY
    pairing.add_frame("front", 1, "f1")  # releases "a"
    with pytest.raises(Refused) as exc:  # a cached frame still counts against the bound
        pairing.ask(_w("c"), in_flight=2)
    assert exc.value.status == Status.BUSY


def test_a_tolerance_pairs_the_nearest_frame_within_it():
    pairing = Pairing(FrameCache(8, 1), max_waiting=4, tolerance_ns=10)
    pairing.add_frame("front", 100, "f100")
    pairing.add_frame("front", 125, "f125")
    assert pairing.ask(_w("near", stamp=118)) == "f125"
    assert pairing.ask(_w("far", stamp=150)) is None  # 25 ns from the nearest: waits
    assert pairing.add_frame("front", 200, "f200") == []
    assert [w.question_id for w in pairing.add_frame("front", 141, "f141")] == ["far"]
