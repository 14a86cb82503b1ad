"""Offline re-answering of recorded features: on the bag's own time without ROS (pairing, waiting, NO_FRAME at the
deadline, the report), and against a live replay recorded through real rclpy with the tiny model: the same answers."""

from __future__ import annotations

import json
import uuid

from rclpy.parameter import Parameter

from tofc_ros.codec import load_codec
from tofc_ros.config import ServerConfig
from tofc_ros.eval import offline
from tofc_ros.eval.replay import REPORT_FILES, iter_messages
from tofc_ros.eval.replay.bags import BagQuestion, BagWriter, read_feature_bag
from tofc_ros.eval.replay.messages import answer_cdr, answer_record, features_cdr, question_cdr
from tofc_ros.eval.replay.sample import write_sample_bag
from tofc_ros.eval.replay.typestore import ANSWER, FEATURES, QUESTION
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.nodes.device_node import DeviceNode
from tofc_ros.nodes.replay_node import ReplayNode
from tofc_ros.nodes.server_node import ServerNode
from tofc_ros.pipeline.answerer import build_server
from tofc_ros.pipeline.records import AnswerRecord, Status

from conftest import wait_for

S = 1_000_000_000
T0 = 1_700_000_000 * S


def _feature_bag(path):
    """Two frames and four questions of camera 'front': one asked before its frame arrives, one about a frame that
    never comes (timeout 0.5 s), one about the latest frame, one recorded with a live answer that differs."""
    codec = load_codec("placeholder-zstd")
    frames = {1: codec.encode(synthetic_frame(1, 8, 8)), 2: codec.encode(synthetic_frame(2, 8, 8))}
    questions = [
        (T0 + 100_000_000, BagQuestion(0, "early", "What is it?", "front", T0 + 2 * S, 2.0)),
        (T0 + 200_000_000, BagQuestion(0, "never", "What is it?", "front", T0 + 9 * S, 0.5)),
        (T0 + 1 * S + 10, BagQuestion(0, "latest", "And now?", "", 0, 0.0)),
    ]
    with BagWriter(path) as bag:
        bag.write(
            "/features", FEATURES, T0 + 1 * S, features_cdr("cam", "front", T0 + 1 * S, 0, codec.format, frames[1])
        )
        for t, q in questions:
            bag.write("/questions", QUESTION, t, question_cdr(q, t))
        bag.write(
            "/features", FEATURES, T0 + 2 * S, features_cdr("cam", "front", T0 + 2 * S, 1, codec.format, frames[2])
        )
        bag.write("/answers", ANSWER, T0 + 3 * S, answer_cdr(AnswerRecord("latest", Status.OK, text="something else")))
    return path


def test_offline_reanswering_follows_the_bags_time(tmp_path):
    bag = read_feature_bag(_feature_bag(tmp_path / "in"))
    assert [kind for _, kind, _ in bag.events] == ["question", "question", "features", "question", "features"]
    config = ServerConfig(answerer="placeholder")
    log = offline.reanswer(bag, *build_server(config), config)
    answers = {qid: rec for qid, (rec, _) in log.answers.items()}
    assert set(answers) == {"early", "never", "latest"}
    # 'early' waited 1.9 s for its frame; 'latest' took frame 1 at once; 'never' expired at its deadline, on bag time.
    early, never, latest = answers["early"], answers["never"], answers["latest"]
    assert early.status == Status.OK and early.image_stamp_ns == T0 + 2 * S and early.wait_ms == 1900.0
    assert latest.status == Status.OK and latest.image_stamp_ns == T0 + S and latest.total_ms == 0.0
    assert never.status == Status.NO_FRAME and never.total_ms == 500.0
    # Report times count from the bag's first event (0.1 s): asked at 0.1 s, answered 0.5 s later.
    assert [t for q, t in log.asked if q.question_id == "never"] == [0.1] and log.answers["never"][1] == 0.6
    match = offline.agreement(log, bag.answers)
    assert (match["compared"], match["agree"]) == (1, 0) and match["differ"][0]["question_id"] == "latest"


def test_the_cli_writes_the_replay_report_and_an_answers_bag(tmp_path):
    bag = _feature_bag(tmp_path / "in")
    report = offline.main(["--bag", str(bag), "--out", str(tmp_path / "out"), "--answerer", "placeholder"])
    assert report["meta"]["mode"] == "offline" and report["outcome"] == "ok"
    assert report["summary"]["status_counts"] == {"NO_FRAME": 1, "OK": 2}
    for name in REPORT_FILES:
        assert (tmp_path / "out" / name).stat().st_size > 0
    written = [answer_record(d) for _, t, _, d in iter_messages(tmp_path / "out" / "answers") if t == ANSWER]
    assert sorted(a.question_id for a in written) == ["early", "latest", "never"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["meta"]["agreement"]["compared"] == 1


def _params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


def test_live_and_offline_answers_agree_for_the_same_bag(ros, tmp_path, tiny_model_dir, tiny_codec_path):
    """The live graph (device: vision tower + DPC-KNN + TOFC; server: the tiny LLaVA) records its features and
    answers; re-answered offline with the same model, every question gets the same status and text."""
    model = dict(model_path=str(tiny_model_dir), codec_path=str(tiny_codec_path))
    ns = f"o_{uuid.uuid4().hex[:6]}"
    ros.add(
        DeviceNode(
            context=ros.context,
            namespace=ns,
            parameter_overrides=_params(codec="tofc", n_clusters=8, max_rate_hz=50.0, **model),
        )
    )
    ros.add(
        ServerNode(
            context=ros.context,
            namespace=ns,
            parameter_overrides=_params(answerer="model", max_new_tokens=4, default_timeout_s=30.0, **model),
        )
    )
    bag, sidecar, n = write_sample_bag(tmp_path / "in.mcap", n_images=3, questions_per_image=2)
    replay = ros.add(
        ReplayNode(
            context=ros.context,
            namespace=ns,
            parameter_overrides=_params(
                bag=str(bag),
                output_dir=str(tmp_path / "live"),
                mode="fast",
                record_features=True,
                startup_timeout_s=30.0,
                answer_timeout_s=60.0,
            ),
        )
    )
    wait_for(lambda: replay.finished, timeout=120)
    live = replay.finish()
    assert live["summary"]["status_counts"] == {"OK": n}, live["summary"]

    base = ["--bag", str(tmp_path / "live" / "answers"), "--questions", str(sidecar)]
    base += ["--model", str(tiny_model_dir), "--codec", str(tiny_codec_path)]
    same = offline.main([*base, "--max-new-tokens", "4", "--out", str(tmp_path / "offline")])
    assert same["meta"]["agreement"] == {"compared": n, "agree": n, "differ": []}
    assert [(r["question_id"], r["status"], r["answer"]) for r in same["questions"]] == [
        (r["question_id"], r["status"], r["answer"]) for r in live["questions"]
    ]
    assert same["summary"]["accuracy"] == live["summary"]["accuracy"]
    assert same["summary"]["bytes_per_question"] == live["summary"]["bytes_per_question"]
    # Other generation settings on the same recording: one token per answer, batched by two.
    short = offline.main([*base, "--max-new-tokens", "1", "--max-batch-size", "2", "--out", str(tmp_path / "o1")])
    assert short["summary"]["status_counts"] == {"OK": n}
    for one, full in zip(short["questions"], live["questions"]):
        assert full["answer"].startswith(one["answer"])
