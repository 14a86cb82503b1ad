"""Replay bags with rosbags: our writer's round trip in mcap and sqlite3, what a replay reads, and clear errors."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from tofc_ros.eval.replay import BagError, BagWriter, iter_messages, read_replay_bag
from tofc_ros.eval.replay.bags import BagQuestion
from tofc_ros.eval.replay.messages import answer_cdr, answer_record, features_cdr, image_cdr, question_cdr
from tofc_ros.eval.replay.sample import write_sample_bag
from tofc_ros.eval.replay.typestore import ANSWER, FEATURES, IMAGE, QUESTION, typestore
from tofc_ros.pipeline.records import AnswerRecord, Status

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "easyvqa_sample.mcap"
STORAGES = ["mcap", "sqlite3"]


def _features_cdr(stamp_ns: int, payload: bytes) -> bytes:
    return features_cdr("f", "front", stamp_ns, 3, "fp16/1", payload, device_ms=4.0, sent=stamp_ns)


@pytest.mark.parametrize("storage", STORAGES)
def test_round_trip_keeps_every_message_and_the_ros2_bag_type_hashes(tmp_path, storage):
    rng = np.random.default_rng(0)
    written = []
    with BagWriter(tmp_path / "bag", storage) as w:
        for i in range(3):
            t = 10**18 + i * 10**8
            written.append(("/cam", IMAGE, t, image_cdr(rng.integers(0, 255, (6, 7, 3), dtype=np.uint8), t)))
            written.append(("/questions", QUESTION, t + 1, question_cdr(BagQuestion(t + 1, f"q{i}", "What?"), t + 1)))
            written.append(("/features", FEATURES, t + 2, _features_cdr(t, rng.bytes(100))))
            answer = AnswerRecord(f"q{i}", Status.NO_FRAME, error="none", total_ms=1.5)
            written.append(("/answers", ANSWER, t + 3, answer_cdr(answer)))
        for row in written:
            w.write(*row)
    assert sorted(iter_messages(tmp_path / "bag")) == sorted(written)
    assert answer_record(written[3][3]).status == Status.NO_FRAME

    # Connection metadata equals what `ros2 bag record` stores: the definition text and the RIHS01 hash that
    # rosidl generated for our interface package (share/tofc_msgs/msg/*.json).
    with Reader(tmp_path / "bag") as r:
        conns = {c.topic: c for c in r.connections}
    assert list((tmp_path / "bag").glob("*.mcap" if storage == "mcap" else "*.db3"))
    for topic, msgtype in (("/questions", QUESTION), ("/answers", ANSWER), ("/features", FEATURES)):
        generated = json.loads((Path(sys.prefix) / "share" / f"{msgtype}.json").read_text())
        hashes = {h["type_name"]: h["hash_string"] for h in generated["type_hashes"]}
        assert conns[topic].digest == hashes[msgtype]
        assert conns[topic].msgdef.data == typestore().generate_msgdef(msgtype, ros_version=2)[0]


def test_rclpy_reads_our_cdr_bytes_unchanged():
    from rclpy.serialization import deserialize_message, serialize_message

    from tofc_msgs.msg import Answer, Question

    data = question_cdr(BagQuestion(0, "q1", "What shape?", "front", 5 * 10**9 + 7, 2.5), 123)
    msg = deserialize_message(data, Question)
    assert (
        msg.question_id,
        msg.text,
        msg.camera,
        msg.image_stamp.sec,
        msg.image_stamp.nanosec,
        msg.timeout_s,
        msg.header.stamp.nanosec,
    ) == ("q1", "What shape?", "front", 5, 7, 2.5, 123)
    # Same bytes but for CDR padding, which Fast CDR leaves uninitialised: compare what rosbags decodes.
    again = typestore().deserialize_cdr(serialize_message(msg), QUESTION)
    assert (again.question_id, again.image_stamp.nanosec, again.timeout_s) == ("q1", 7, 2.5)
    ans = Answer(question_id="q1", status=Answer.STATUS_BUSY, error="full", payload_bytes=9, total_ms=2.0)
    rec = answer_record(serialize_message(ans))
    assert (rec.question_id, rec.status, rec.error, rec.payload_bytes, rec.total_ms) == (
        "q1",
        Status.BUSY,
        "full",
        9,
        2.0,
    )


@pytest.mark.parametrize("storage", STORAGES)
def test_sample_bag_reads_as_frames_and_questions(tmp_path, storage):
    bag, sidecar, n = write_sample_bag(tmp_path / "b", storage, n_images=3, questions_per_image=2)
    rb = read_replay_bag(bag)
    assert (rb.storage, len(rb.frames), len(rb.questions), n) == (storage, 3, 6, 6)
    assert [f.t_ns for f in rb.frames] == sorted(f.t_ns for f in rb.frames)
    assert {q.image_stamp_ns for q in rb.questions} == {f.stamp_ns for f in rb.frames}
    assert all(f.t_ns < q.t_ns for f in rb.frames for q in rb.questions if q.image_stamp_ns == f.stamp_ns)
    truth = [json.loads(line) for line in sidecar.read_text().splitlines()]
    assert [t["question_id"] for t in truth] == [q.question_id for q in rb.questions]


def test_committed_sample_is_small_complete_and_readable_by_an_independent_reader():
    mcap_reader = pytest.importorskip("mcap_ros2.reader")
    assert SAMPLE.stat().st_size < 1_000_000
    rb = read_replay_bag(SAMPLE)
    assert (len(rb.frames), len(rb.questions), rb.camera_topic) == (20, 50, "/camera/image_raw")
    truth = [json.loads(line) for line in SAMPLE.with_name("easyvqa_sample.questions.jsonl").read_text().splitlines()]
    assert [t["question_id"] for t in truth] == [q.question_id for q in rb.questions]
    decoded = {"/camera/image_raw": [], "/questions": []}
    for m in mcap_reader.read_ros2_messages(str(SAMPLE)):
        decoded[m.channel.topic].append(m.ros_msg)
    assert [q.text for q in decoded["/questions"]] == [q.text for q in rb.questions]
    img = decoded["/camera/image_raw"][0]
    assert (img.width, img.height, img.encoding, len(img.data)) == (64, 64, "rgb8", 64 * 64 * 3)


def test_sample_tool_output_is_deterministic(tmp_path):
    import subprocess

    digests = []
    for run in range(2):
        out = tmp_path / f"r{run}" / "easyvqa_sample.mcap"
        subprocess.run(
            [sys.executable, str(REPO / "tools" / "make_sample_bag.py"), "--out", str(out)],
            check=True,
            capture_output=True,
        )
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1] == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()


def _bag(tmp_path, storage, extra=()):
    frame = image_cdr(np.zeros((2, 2, 3), np.uint8), 5)
    with BagWriter(tmp_path / "bag", storage) as w:
        w.write("/cam", IMAGE, 5, frame)
        w.write("/questions", QUESTION, 6, question_cdr(BagQuestion(6, "q", "What?", "", 5), 6))
        for row in extra:
            w.write(*row)
    return tmp_path / "bag"


@pytest.mark.parametrize("storage", STORAGES)
def test_other_topics_are_skipped_and_listed(tmp_path, storage):
    string = typestore().types["std_msgs/msg/String"](data="hi")
    bag = _bag(
        tmp_path,
        storage,
        [("/chatter", "std_msgs/msg/String", 7, typestore().serialize_cdr(string, "std_msgs/msg/String"))],
    )
    rb = read_replay_bag(bag)
    assert rb.skipped_topics == {"/chatter": "std_msgs/msg/String"}
    assert (len(rb.frames), len(rb.questions)) == (1, 1)


@pytest.mark.parametrize("storage", STORAGES)
def test_a_malformed_message_is_a_clear_error(tmp_path, storage):
    bad = question_cdr(BagQuestion(8, "q2", "What?"), 8)[:10]  # truncated CDR
    bag = _bag(tmp_path, storage, [("/questions", QUESTION, 8, bad)])
    with pytest.raises(BagError, match=r"message #1 on '/questions' \(tofc_msgs/msg/Question\) at log time 8 ns"):
        read_replay_bag(bag)


def test_unknown_missing_and_ambiguous_topics_are_clear_errors(tmp_path):
    bag = _bag(tmp_path, "mcap")
    with pytest.raises(BagError, match=r"camera topic '/nope' is not in bag .*/cam \(sensor_msgs/msg/Image\)"):
        read_replay_bag(bag, camera_topic="/nope")
    with pytest.raises(BagError, match=r"has type tofc_msgs/msg/Question, expected"):
        read_replay_bag(bag, camera_topic="/questions")
    with pytest.raises(BagError, match="does not exist"):
        read_replay_bag(tmp_path / "missing.mcap")
    (tmp_path / "junk.mcap").write_bytes(b"not a bag")
    with pytest.raises(BagError, match="cannot open bag"):
        read_replay_bag(tmp_path / "junk.mcap")
    two = tmp_path / "two"
    with BagWriter(two, "mcap") as w:
        w.write("/a", IMAGE, 1, image_cdr(np.zeros((2, 2, 3), np.uint8), 1))
        w.write("/b", IMAGE, 2, image_cdr(np.zeros((2, 2, 3), np.uint8), 2))
    with pytest.raises(BagError, match=r"several camera topics \(/a, /b\): name one"):
        read_replay_bag(two)
    assert len(read_replay_bag(two, camera_topic="/b", need_questions=False).frames) == 1
    with pytest.raises(BagError, match="no tofc_msgs/msg/Question topic"):
        read_replay_bag(two, camera_topic="/b")


def test_a_question_topic_with_another_definition_is_refused(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = tmp_path / "foreign"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        cam = w.add_connection("/cam", IMAGE, typestore=typestore())
        w.write(cam, 1, image_cdr(np.zeros((2, 2, 3), np.uint8), 1))
        q = w.add_connection("/questions", QUESTION, msgdef="string text", rihs01="RIHS01_" + "ab" * 32)
        w.write(q, 2, b"\x00\x01\x00\x00\x02\x00\x00\x00a\x00")
    with pytest.raises(BagError, match="recorded with another definition of tofc_msgs/msg/Question"):
        read_replay_bag(path)


def test_duplicate_question_ids_are_refused(tmp_path):
    q = question_cdr(BagQuestion(7, "q", "What?"), 7)
    with pytest.raises(BagError, match=r"repeats question ids \['q'\]"):
        read_replay_bag(_bag(tmp_path, "mcap", [("/questions", QUESTION, 7, q)]))


def test_writer_refuses_an_existing_path_and_a_type_change(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileExistsError):
        BagWriter(tmp_path / "x")
    with pytest.raises(ValueError, match="storage must be one of"):
        BagWriter(tmp_path / "y", "rosbag1")
    with BagWriter(tmp_path / "z") as w:
        w.write("/a", ANSWER, 1, answer_cdr(AnswerRecord("q", Status.OK)))
        with pytest.raises(ValueError, match="already carries tofc_msgs/msg/Answer"):
            w.write("/a", QUESTION, 2, question_cdr(BagQuestion(0, "q", "x"), 0))


@pytest.mark.parametrize("storage", STORAGES)
def test_background_writer_accepts_writes_from_any_thread(tmp_path, storage):
    import threading

    from tofc_ros.eval.replay.bags import BackgroundBagWriter

    w = BackgroundBagWriter(tmp_path / "bag", storage)
    threads = [
        threading.Thread(
            target=lambda i=i: w.write(f"/a{i}", ANSWER, i + 1, answer_cdr(AnswerRecord(f"q{i}", Status.OK)))
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert sorted(topic for topic, *_ in iter_messages(tmp_path / "bag")) == ["/a0", "/a1", "/a2", "/a3"]
    with pytest.raises(FileExistsError):
        BackgroundBagWriter(tmp_path / "bag", storage)


def test_a_scene_bag_holds_camera_resolution_frames_with_true_answers(tmp_path):
    from tofc_ros.data import scenes

    bag, sidecar, n = write_sample_bag(tmp_path / "s.mcap", n_images=2, data="scenes", size=(1280, 720))
    rb = read_replay_bag(bag)
    img = typestore().deserialize_cdr(rb.frames[0].data, IMAGE)
    assert (img.width, img.height, img.encoding) == (1280, 720, "rgb8") and len(rb.frames) == 2
    items = scenes.load_split("test", 2, sizes=((1280, 720),))
    expected = [a for it in items for a in it.answers[: (3 if it.image_id % 2 == 0 else 2)]]
    assert [json.loads(line)["answer"] for line in sidecar.read_text().splitlines()] == expected == expected[:n]
    (tmp_path / "again").mkdir()
    again, _, _ = write_sample_bag(tmp_path / "again" / "s.mcap", n_images=2, data="scenes", size=(1280, 720))
    assert again.read_bytes() == bag.read_bytes()  # byte for byte: what `make setup` rebuilds
