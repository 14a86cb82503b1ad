"""Two-stage answering in the pure server core, on a fake clock: a sure answer goes out at once; an unsure one is held
and asked about; the detail gives one refined answer, a refusal or a timeout gives the first answer flagged; every
question leaves exactly once; bad replies are refused with a clear error."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from test_server_core import MS, Decoder, FakeClock, frame, request

from tofc_ros.pipeline.answerer import Answered
from tofc_ros.pipeline.pairing import Refused
from tofc_ros.pipeline.records import Refinement, Status
from tofc_ros.pipeline.refine import RefineAsk, RefineReply
from tofc_ros.pipeline.server_core import Job, ServerCore, TwoStage


class Scripted:
    """A batch answerer: the question text names its uncertainty ("u=0.9"); where it looked is token 1 of 3."""

    def __init__(self) -> None:
        self.tasks = []
        self.fail_detail = False

    def answer_batch(self, tasks):
        out = []
        for task in tasks:
            self.tasks.append(task)
            u = float(task.question.split("=")[1])
            if task.detail is not None:
                out.append(
                    RuntimeError("model broke")
                    if self.fail_detail
                    else Answered(f"refined:{task.detail.decode()}", uncertainty=0.1)
                )
                continue
            looked = (
                np.array([0.1, 0.8, 0.1], np.float32) if task.look_above is not None and u > task.look_above else None
            )
            out.append(Answered(f"first:{task.frame.decode()}", uncertainty=u, token_weights=looked))
        return out


def make(threshold: float = 0.5, timeout_ms: int = 200, queue_size: int = 4):
    clock = FakeClock()
    answerer = Scripted()
    two = TwoStage(threshold, timeout_ms * MS, max_area=0.2, n_clusters=8)
    core = ServerCore(Decoder(), answerer, clock, queue_size=queue_size, two_stage=two)
    core.add_frame(frame(5, payload=b"global"))
    return core, clock, answerer


def ask_one(core, clock, u: float, qid: str = "q", timeout_ms: int = 1_000):
    job = core.ask(request(qid, clock, stamp_ms=5, timeout_ms=timeout_ms, text=f"u={u}"))
    assert isinstance(job, Job)
    return core.run(job)


def reply(ask: RefineAsk, ok: bool = True, error: str = "", stamp_ms: int = 5):
    crop = frame(5, payload=b"crop") if ok else None
    return RefineReply(ask.question_id, ask.camera, stamp_ms * MS, ok, error, frame=crop)


def test_a_sure_answer_is_published_at_once_with_its_uncertainty():
    core, clock, answerer = make()
    record = ask_one(core, clock, 0.2)
    assert (record.status, record.text, record.refinement) == (Status.OK, "first:global", Refinement.NONE)
    assert record.uncertainty == pytest.approx(0.2) and core.refining == 0
    assert answerer.tasks[0].look_above == 0.5  # the core asked where it looked, above the threshold only


def test_an_unsure_answer_is_held_and_the_detail_answers_it_once():
    core, clock, answerer = make()
    ask = ask_one(core, clock, 0.9)
    assert isinstance(ask, RefineAsk) and core.refining == 1 and core.in_flight == 0
    assert (ask.question_id, ask.camera, ask.stamp_ns, ask.max_area, ask.n_clusters) == ("q", "front", 5 * MS, 0.2, 8)
    assert ask.token_weights.tolist() == pytest.approx([0.1, 0.8, 0.1])
    job = core.refined(reply(ask))
    assert isinstance(job, Job) and core.refining == 0 and core.in_flight == 1
    record = core.run(job)
    assert (record.status, record.refinement, record.text) == (Status.OK, Refinement.DONE, "refined:crop")
    assert (record.payload_bytes, record.refine_payload_bytes) == (6, 4)  # the first pass's and the crop's
    assert answerer.tasks[-1].look_above is None  # a second pass is never refined again
    assert core.in_flight == 0 and core.expire() == []


def test_a_refused_refinement_publishes_the_first_answer_flagged():
    core, clock, _ = make()
    ask = ask_one(core, clock, 0.9)
    record = core.refined(reply(ask, ok=False, error="region x=2000 is not inside the 1280x720 frame"))
    assert (record.status, record.refinement, record.text) == (Status.OK, Refinement.FAILED, "first:global")
    assert "not inside" in record.error and core.refining == 0


def test_no_detail_in_time_publishes_the_first_answer_timed_out_once():
    core, clock, _ = make(timeout_ms=200)
    ask = ask_one(core, clock, 0.9)
    clock.now += 199 * MS
    assert core.expire() == []
    clock.now += 1 * MS
    (record,) = core.expire()
    assert (record.question_id, record.refinement, record.text) == ("q", Refinement.TIMED_OUT, "first:global")
    assert core.expire() == [] and core.refining == 0
    with pytest.raises(Refused, match="no answer is waiting for detail"):  # the late crop is refused, not answered
        core.refined(reply(ask))


def test_the_questions_own_deadline_bounds_the_wait_for_detail():
    core, clock, _ = make(timeout_ms=10_000)
    ask_one(core, clock, 0.9, timeout_ms=300)
    clock.now += 300 * MS
    (record,) = core.expire()
    assert record.refinement == Refinement.TIMED_OUT


def test_a_detail_that_cannot_be_decoded_or_answered_leaves_the_first_answer():
    core, clock, answerer = make()
    ask = ask_one(core, clock, 0.9, "a")
    bad = RefineReply("a", "front", 5 * MS, True, frame=frame(5, payload=b"", refusal="payload of 9 B exceeds 1"))
    record = core.run(core.refined(bad))
    assert (record.refinement, record.text) == (Refinement.FAILED, "first:global") and "exceeds" in record.error
    answerer.fail_detail = True
    ask = ask_one(core, clock, 0.9, "b")
    record = core.run(core.refined(reply(ask)))
    assert (record.status, record.refinement, record.text) == (Status.OK, Refinement.FAILED, "first:global")
    assert "model broke" in record.error and core.in_flight == 0


def test_replies_for_unknown_questions_or_other_frames_are_refused():
    core, clock, _ = make()
    ask = ask_one(core, clock, 0.9)
    with pytest.raises(Refused, match="no answer is waiting for detail for question 'nope'"):
        core.refined(RefineReply("nope", "front", 5 * MS, True, frame=frame(5)))
    with pytest.raises(Refused, match="its first pass was"):
        core.refined(reply(ask, stamp_ms=6))
    assert core.refining == 1  # still waiting for the right reply


def test_held_questions_count_against_the_queue_and_shutdown_publishes_them():
    core, clock, _ = make(queue_size=2)
    ask_one(core, clock, 0.9, "a")
    ask_one(core, clock, 0.9, "b")
    refused = core.ask(request("c", clock, stamp_ms=5, text="u=0.1"))
    assert refused.status == Status.BUSY
    records = core.drain()
    assert sorted(r.question_id for r in records) == ["a", "b"]
    assert all(r.refinement == Refinement.TIMED_OUT and r.status == Status.OK for r in records)


def test_without_two_stage_nothing_is_held_and_uncertainty_is_reported():
    clock = FakeClock()
    core = ServerCore(Decoder(), Scripted(), clock)
    core.add_frame(frame(5, payload=b"global"))
    record = ask_one(core, clock, 3.0)
    assert record.refinement == Refinement.NONE and record.uncertainty == 3.0
    assert core.refining == 0 and math.isfinite(record.uncertainty)


def test_an_answerer_that_reports_no_uncertainty_gives_minus_one_and_records_stay_comparable():
    from test_server_core import Answerer

    clock = FakeClock()
    core = ServerCore(Decoder(), Answerer(clock), clock)  # answer() only: no per-token numbers
    core.add_frame(frame(5))
    record = core.run(core.ask(request("q", clock, stamp_ms=5)))
    assert record.status == Status.OK and record.uncertainty == -1.0
    assert record == dataclasses.replace(record)  # no NaN inside: a record equals its copy


def test_a_second_pass_abandoned_at_shutdown_still_publishes_the_first_answer():
    core, clock, _ = make()
    ask = ask_one(core, clock, 0.9)
    job = core.refined(reply(ask))
    record = core.abandon(job, "server shutting down")
    assert (record.status, record.refinement, record.text) == (Status.OK, Refinement.TIMED_OUT, "first:global")
    assert "shutting down" in record.error and core.in_flight == 0
