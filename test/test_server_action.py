"""The server's Ask action through real rclpy action clients: results, streamed feedback, cancel mid-generation,
abort on timeout and on a missing frame, inline images, many goals at once (batched), and the same answer as the
Question/Answer topics for the same frame. Verdicts are about behaviour, never elapsed time: where a test needs a
slow generation, its answerer streams until the test cancels or the deadline stops it."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import numpy as np
import pytest
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from tofc_msgs.action import Ask
from tofc_msgs.msg import Answer
from tofc_ros.backbones import load_device_half
from tofc_ros.codec import load_codec
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.nodes.server_node import ServerNode
from tofc_ros.pipeline.answerer import Answered, PlaceholderAnswerer
from tofc_ros.pipeline.decoder import FrameDecoder
from tofc_ros.pipeline.encoder import FeatureEncoder

from conftest import wait_for
from test_ros_nodes import Client

PLACEHOLDER = load_codec("placeholder-zstd")


def _params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


class AskClient:
    """A real rclpy ActionClient of `ask`, recording every goal's feedback."""

    count = 0

    def __init__(self, ros, name: str = "ask") -> None:
        AskClient.count += 1
        self.node = ros.add(Node(f"ask_client_{AskClient.count}", context=ros.context))
        self.client = ActionClient(self.node, Ask, name)
        self.feedback: dict[bytes, list[Ask.Feedback]] = defaultdict(list)
        self._lock = threading.Lock()
        assert self.client.wait_for_server(timeout_sec=20)

    def _on_feedback(self, msg) -> None:
        with self._lock:
            self.feedback[bytes(msg.goal_id.uuid)].append(msg.feedback)

    def send(self, text: str = "What colour?", sec: int = 0, timeout_s: float = 10.0, **fields):
        goal = Ask.Goal(text=text, camera="front", timeout_s=float(timeout_s), **fields)
        goal.image_stamp.sec = sec
        future = self.client.send_goal_async(goal, feedback_callback=self._on_feedback)
        handle = wait_for(lambda: future.done() and future.result(), timeout=20)
        assert handle.accepted
        return handle

    def result(self, handle, timeout: float = 60.0) -> tuple[int, Answer]:
        future = handle.get_result_async()
        wait_for(future.done, timeout=timeout)
        response = future.result()
        return response.status, response.result.answer

    def feedback_of(self, handle) -> list[Ask.Feedback]:
        with self._lock:
            return list(self.feedback[bytes(handle.goal_id.uuid)])


class Streamer(PlaceholderAnswerer):
    """Says one more word every 10 ms, streaming each, until the core stops it (cancel or deadline), at most 3000
    words (30 s): slow by construction, whatever the machine."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def answer_batch(self, tasks):
        self.batches.append(len(tasks))
        out = []
        for task in tasks:
            words: list[str] = []
            while len(words) < 3000:
                words.append(f"w{len(words)}")
                task.on_text(" ".join(words))
                if task.stop():
                    break
                time.sleep(0.01)
            out.append(Answered(" ".join(words), stopped=len(words) < 3000, tokens=len(words)))
        return out


@pytest.fixture
def placeholder_server(ros):
    server = ros.add(ServerNode(context=ros.context, parameter_overrides=_params(answerer="placeholder")))
    client = Client(ros)
    wait_for(lambda: client.questions.get_subscription_count() and server.count_publishers("features"))
    return server, client, AskClient(ros)


def test_a_goal_succeeds_with_the_answer_the_topic_gives_for_the_same_frame(placeholder_server):
    server, client, asker = placeholder_server
    rgb = synthetic_frame(3, 48, 64)
    client.send_features(PLACEHOLDER.encode(rgb), sec=100)
    wait_for(lambda: server.core.cached_frames)
    client.ask("topic", sec=100)
    handle = asker.send("What colour?", sec=100)
    status, answer = asker.result(handle)
    topic = client.answer("topic")
    assert status == GoalStatus.STATUS_SUCCEEDED and answer.status == Answer.STATUS_OK, answer.error
    assert answer.text == topic.text and "RGB(" in answer.text
    assert answer.question_id == bytes(handle.goal_id.uuid).hex()
    assert (answer.image_stamp.sec, answer.payload_bytes, answer.format) == (100, topic.payload_bytes, topic.format)
    assert answer.total_ms >= answer.server_ms >= 0
    # A one-at-a-time answerer streams its whole answer once.
    wait_for(lambda: asker.feedback_of(handle))
    assert [(f.text, f.tokens) for f in asker.feedback_of(handle)] == [(answer.text, 1)]
    assert server.counters.snapshot()["goals"] == 1 and not server._ask.goals


def test_goals_that_cannot_be_served_abort_with_the_reason(placeholder_server):
    server, client, asker = placeholder_server
    status, answer = asker.result(asker.send(sec=4242, timeout_s=0.3))
    assert status == GoalStatus.STATUS_ABORTED
    assert answer.status == Answer.STATUS_NO_FRAME and "4242000000000 ns" in answer.error
    status, answer = asker.result(asker.send("   ", sec=0))
    assert (status, answer.status) == (GoalStatus.STATUS_ABORTED, Answer.STATUS_BAD_REQUEST)
    bad = Image(height=2, width=2, encoding="rgb8", step=6, data=b"\x00" * 5)  # shorter than 2 rows
    status, answer = asker.result(asker.send("What is it?", image=bad))
    assert (status, answer.status) == (GoalStatus.STATUS_ABORTED, Answer.STATUS_BAD_REQUEST)
    assert "the goal's image" in answer.error and "data has 5 B" in answer.error


def test_a_goal_whose_acceptance_raises_still_gets_its_one_result(placeholder_server):
    server, _, asker = placeholder_server

    class BrokenCodec:
        format = "placeholder-zstd"

        def encode(self, rgb):
            raise RuntimeError("out of memory while wrapping the picture")

    server._ask.goal_codec = BrokenCodec()
    image = Image(height=2, width=2, encoding="rgb8", step=6, data=b"\x00" * 12)
    status, answer = asker.result(asker.send("What is it?", image=image))
    assert (status, answer.status) == (GoalStatus.STATUS_ABORTED, Answer.STATUS_INTERNAL_ERROR)
    assert "out of memory while wrapping" in answer.error
    assert server.core.waiting == server.core.in_flight == 0


def test_a_goal_about_its_own_image_is_answered_and_never_cached(placeholder_server):
    server, _, asker = placeholder_server
    rgb = synthetic_frame(5, 20, 30)
    image = Image(height=20, width=30, encoding="rgb8", step=90, data=rgb.tobytes())
    image.header.stamp.sec = 7
    status, answer = asker.result(asker.send("What is it?", image=image))
    mean = np.round(rgb.reshape(-1, 3).mean(0)).astype(int)
    assert status == GoalStatus.STATUS_SUCCEEDED and f"RGB({mean[0]}, {mean[1]}, {mean[2]})" in answer.text
    assert answer.image_stamp.sec == 7 and answer.payload_bytes == rgb.nbytes and answer.device_ms == 0.0
    assert server.core.cached_frames == 0


@pytest.fixture
def streaming_server(ros):
    answerer = Streamer()
    server = ros.add(ServerNode(server=(FrameDecoder(accept_images=True), answerer), context=ros.context))
    client = Client(ros)
    wait_for(lambda: client.questions.get_subscription_count() and server.count_publishers("features"))
    client.send_features(PLACEHOLDER.encode(synthetic_frame(0, 4, 4)), sec=1)
    wait_for(lambda: server.core.cached_frames)
    return server, client, AskClient(ros), answerer


def test_a_goal_cancelled_mid_generation_ends_canceled_with_the_partial_text(streaming_server):
    server, _, asker, _ = streaming_server
    handle = asker.send(sec=1, timeout_s=60)
    wait_for(lambda: len(asker.feedback_of(handle)) >= 3)  # generating, and streaming
    cancel = handle.cancel_goal_async()
    wait_for(cancel.done)
    assert [bytes(g.goal_id.uuid) for g in cancel.result().goals_canceling] == [bytes(handle.goal_id.uuid)]
    status, answer = asker.result(handle)
    assert status == GoalStatus.STATUS_CANCELED and answer.status == Answer.STATUS_CANCELED
    words = answer.text.split()
    assert len(words) >= 3 and words == [f"w{i}" for i in range(len(words))]
    assert "cancelled by the asker" in answer.error
    # The worker goes on: the next goal is answered until its own deadline.
    status, answer = asker.result(asker.send(sec=1, timeout_s=0.3))
    assert (status, answer.status) == (GoalStatus.STATUS_ABORTED, Answer.STATUS_TIMEOUT)


def test_the_timeout_aborts_a_goal_during_generation_with_the_partial_text(streaming_server):
    _, _, asker, _ = streaming_server
    handle = asker.send(sec=1, timeout_s=0.3)
    status, answer = asker.result(handle)
    assert status == GoalStatus.STATUS_ABORTED and answer.status == Answer.STATUS_TIMEOUT
    assert "timeout of 0.3 s" in answer.error and answer.text.startswith("w0")
    assert answer.total_ms >= 300
    feedback = asker.feedback_of(handle)
    assert [f.tokens for f in feedback] == sorted({f.tokens for f in feedback})  # one per token, in order


def test_a_goal_cancelled_while_waiting_for_its_frame_ends_at_once(streaming_server):
    server, _, asker, answerer = streaming_server
    handle = asker.send(sec=999, timeout_s=60)
    wait_for(lambda: server.core.waiting == 1)
    cancel = handle.cancel_goal_async()
    wait_for(cancel.done)
    status, answer = asker.result(handle)
    assert (status, answer.status) == (GoalStatus.STATUS_CANCELED, Answer.STATUS_CANCELED)
    assert server.core.waiting == 0 and answerer.batches == []


@pytest.fixture(scope="module")
def payloads(tiny_model_dir, tiny_codec_path):
    encoder = FeatureEncoder(load_device_half(tiny_model_dir), load_codec(str(tiny_codec_path)), n_clusters=4)
    return [encoder.encode(synthetic_frame(i, 64, 64)).payload for i in range(6)]


def test_many_goals_at_once_are_batched_and_each_gets_its_own_answer(ros, tiny_model_dir, tiny_codec_path, payloads):
    server = ros.add(
        ServerNode(
            context=ros.context,
            parameter_overrides=_params(
                answerer="model",
                model_path=str(tiny_model_dir),
                codec_path=str(tiny_codec_path),
                max_new_tokens=6,
                max_batch_size=4,
                batch_wait_ms=300.0,
                queue_size=16,
            ),
        )
    )
    answerer = server.core.answerer
    sizes: list[int] = []
    batch = answerer.answer_batch
    answerer.answer_batch = lambda tasks: (sizes.append(len(tasks)), batch(tasks))[1]
    client = Client(ros)
    wait_for(lambda: client.questions.get_subscription_count() and server.count_publishers("features"))
    for sec, payload in enumerate(payloads, start=1):
        client.send_features(payload, sec=sec)
    wait_for(lambda: server.core.cached_frames == len(payloads))
    asker = AskClient(ros)
    questions = [f"What is in frame {sec}?" for sec in range(1, len(payloads) + 1)]
    handles = [asker.send(q, sec=sec, timeout_s=60) for sec, q in enumerate(questions, start=1)]
    handles.append(asker.send(questions[0], sec=1, timeout_s=60, max_new_tokens=2))
    results = [asker.result(h) for h in handles]
    assert all(s == GoalStatus.STATUS_SUCCEEDED and a.status == Answer.STATUS_OK for s, a in results), results
    assert max(sizes) > 1 and sum(sizes) == len(handles)  # answered in batches, each goal once
    # Each answer is the one-at-a-time greedy answer of its frame, which the topic protocol gives too.
    decoder = server.core.decoder
    for (_, answer), q, payload in zip(results, questions, payloads):
        assert answer.text == answerer.answer(decoder.decode(payload), q)
    for sec, q in enumerate(questions[:2], start=1):
        client.ask(f"topic-{sec}", sec=sec, timeout_s=60, text=q)
        assert client.answer(f"topic-{sec}").text == results[sec - 1][1].text
    # Streaming: feedback after each token, each the answer so far. Feedback is a keep-last topic shared by all goals
    # (depth 10), so a burst from a batch may lose some messages: only what arrived is checked.
    wait_for(lambda: sum(len(asker.feedback_of(h)) for h in handles) > 0, timeout=30)
    received = 0
    for handle, (_, answer) in zip(handles, results):
        feedback = asker.feedback_of(handle)
        received += len(feedback)
        assert [f.tokens for f in feedback] == sorted({f.tokens for f in feedback})
        assert all(answer.text.startswith(f.text) for f in feedback), (answer.text, [f.text for f in feedback])
    assert received > 0 and all(f.tokens <= 2 for f in asker.feedback_of(handles[-1]))
    assert server.counters.snapshot()["goals"] == len(handles) and server.core.in_flight == 0


def test_a_topic_question_cannot_take_a_live_goals_id(streaming_server):
    # Answers are routed by question_id: a topic question under a goal's id is refused on the topic and the goal
    # goes on untouched (it still waits for its frame, and is cancelled by its own client).
    server, client, asker, answerer = streaming_server
    handle = asker.send(sec=999, timeout_s=60)
    wait_for(lambda: server.core.waiting == 1)
    goal_id = bytes(handle.goal_id.uuid).hex()
    client.ask(goal_id, sec=1)
    answer = client.answer(goal_id)
    assert answer.status == Answer.STATUS_BAD_REQUEST and "active Ask goal" in answer.error
    assert server.core.waiting == 1 and answerer.batches == []
    wait_for(handle.cancel_goal_async().done)
    status, answer = asker.result(handle)
    assert (status, answer.status) == (GoalStatus.STATUS_CANCELED, Answer.STATUS_CANCELED)


def test_a_model_server_without_a_vision_tower_aborts_an_image_goal_and_says_why(ros, tiny_model_dir, tiny_codec_path):
    model = dict(answerer="model", model_path=str(tiny_model_dir), codec_path=str(tiny_codec_path))
    ros.add(ServerNode(context=ros.context, parameter_overrides=_params(max_new_tokens=3, **model)))
    asker = AskClient(ros)
    rgb = synthetic_frame(1, 32, 32)
    image = Image(height=32, width=32, encoding="rgb8", step=96, data=rgb.tobytes())
    status, answer = asker.result(asker.send("What is it?", image=image))
    assert (status, answer.status) == (GoalStatus.STATUS_ABORTED, Answer.STATUS_MODEL_MISMATCH)
    assert "load_vision" in answer.error
    seeing = ros.add(
        ServerNode(
            context=ros.context,
            namespace="seeing",
            parameter_overrides=_params(max_new_tokens=3, load_vision=True, **model),
        )
    )
    seer = AskClient(ros, "/seeing/ask")
    status, answer = seer.result(seer.send("What is it?", image=image))
    assert (status, answer.status) == (GoalStatus.STATUS_SUCCEEDED, Answer.STATUS_OK), answer.error
    vision = seeing.core.answerer.server_half.encode_image(rgb)
    expected = seeing.core.answerer.server_half.answer(
        vision.features, vision.grid, vision.image_size, "What is it?", seeing.core.answerer.options
    )
    assert answer.text == expected


def test_topic_questions_ready_together_are_batched_too(ros, tiny_model_dir, tiny_codec_path, payloads):
    server = ros.add(
        ServerNode(
            context=ros.context,
            parameter_overrides=_params(
                answerer="model",
                model_path=str(tiny_model_dir),
                codec_path=str(tiny_codec_path),
                max_new_tokens=6,
                max_batch_size=8,
                batch_wait_ms=300.0,
            ),
        )
    )
    sizes: list[int] = []
    run_batch = server.core.run_batch
    server.core.run_batch = lambda jobs, hooks=None: (sizes.append(len(jobs)), run_batch(jobs, hooks))[1]
    client = Client(ros)
    wait_for(lambda: client.questions.get_subscription_count() and server.count_publishers("features"))
    for sec, payload in enumerate(payloads[:4], start=1):
        client.send_features(payload, sec=sec)
    wait_for(lambda: server.core.cached_frames == 4)
    for sec in range(1, 5):
        client.ask(f"q{sec}", sec=sec, timeout_s=60, text=f"What is in frame {sec}?")
    answers = [client.answer(f"q{sec}") for sec in range(1, 5)]
    assert all(a.status == Answer.STATUS_OK for a in answers) and max(sizes) > 1 and sum(sizes) == 4
    decoder, answerer = server.core.decoder, server.core.answerer
    for sec, answer in enumerate(answers, start=1):
        assert answer.text == answerer.answer(decoder.decode(payloads[sec - 1]), f"What is in frame {sec}?")
    assert client.duplicates == []
