"""The replay node with real rclpy, the generated messages and real bags (in-process graph and the launch file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from PIL import Image
from rclpy.parameter import Parameter

from tofc_ros.eval.replay import REPORT_FILES, iter_messages, write_questions_file
from tofc_ros.eval.replay.messages import answer_record
from tofc_ros.eval.replay.sample import write_sample_bag
from tofc_ros.eval.replay.typestore import ANSWER, QUESTION
from tofc_ros.nodes.device_node import DeviceNode
from tofc_ros.nodes.parameters import ParameterError
from tofc_ros.nodes.replay_node import ReplayNode
from tofc_ros.nodes.server_node import ServerNode

from conftest import wait_for


def _params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


def _replay(ros, ns, bag, out, **params):
    # Replay mechanics are under test here, in one process with the replay node: the placeholder codec keeps the
    # vision tower from holding the GIL while the replay's timing is measured (the launch test runs the model).
    device = DeviceNode(
        context=ros.context, namespace=ns, parameter_overrides=_params(max_rate_hz=50.0, codec="placeholder-zstd")
    )
    server = ServerNode(
        context=ros.context, namespace=ns, parameter_overrides=_params(default_timeout_s=3.0, answerer="placeholder")
    )
    ros.add(device)
    ros.add(server)
    replay = ros.add(
        ReplayNode(
            context=ros.context,
            namespace=ns,
            parameter_overrides=_params(
                bag=str(bag), output_dir=str(out), startup_timeout_s=20.0, answer_timeout_s=10.0, **params
            ),
        )
    )
    wait_for(lambda: replay.finished, timeout=40)
    assert replay.failed is None
    return replay, replay.finish()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_replay_answers_every_question_records_them_and_reports(ros, tmp_path, storage):
    bag, _, n = write_sample_bag(tmp_path / "in", storage, n_images=3, questions_per_image=2)
    replay, report = _replay(
        ros, f"r_{uuid.uuid4().hex[:6]}", bag, tmp_path / "out", mode="fast", storage=storage, record_features=True
    )
    s = report["summary"]
    assert (s["questions"], s["answered"], s["unanswered"]) == (n, n, 0)
    assert s["status_counts"] == {"OK": n}  # placeholder codec: every frame decodes; accuracy not checked yet
    assert (s["frames_played"], s["features_received"], s["frames_dropped"]) == (3, 3, 0)
    assert s["with_ground_truth"] == n and s["bytes_per_question"]["n"] == n
    assert s["latency_ms"]["total_ms"]["n"] == n and s["latency_ms"]["total_ms"]["p95"] > 0
    assert report["meta"]["mode"] == "fast" and report["meta"]["storage"] == storage
    for name in REPORT_FILES:
        assert (tmp_path / "out" / name).stat().st_size > 0
    with Image.open(tmp_path / "out" / "latency.png") as im:
        im.verify()
    # fast mode: a question goes out only once the previous one has its answer
    rows = report["questions"]
    assert all(b["asked_s"] >= a["answered_s"] for a, b in zip(rows, rows[1:]))

    recorded = list(iter_messages(tmp_path / "out" / "answers"))
    answers = [answer_record(d) for topic, t, _, d in recorded if t == ANSWER]
    assert sorted(a.question_id for a in answers) == sorted(r["question_id"] for r in rows)
    assert {topic for topic, t, _, _ in recorded} == {
        f"{replay.get_namespace()}/{x}" for x in ("answers", "questions", "features")
    }
    assert sum(t == QUESTION for _, t, _, _ in recorded) == n
    assert json.loads((tmp_path / "out" / "report.json").read_text())["summary"]["answered"] == n


def test_timed_mode_plays_in_recorded_order_and_never_early(ros, tmp_path):
    # The schedule's timing is tested with a fake clock (test_replay_schedule.py); here the node follows it: frames
    # at 0, .25, .5, .75 s and a question .05 s after each, at rate 2. Lower bounds only: a loaded machine plays
    # later, never earlier.
    bag, _, n = write_sample_bag(tmp_path / "in.mcap", n_images=4, questions_per_image=1, rate_hz=4.0)
    _, report = _replay(ros, f"t_{uuid.uuid4().hex[:6]}", bag, tmp_path / "out", mode="timed", rate=2.0)
    asked = [r["asked_s"] for r in report["questions"]]
    assert all(a >= (0.05 + 0.25 * i) / 2.0 - 0.005 for i, a in enumerate(asked)), asked
    assert asked == sorted(asked) and report["summary"]["answered"] == n == 4


def test_questions_file_replaces_the_bags_questions(ros, tmp_path):
    bag, _, _ = write_sample_bag(tmp_path / "in.mcap", n_images=2, questions_per_image=1)
    frames = [1_700_000_000 * 10**9, 1_700_000_000 * 10**9 + 500_000_000]
    qfile = tmp_path / "qs.jsonl"
    write_questions_file(
        qfile,
        [
            {"question_id": "mine-0", "text": "What color is it?", "image_stamp_ns": frames[1], "answer": "green"},
            {"question_id": "mine-1", "text": "What is it?", "image_stamp_ns": 5, "timeout_s": 0.5},
        ],
    )
    _, report = _replay(ros, f"f_{uuid.uuid4().hex[:6]}", bag, tmp_path / "out", mode="fast", questions_file=str(qfile))
    rows = {r["question_id"]: r for r in report["questions"]}
    assert set(rows) == {"mine-0", "mine-1"} and report["meta"]["questions_source"] == "file"
    assert rows["mine-0"]["status"] == "OK" and rows["mine-0"]["ground_truth"] == ["green"]
    assert rows["mine-1"]["status"] == "NO_FRAME" and rows["mine-1"]["correct"] is None


def test_bad_bag_and_parameters_are_refused_with_a_clear_error(ros, tmp_path):
    with pytest.raises(ParameterError, match="parameter 'bag' is required"):
        ReplayNode(context=ros.context)
    with pytest.raises(ParameterError, match="does not exist"):
        ReplayNode(context=ros.context, parameter_overrides=_params(bag=str(tmp_path / "none.mcap")))
    bag, _, _ = write_sample_bag(tmp_path / "in.mcap", n_images=1, questions_per_image=1)
    with pytest.raises(ParameterError, match="camera topic '/x' is not in bag"):
        ReplayNode(context=ros.context, parameter_overrides=_params(bag=str(bag), camera_topic="/x"))
    with pytest.raises(ParameterError, match="'mode' = 'slow'"):
        ReplayNode(context=ros.context, parameter_overrides=_params(bag=str(bag), mode="slow"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    with pytest.raises(ParameterError, match=r"bad\.jsonl:1: not JSON"):
        ReplayNode(context=ros.context, parameter_overrides=_params(bag=str(bag), questions_file=str(bad)))


def test_replay_launch_file_runs_the_graph_and_prints_the_summary(tmp_path):
    bag, _, n = write_sample_bag(tmp_path / "bag", "sqlite3", n_images=2, questions_per_image=2)
    ns = f"rl_{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tofc_ros.launcher",
            "tofc_ros",
            "replay.launch.xml",
            f"bag:={bag}",
            f"output_dir:={tmp_path / 'out'}",
            "rate:=4",
            f"namespace:={ns}",
            "storage:=sqlite3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "## Replay report" in out and f"| questions answered | {n}/{n} |" in out, out
    assert "[replay_node-3]: process has finished cleanly" in out, out
    assert f"replay_node: RESULT ok {n}/{n} (exit 0)" in out, out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["outcome"] == "ok" and report["summary"]["answered"] == n == report["summary"]["with_ground_truth"]
    assert list((tmp_path / "out" / "answers").glob("*.db3"))
