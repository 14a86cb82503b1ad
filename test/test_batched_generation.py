"""Batched greedy generation on a real tiny LLaVA-OneVision: the same token ids as one question at a time, per-row
limits, streaming and stopping; ModelAnswerer.answer_batch isolates one task's failure."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.pipeline.answerer import AnswerTask, ModelAnswerer
from tofc_ros.pipeline.records import DecodedFrame

QUESTIONS = ["What colour is the shape?", "Is there a circle?", "What shape is it, and where is it?", "Count them"]
SIZES = [(64, 64), (300, 500), (64, 64), (120, 90)]  # 2, 5, 2 and 2 tiles: prompts of very different lengths
OPTIONS = GenerationOptions(max_new_tokens=12)


@pytest.fixture(scope="module")
def halves(tiny_model_dir):
    torch.set_num_threads(1)
    return load_device_half(tiny_model_dir), load_server_half(tiny_model_dir, load_vision=True)


@pytest.fixture(scope="module")
def prompts(halves):
    device, _ = halves
    vision = [device.encode_image(synthetic_frame(i, *size)) for i, size in enumerate(SIZES)]
    return [(v.features, v.grid, v.image_size, q) for v, q in zip(vision, QUESTIONS)]


def test_a_batch_gives_each_prompt_the_token_ids_it_gets_alone(halves, prompts):
    _, server = halves
    alone = [server.generate(*p, OPTIONS) for p in prompts]
    together = server.generate_batch(prompts, OPTIONS)
    assert len({a.prompt_tokens for a in alone}) > 1  # the batch really is padded
    assert [t.token_ids.tolist() for t in together] == [a.token_ids.tolist() for a in alone]
    assert [t.text for t in together] == [a.text for a in alone]
    assert [(t.prompt_tokens, t.image_tokens) for t in together] == [(a.prompt_tokens, a.image_tokens) for a in alone]
    assert not any(t.stopped for t in together)
    # In another order and as part of a larger batch, each row still gets its own answer.
    mixed = server.generate_batch([prompts[3], prompts[1], prompts[3]], OPTIONS)
    assert [m.token_ids.tolist() for m in mixed] == [alone[i].token_ids.tolist() for i in (3, 1, 3)]


def test_per_row_limits_streaming_and_stopping(halves, prompts):
    _, server = halves
    full = server.generate_batch(prompts[:2], OPTIONS)
    assert all(len(f.token_ids) >= 3 for f in full), "the seeded tiny model must say at least 3 tokens here"
    streamed: dict[int, list[list[int]]] = {0: [], 1: []}
    out = server.generate_batch(
        prompts[:2],
        OPTIONS,
        max_new_tokens=[2, OPTIONS.max_new_tokens],
        on_tokens=lambda row, ids: streamed[row].append(ids.tolist()),
        should_stop=lambda row: row == 1 and len(streamed[1]) >= 3,
    )
    assert out[0].token_ids.tolist() == full[0].token_ids[:2].tolist() and not out[0].stopped
    assert out[1].token_ids.tolist() == full[1].token_ids[:3].tolist() and out[1].stopped
    # Every step streams the row's ids so far: growing prefixes ending in the final ids.
    for row, result in enumerate(out):
        final = result.token_ids.tolist()
        assert streamed[row] == [final[: n + 1] for n in range(len(final))]
    with pytest.raises(ValueError, match="one limit in 1..12 per prompt"):
        server.generate_batch(prompts[:2], OPTIONS, max_new_tokens=[13, 1])


def test_answer_batch_streams_text_stops_and_fails_one_task_alone(halves, prompts):
    _, server = halves
    answerer = ModelAnswerer(server, OPTIONS)
    # What ModelAnswerer reads of a decoded frame: its features and the header's grid, image size and split point.
    k = server.spec.vision_layers_needed
    frames = [
        DecodedFrame(SimpleNamespace(grid=g, image_size=s, vision_layers=k), features=f) for f, g, s, _ in prompts
    ]
    alone = [server.generate(*p, OPTIONS).text for p in prompts]
    texts: list[str] = []
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] >= 2

    bad = DecodedFrame(frames[0].header, features=torch.zeros(1, 3, 5))  # wrong feature dim
    tasks = [
        AnswerTask(frames[0], QUESTIONS[0], on_text=texts.append),
        AnswerTask(bad, "?"),
        AnswerTask(frames[1], QUESTIONS[1], stop=stop),
        AnswerTask(frames[2], QUESTIONS[2], max_new_tokens=1),
    ]
    out = answerer.answer_batch(tasks)
    assert out[0].text == alone[0] and not out[0].stopped and texts[-1] == alone[0] and len(texts) == out[0].tokens
    assert isinstance(out[1], ValueError) and "features must be" in str(out[1])
    assert out[2].stopped and out[2].tokens == 2
    assert out[3].tokens == 1 and not out[3].stopped
    # The answer of one task equals ModelAnswerer.answer one at a time.
    assert answerer.answer_batch([AnswerTask(frames[3], QUESTIONS[3])])[0].text == alone[3]
