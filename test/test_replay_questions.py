"""Questions files (ground truth and questions to ask), normalised exact-match grading, the report's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tofc_ros.eval.replay import (
    REPORT_FILES,
    ReplayLog,
    build_report,
    is_correct,
    load_questions_file,
    markdown_summary,
    normalise,
    questions_for,
    sidecar_path,
    write_questions_file,
    write_report,
)
from tofc_ros.eval.replay.bags import BagQuestion, Frame, ReplayBag
from tofc_ros.eval.replay.messages import answer_cdr, answer_record, features_cdr, features_frame
from tofc_ros.pipeline.records import AnswerRecord, Status


def test_normalise_and_exact_match():
    assert normalise("  Red. ") == "red"
    assert normalise("It's a CIRCLE!") == "it s a circle"
    assert is_correct("Triangle.", ["triangle"]) and is_correct("yes", ["no", "Yes"])
    assert not is_correct("a red triangle", ["triangle"]) and not is_correct("", [""])


def test_questions_file_with_ground_truth_and_questions(tmp_path):
    path = tmp_path / "q.jsonl"
    write_questions_file(
        path,
        [
            {"question_id": "a", "answer": "red"},
            {"question_id": "b", "text": "What shape?", "image_stamp_ns": 7, "answer": ["circle", "round"]},
            {"question_id": "c", "text": "What color?", "time_s": 0.25, "timeout_s": 2},
        ],
    )
    path.write_text("# comment\n\n" + path.read_text())
    qf = load_questions_file(path)
    assert qf.truth == {"a": ["red"], "b": ["circle", "round"]}
    assert [(q.question_id, q.image_stamp_ns, q.time_s, q.timeout_s) for q in qf.questions] == [
        ("b", 7, None, 0.0),
        ("c", 0, 0.25, 2.0),
    ]
    bag = ReplayBag(
        tmp_path,
        "mcap",
        [
            Frame(1_000, "/c", "sensor_msgs/msg/Image", b"", 7),
            Frame(2_000_000_000, "/c", "sensor_msgs/msg/Image", b"", 8),
        ],
        [BagQuestion(5, "bagq", "x")],
        "/c",
        "/q",
    )
    asked = questions_for(bag, qf)  # the file's questions replace the bag's
    assert [(q.question_id, q.t_ns) for q in asked] == [("b", 1_000 + 1_000_000), ("c", 5 + 250_000_000)]
    assert questions_for(bag, None) == bag.questions


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("not json", "not JSON"),
        ("[1]", "expected a JSON object"),
        ('{"question_id": "a"}', "needs 'text'"),
        ('{"question_id": "", "answer": "x"}', "question_id must be a non-empty string"),
        ('{"question_id": "a", "answer": 3}', "answer must be a string"),
        ('{"question_id": "a", "text": "x", "colour": 1}', "unknown keys ['colour']"),
        ('{"question_id": "a", "text": "x", "image_stamp_ns": -1}', "must not be negative"),
        ('{"question_id": "a", "answer": "x", "time_s": 1}', "given without 'text'"),
    ],
)
def test_questions_file_errors_name_the_line(tmp_path, line, fragment):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": "ok", "answer": "y"}\n' + line + "\n")
    with pytest.raises(ValueError, match=r"q\.jsonl:2: ") as info:
        load_questions_file(path)
    assert fragment in str(info.value)


def test_duplicate_ids_in_a_questions_file(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": "a", "answer": "y"}\n{"question_id": "a", "answer": "z"}\n')
    with pytest.raises(ValueError, match="appears twice"):
        load_questions_file(path)


def test_sidecar_path(tmp_path):
    (tmp_path / "x.mcap").write_bytes(b"")
    (tmp_path / "d").mkdir()
    assert sidecar_path(tmp_path / "x.mcap") == tmp_path / "x.questions.jsonl"
    assert sidecar_path(tmp_path / "d") == tmp_path / "d.questions.jsonl"


def _log() -> ReplayLog:
    log = ReplayLog(meta={"bag": "b.mcap", "storage": "mcap", "mode": "timed", "rate": 2.0, "duration_s": 3.0})
    log.truth = {"q0": ["red"], "q1": ["circle"], "q2": ["blue"]}
    specs = [
        ("q0", "OK", "Red.", 300, 10.0),
        ("q1", "OK", "square", 500, 20.0),
        ("q2", "NO_FRAME", "", 0, 5000.0),
        ("q3", None, "", 0, 0.0),
    ]
    for i, (qid, status, text, size, total) in enumerate(specs):
        log.asked.append((BagQuestion(i, qid, f"question {i}?", "front", 7), 0.1 * i))
        if status:
            rec = answer_record(
                answer_cdr(
                    AnswerRecord(
                        qid,
                        Status[status],
                        text=text,
                        payload_bytes=size,
                        device_ms=1.0,
                        transfer_ms=2.0,
                        wait_ms=3.0,
                        server_ms=4.0,
                        total_ms=total,
                        error="" if status == "OK" else "no frame",
                    )
                )
            )
            log.answers[qid] = (rec, 0.1 * i + total / 1000)
    log.frames = [(7, 0.0), (8, 0.5), (9, 1.0)]
    log.features = [
        (features_frame(features_cdr("cam", "front", 7, 0, "x", bytes(300))), 0.01),
        (features_frame(features_cdr("cam", "front", 9, 1, "x", bytes(500))), 1.01),
    ]
    return log


def test_report_counts_accuracy_bytes_latency_and_drops():
    report = build_report(_log())
    s = report["summary"]
    assert (s["questions"], s["answered"], s["unanswered"]) == (4, 3, 1)
    assert s["status_counts"] == {"NO_FRAME": 1, "OK": 2, "UNANSWERED": 1}
    assert (s["with_ground_truth"], s["correct"]) == (3, 1)
    assert s["accuracy"] == pytest.approx(1 / 3) and s["accuracy_ok_only"] == pytest.approx(0.5)
    assert s["bytes_per_question"] == {"n": 2, "mean": 400.0, "median": 400.0}
    assert s["latency_ms"]["total_ms"]["n"] == 2 and s["latency_ms"]["total_ms"]["mean"] == pytest.approx(15.0)
    assert s["latency_ms"]["server_ms"]["p95"] == pytest.approx(4.0)
    assert (s["frames_played"], s["features_received"], s["frames_dropped"]) == (3, 2, 1)
    rows = {r["question_id"]: r for r in report["questions"]}
    assert rows["q0"]["correct"] is True and rows["q1"]["correct"] is False and rows["q3"]["correct"] is None
    assert rows["q3"]["status"] == "UNANSWERED" and rows["q3"]["total_ms"] is None
    assert rows["q2"]["error"] == "no frame" and rows["q0"]["ground_truth"] == ["red"]


def test_report_files_are_json_markdown_and_valid_pngs(tmp_path):
    report = write_report(_log(), tmp_path / "out")
    for name in REPORT_FILES:
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == json.loads(json.dumps(report))
    for name in ("accuracy_bytes.png", "latency.png", "timeline.png"):
        with Image.open(tmp_path / "out" / name) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 200
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| questions answered | 3/4 |" in md and "33.3% (1/3)" in md and "| q3 |" in md
    assert markdown_summary(report) in md


def test_report_without_answers_or_ground_truth(tmp_path):
    log = ReplayLog()
    log.asked.append((BagQuestion(0, "q", "x"), 0.0))
    report = write_report(log, tmp_path)
    s = report["summary"]
    assert s["accuracy"] is None and s["bytes_per_question"]["mean"] is None and s["drop_rate"] is None
    assert "no ground truth" in markdown_summary(report)
    assert np.isfinite(json.loads((tmp_path / "report.json").read_text())["summary"]["questions"])


def test_answer_and_features_messages_round_trip_through_cdr():
    rec = AnswerRecord(
        "q", Status.MODEL_MISMATCH, "other weights", "", "front", 5, "tofc/1", 99, 1.5, 2.5, 3.5, 4.5, 12.0
    )
    assert answer_record(answer_cdr(rec, stamp=3)) == rec
    frame = features_frame(
        features_cdr("cam", "front", 11, 4, "tofc/1", b"abc", device_ms=2.0, sent=9), arrival_ns=20, keep_payload=True
    )
    assert (frame.camera, frame.stamp_ns, frame.sequence, frame.format, frame.payload) == (
        "front",
        11,
        4,
        "tofc/1",
        b"abc",
    )
    assert (frame.payload_size, frame.device_ms, frame.sent_ns, frame.arrival_ns) == (3, 2.0, 9, 20)


def test_overlays_of_asked_frames_are_written_beside_their_questions(tmp_path):
    log = _log()
    log.overlays = {7: np.full((4, 6, 3), 200, np.uint8)}
    report = write_report(log, tmp_path)
    assert report["overlays"] == [{"image_stamp_ns": 7, "file": "overlay_0.png", "questions": ["q0", "q1", "q2", "q3"]}]
    with Image.open(tmp_path / "overlay_0.png") as im:
        assert im.size == (6, 4)
    md = (tmp_path / "report.md").read_text()
    assert "## What the robot sent" in md and "![frame 7](overlay_0.png)" in md and "question 0? → Red." in md
