"""The pure server core with a fake clock: pairing, deadlines, bounds, statuses and the latency split, batches,
streaming, cancel and the deadline during generation, no sleeps."""

from __future__ import annotations

import pytest

from tofc_ros.pipeline.answerer import Answered
from tofc_ros.pipeline.decoder import DecodeError, ModelMismatch
from tofc_ros.pipeline.pairing import Refused
from tofc_ros.pipeline.records import ReceivedFrame, Request, Status
from tofc_ros.pipeline.server_core import Hooks, Job, ServerCore

MS = 1_000_000


class FakeClock:
    def __init__(self, now: int = 1_000 * MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Decoder:
    """Returns the payload as the 'decoded' frame; raises what a test asks for."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None

    def decode(self, payload, claimed_format=None):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return payload


class Answerer:
    def __init__(self, clock: FakeClock, cost_ms: int = 0) -> None:
        self.clock, self.cost_ms = clock, cost_ms
        self.error: Exception | None = None

    def answer(self, frame, question):
        self.clock.now += self.cost_ms * MS
        if self.error is not None:
            raise self.error
        return f"{frame.decode()}:{question}"


def frame(
    stamp_ms: int,
    camera: str = "front",
    payload: bytes = b"px",
    sent_ms: int = 0,
    arrival_ms: int = 0,
    refusal: str = "",
) -> ReceivedFrame:
    return ReceivedFrame(
        camera,
        stamp_ms * MS,
        0,
        "placeholder-zstd/1",
        payload,
        len(payload),
        refusal,
        7.5,
        sent_ms * MS,
        arrival_ms * MS,
    )


def request(
    qid: str,
    clock: FakeClock,
    stamp_ms: int = 0,
    timeout_ms: int = 500,
    asked_ms: int = 0,
    camera: str = "front",
    text: str = "q?",
) -> Request:
    return Request(qid, text, camera, stamp_ms * MS, asked_ms * MS, clock(), clock() + timeout_ms * MS)


def make(queue_size: int = 4, cost_ms: int = 0, **kw):
    clock = FakeClock()
    decoder, answerer = Decoder(), Answerer(clock, cost_ms)
    return ServerCore(decoder, answerer, clock, queue_size=queue_size, **kw), clock, decoder, answerer


def test_a_question_about_a_cached_frame_is_a_job_with_the_exact_latency_split():
    core, clock, _, _ = make(cost_ms=40)
    assert core.add_frame(frame(5, sent_ms=990, arrival_ms=1_000)) == []
    clock.now = 1_010 * MS
    job = core.ask(request("a", clock, stamp_ms=5, asked_ms=1_004))
    assert isinstance(job, Job) and core.in_flight == 1
    clock.now = 1_030 * MS  # 20 ms in the queue
    rec = core.run(job)
    assert (rec.status, rec.text, rec.error) == (Status.OK, "px:q?", "")
    assert (rec.image_stamp_ns, rec.payload_bytes, rec.device_ms) == (5 * MS, 2, 7.5)
    assert (rec.transfer_ms, rec.wait_ms, rec.server_ms, rec.total_ms) == (10.0, 20.0, 40.0, 66.0)
    assert core.in_flight == 0


def test_a_question_waits_for_its_frame_and_the_frame_releases_it():
    core, clock, _, _ = make()
    assert core.ask(request("a", clock, stamp_ms=9)) is None and core.waiting == 1
    assert core.ask(request("latest", clock)) is None
    jobs = core.add_frame(frame(9))
    assert sorted(j.request.question_id for j in jobs) == ["a", "latest"] and core.waiting == 0
    assert core.add_frame(frame(10)) == []


def test_expiry_answers_no_frame_only_after_the_deadline():
    core, clock, _, _ = make()
    core.ask(request("late", clock, stamp_ms=77, timeout_ms=300))
    clock.now += 299 * MS
    assert core.expire() == []
    clock.now += 1 * MS
    (rec,) = core.expire()
    assert rec.status == Status.NO_FRAME and "stamped 77000000 ns" in rec.error and rec.total_ms == 300.0
    assert core.expire() == [] and core.waiting == 0


def test_a_job_that_waited_past_its_deadline_times_out_without_running_the_model():
    core, clock, decoder, _ = make()
    core.add_frame(frame(1))
    job = core.ask(request("slow", clock, stamp_ms=1, timeout_ms=100))
    clock.now += 101 * MS
    rec = core.run(job)
    assert rec.status == Status.TIMEOUT and decoder.calls == 0 and core.in_flight == 0


def test_the_bound_counts_waiting_and_queued_questions_together():
    core, clock, _, _ = make(queue_size=2)
    core.add_frame(frame(1))
    assert isinstance(core.ask(request("q0", clock, stamp_ms=1)), Job)
    assert core.ask(request("w", clock, stamp_ms=99)) is None  # waiting
    busy = core.ask(request("q2", clock, stamp_ms=1))
    assert busy.status == Status.BUSY and "2 questions held, limit 2" in busy.error


@pytest.mark.parametrize("qid, text", [("", "q?"), ("x", "   ")])
def test_empty_ids_and_texts_are_bad_requests(qid, text):
    core, clock, _, _ = make()
    rec = core.ask(request(qid, clock, text=text))
    assert rec.status == Status.BAD_REQUEST and core.waiting == 0


def test_a_duplicate_waiting_id_and_a_camera_too_many_are_refused():
    core, clock, _, _ = make(max_cameras=1)
    core.ask(request("dup", clock, stamp_ms=5))
    assert core.ask(request("dup", clock, stamp_ms=6)).status == Status.BAD_REQUEST
    core.add_frame(frame(1, camera="a"))
    with pytest.raises(Refused) as err:
        core.add_frame(frame(1, camera="b"))
    assert err.value.status == Status.BAD_REQUEST


@pytest.mark.parametrize(
    "error, status",
    [
        (DecodeError("bad crc"), Status.DECODE_ERROR),
        (ModelMismatch("other weights"), Status.MODEL_MISMATCH),
        (RuntimeError("boom"), Status.INTERNAL_ERROR),
    ],
)
def test_every_failure_of_decode_or_answer_is_one_answer_with_its_status(error, status):
    for stage in ("decode", "answer"):
        core, clock, decoder, answerer = make()
        (decoder if stage == "decode" else answerer).error = error
        core.add_frame(frame(1))
        rec = core.run(core.ask(request("q", clock, stamp_ms=1)))
        assert rec.status == status and str(error) in rec.error and core.in_flight == 0


def test_a_refused_payload_is_decoded_once_for_all_its_questions():
    core, clock, decoder, _ = make()
    decoder.error = DecodeError("truncated")
    core.add_frame(frame(1))
    jobs = [core.ask(request(f"q{i}", clock, stamp_ms=1)) for i in range(3)]
    assert [core.run(j).status for j in jobs] == [Status.DECODE_ERROR] * 3 and decoder.calls == 1


def test_an_oversize_frame_refused_by_the_node_is_a_decode_error_unread():
    core, clock, decoder, _ = make()
    core.add_frame(frame(1, payload=b"", refusal="payload of 9 B exceeds max_payload_bytes = 8"))
    rec = core.run(core.ask(request("q", clock, stamp_ms=1)))
    assert rec.status == Status.DECODE_ERROR and "max_payload_bytes" in rec.error and decoder.calls == 0


def test_shutdown_answers_every_question_exactly_once():
    core, clock, _, _ = make()
    core.add_frame(frame(1))
    queued = core.ask(request("queued", clock, stamp_ms=1))
    core.ask(request("waiting", clock, stamp_ms=2))
    records = [core.abandon(queued, "server shutting down"), *core.drain()]
    assert sorted((r.question_id, r.status) for r in records) == [
        ("queued", Status.TIMEOUT),
        ("waiting", Status.TIMEOUT),
    ]
    assert core.in_flight == 0 and core.waiting == 0 and core.drain() == []


def test_a_failed_publish_becomes_internal_error_for_the_same_question():
    core, clock, _, _ = make()
    core.add_frame(frame(1))
    job = core.ask(request("q", clock, stamp_ms=1))
    ok = core.run(job)
    rec = core.failed(job, OSError("publisher gone"))
    assert (rec.question_id, rec.status) == (ok.question_id, Status.INTERNAL_ERROR) and "publisher gone" in rec.error


class BatchAnswerer:
    """Answers tasks together, one 'token' (a word of its answer) per step for every row, like a batched decode;
    each step costs ``step_ms`` on the fake clock. Honors max_new_tokens, on_text and stop as ModelAnswerer does."""

    def __init__(self, clock: FakeClock, step_ms: int = 0, words: int = 3) -> None:
        self.clock, self.step_ms, self.words = clock, step_ms, words
        self.batches: list[list[str]] = []
        self.error: Exception | None = None

    def answer(self, frame, question):  # the protocol's one-at-a-time call (never used when answer_batch exists)
        raise AssertionError("answer_batch expected")

    def answer_batch(self, tasks):
        self.batches.append([t.question for t in tasks])
        if self.error is not None:
            raise self.error
        out, live = [], []
        for t in tasks:
            if t.question == "bad":
                out.append(ValueError("features must be [T, n, 64]"))
            else:
                out.append(None)
                live.append(len(out) - 1)
        said = {i: [] for i in live}
        done = dict.fromkeys(live, False)
        stopped = dict.fromkeys(live, False)
        for step in range(self.words):
            if all(done.values()):
                break
            self.clock.now += self.step_ms * MS
            for i in live:
                if done[i]:
                    continue
                said[i].append(f"{tasks[i].frame.decode()}{step}")
                if tasks[i].on_text:
                    tasks[i].on_text(" ".join(said[i]))
                limit = tasks[i].max_new_tokens or self.words
                if len(said[i]) >= limit:
                    done[i] = True
                elif tasks[i].stop and tasks[i].stop():
                    done[i] = stopped[i] = True
        for i in live:
            out[i] = Answered(" ".join(said[i]), stopped[i], len(said[i]))
        return out


def make_batching(queue_size: int = 8, step_ms: int = 0, words: int = 3):
    clock = FakeClock()
    decoder, answerer = Decoder(), BatchAnswerer(clock, step_ms, words)
    return ServerCore(decoder, answerer, clock, queue_size=queue_size), clock, decoder, answerer


def test_a_batch_answers_every_job_in_order_in_one_call_and_decodes_each_frame_once():
    core, clock, decoder, answerer = make_batching(step_ms=10)
    core.add_frame(frame(1, camera="a", payload=b"A"))
    core.add_frame(frame(2, camera="b", payload=b"B"))
    jobs = [
        core.ask(request("qa", clock, stamp_ms=1, camera="a")),
        core.ask(request("qb", clock, stamp_ms=2, camera="b")),
        core.ask(request("qa2", clock, stamp_ms=1, camera="a", text="again?")),
        core.ask(request("bad", clock, stamp_ms=2, camera="b", text="bad")),
    ]
    clock.now += 5 * MS
    records = core.run_batch(jobs)
    assert [r.question_id for r in records] == ["qa", "qb", "qa2", "bad"]
    assert [r.status for r in records] == [Status.OK, Status.OK, Status.OK, Status.INTERNAL_ERROR]
    assert records[0].text == "A0 A1 A2" and records[1].text == "B0 B1 B2" and "features must be" in records[3].error
    assert answerer.batches == [["q?", "q?", "again?", "bad"]] and decoder.calls == 2
    # Every job's work started with the batch's: the same wait and server time (3 steps of 10 ms).
    assert {(r.wait_ms, r.server_ms) for r in records} == {(5.0, 30.0)}
    assert core.in_flight == 0


def test_a_batch_mixes_refused_late_and_answered_jobs_each_with_its_status():
    core, clock, decoder, answerer = make_batching()
    core.add_frame(frame(1))
    core.add_frame(frame(2, refusal="payload of 9 B exceeds max_payload_bytes = 8", payload=b""))
    late = core.ask(request("late", clock, stamp_ms=1, timeout_ms=10))
    clock.now += 20 * MS
    jobs = [late, core.ask(request("refused", clock, stamp_ms=2)), core.ask(request("ok", clock, stamp_ms=1))]
    statuses = [r.status for r in core.run_batch(jobs)]
    assert statuses == [Status.TIMEOUT, Status.DECODE_ERROR, Status.OK] and answerer.batches == [["q?"]]
    answerer.error = RuntimeError("batched generate failed")
    jobs = [core.ask(request(f"x{i}", clock, stamp_ms=1)) for i in range(2)]
    records = core.run_batch(jobs)
    assert {r.status for r in records} == {Status.INTERNAL_ERROR} and "batched generate failed" in records[0].error
    assert core.in_flight == 0


def test_streaming_and_a_cancel_mid_generation_end_canceled_with_the_partial_text():
    core, clock, _, _ = make_batching(words=5)
    core.add_frame(frame(1))
    seen: list[str] = []
    cancel = {"now": False}

    def on_text(text):
        seen.append(text)
        cancel["now"] = len(seen) == 2  # the asker cancels after the second token

    job = core.ask(request("goal", clock, stamp_ms=1))
    other = core.ask(request("topic", clock, stamp_ms=1))
    goal, topic = core.run_batch([job, other], {"goal": Hooks(on_text=on_text, cancelled=lambda: cancel["now"])})
    assert seen == ["px0", "px0 px1"]
    assert (goal.status, goal.text) == (Status.CANCELED, "px0 px1") and "after 2 generated tokens" in goal.error
    assert (topic.status, topic.text) == (Status.OK, "px0 px1 px2 px3 px4")  # its batch-mate is not disturbed


def test_a_cancel_before_generation_and_a_broken_feedback_callback():
    core, clock, _, answerer = make_batching()
    core.add_frame(frame(1))
    rec = core.run(core.ask(request("early", clock, stamp_ms=1)), Hooks(cancelled=lambda: True))
    assert (rec.status, rec.text) == (Status.CANCELED, "") and answerer.batches == []

    def broken(text):
        raise RuntimeError("feedback publisher gone")

    rec = core.run(core.ask(request("fb", clock, stamp_ms=1)), Hooks(on_text=broken))
    assert (rec.status, rec.text) == (Status.OK, "px0 px1 px2")  # feedback is best effort, the answer is not


def test_the_deadline_stops_generation_with_timeout_and_the_partial_text():
    core, clock, _, _ = make_batching(step_ms=40, words=5)
    core.add_frame(frame(1))
    short = core.ask(request("short", clock, stamp_ms=1, timeout_ms=100))
    long = core.ask(request("long", clock, stamp_ms=1, timeout_ms=1_000))
    short_rec, long_rec = core.run_batch([short, long])
    # 40, 80, 120 ms: the third token passes the 100 ms deadline, and generation stops there.
    assert (short_rec.status, short_rec.text) == (Status.TIMEOUT, "px0 px1 px2")
    assert "timeout of 0.1 s after 3 tokens" in short_rec.error
    assert (long_rec.status, long_rec.text) == (Status.OK, "px0 px1 px2 px3 px4")


def test_the_askers_token_limit_reaches_the_answerer():
    core, clock, _, _ = make_batching(words=5)
    core.add_frame(frame(1))
    req = request("short", clock, stamp_ms=1)
    rec = core.run(core.ask(Request(**{**req.__dict__, "max_new_tokens": 2})))
    assert (rec.status, rec.text) == (Status.OK, "px0 px1")


def test_a_one_at_a_time_answerer_streams_its_whole_answer_once():
    core, clock, _, _ = make()
    core.add_frame(frame(1))
    seen = []
    jobs = [core.ask(request(f"q{i}", clock, stamp_ms=1)) for i in range(2)]
    records = core.run_batch(jobs, {"q1": Hooks(on_text=seen.append)})
    assert [r.status for r in records] == [Status.OK, Status.OK] and seen == ["px:q?"]


def test_a_question_with_its_own_frame_is_never_cached_and_counts_against_the_bound():
    core, clock, decoder, _ = make(queue_size=2)
    own = frame(77, payload=b"img")
    job = core.ask_with_frame(request("inline", clock, stamp_ms=77), own)
    assert isinstance(job, Job) and core.cached_frames == 0 and core.in_flight == 1
    assert core.ask(request("waiting", clock, stamp_ms=5)) is None  # waiting for a frame: 2 held
    busy = core.ask_with_frame(request("more", clock), own)
    assert busy.status == Status.BUSY and "2 questions held, limit 2" in busy.error
    assert core.ask_with_frame(request("", clock), own).status == Status.BAD_REQUEST
    rec = core.run(job)
    assert (rec.status, rec.text, rec.image_stamp_ns) == (Status.OK, "img:q?", 77 * MS) and core.in_flight == 0


def test_a_question_withdrawn_while_waiting_for_its_frame_is_canceled_once():
    core, clock, _, _ = make()
    core.ask(request("w", clock, stamp_ms=9))
    rec = core.withdraw("w", "cancelled by the asker")
    assert (rec.status, rec.error) == (Status.CANCELED, "cancelled by the asker") and core.waiting == 0
    assert core.withdraw("w", "again") is None and core.add_frame(frame(9)) == [] and core.expire() == []
