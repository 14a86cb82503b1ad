"""The replay's schedule with a fake clock: timed playback at the recorded times x rate, fast playback waiting for
features and answers, timeouts, and the end of the replay. No sleeps, no dependence on the machine's speed."""

from __future__ import annotations

import pytest

from tofc_ros.eval.replay.bags import BagQuestion, Frame
from tofc_ros.eval.replay.schedule import ReplaySchedule

S = 1_000_000_000


def frames(*times_s):
    return [Frame(int(t * S), "/cam", "sensor_msgs/msg/Image", b"", int(t * S) + 7) for t in times_s]


def questions(*times_s):
    return [BagQuestion(int(t * S), f"q{i}", "what?") for i, t in enumerate(times_s)]


def names(events):
    return [e.question_id if isinstance(e, BagQuestion) else f"f{e.stamp_ns // S}" for e in events]


def test_timed_mode_plays_each_event_at_its_recorded_time_divided_by_rate():
    s = ReplaySchedule(frames(10.0, 10.25, 10.5), questions(10.05, 10.3), mode="timed", rate=2.0)
    assert names(s.due(0.0)) == ["f10"]
    assert s.due(0.024) == []  # q0 is due at 0.05 / 2 = 0.025 s
    assert names(s.due(0.025)) == ["q0"]
    assert names(s.due(0.13)) == ["f10"]  # the frame at +0.25 s (stamp 10.25 s)
    assert names(s.due(10.0)) == ["q1", "f10"]  # everything overdue goes out at once, in recorded order
    assert s.sent == 5


def test_frames_go_before_questions_recorded_at_the_same_time():
    s = ReplaySchedule(frames(1.0), questions(1.0))
    assert names(s.due(0.0)) == ["f1", "q0"]


def test_fast_mode_waits_for_each_frames_features_and_each_questions_answer():
    s = ReplaySchedule(frames(1.0, 2.0), questions(1.5, 2.5), mode="fast", frame_timeout_s=2.0, answer_timeout_s=5.0)
    assert names(s.due(0.0)) == ["f1"]
    assert s.due(0.5) == []  # no features yet
    s.features_seen(1 * S + 7)
    assert names(s.due(0.6)) == ["q0"]
    assert s.due(3.0) == []  # waiting for q0's answer
    s.answered("q0")
    assert names(s.due(3.1)) == ["f2"]
    assert s.due(5.09) == []
    assert names(s.due(5.1)) == ["q1"]  # f2's features never came: gave up after frame_timeout_s
    assert s.timeouts == ["no features for frame 2000000007 within the timeout; going on"]


def test_fast_mode_without_waiting_for_features_sends_frames_back_to_back():
    s = ReplaySchedule(frames(1.0, 2.0), questions(3.0), mode="fast", wait_for_features=False)
    assert names(s.due(0.0)) == ["f1", "f2", "q0"]


def test_the_replay_ends_when_every_question_is_answered_or_the_last_answer_timed_out():
    s = ReplaySchedule(frames(1.0), questions(1.0, 1.0), answer_timeout_s=3.0)
    assert not s.finished(0.0)
    s.due(0.0)
    s.answered("q0")
    assert not s.finished(2.9)
    assert s.finished(3.01)  # q1 never answered
    t = ReplaySchedule(frames(1.0), questions(1.0), answer_timeout_s=3.0)
    t.due(0.0)
    t.answered("q0")
    assert t.finished(0.1)


@pytest.mark.parametrize("kwargs, fragment", [({"mode": "slow"}, "mode"), ({"rate": 0.0}, "rate")])
def test_bad_settings_are_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ReplaySchedule(frames(1.0), questions(1.0), **kwargs)
