"""Two-stage answering through the deployed objects with a tiny real model: the uncertainty the answerer reports is
the min-entropy of the model's own teacher-forced distributions, where-it-looked is a distribution over the payload's
tokens, the second pass equals ServerHalf answering from both views, and the trainer keeps the robot's payloads
valid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
from tofc_ros.backbones.evidence import answer_uncertainty, token_uncertainty
from tofc_ros.codec import load_codec
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.pipeline.answerer import AnswerTask, model_server
from tofc_ros.pipeline.records import Refinement, Status
from tofc_ros.pipeline.refine import RefineAsk
from tofc_ros.pipeline.two_pass import TwoPassRig

QUESTIONS = ("what colour is the square?", "is there a square?")


@pytest.fixture(scope="module")
def deployed(tiny_model_dir, tiny_codec_path):
    codec = load_codec(str(tiny_codec_path))
    server_half = load_server_half(tiny_model_dir)
    decoder, answerer = model_server(server_half, [codec], GenerationOptions(max_new_tokens=4), accept_images=False)
    rig = TwoPassRig(
        load_device_half(tiny_model_dir), codec, decoder, answerer, first_n_c=3, detail_n_c=5, max_area=0.2
    )
    return rig, server_half


def test_the_reported_uncertainty_is_the_min_entropy_of_the_models_own_distributions(deployed):
    rig, server_half = deployed
    first = rig.encoder.encode(synthetic_frame(1, 480, 800))
    frame = rig.decoder.decode(first.payload, first.format)
    (answered,) = rig.answerer.answer_batch([AnswerTask(frame, QUESTIONS[0], look_above=-1.0)])
    generated = server_half.generate(frame.features, frame.header.grid, frame.header.image_size, QUESTIONS[0],
                                     GenerationOptions(max_new_tokens=4))  # fmt: skip
    # Teacher-forced over the prompt + the generated tokens: the distributions each token was chosen from.
    with torch.inference_mode():
        prepared = server_half.prepare_inputs(frame.features, frame.header.grid, frame.header.image_size, QUESTIONS[0])
        ids = generated.token_ids
        embeds = torch.cat([prepared.inputs_embeds, server_half.language_model.get_input_embeddings()(ids)])
        logits = server_half.forward_embeds(embeds)[prepared.inputs_embeds.shape[0] - 1 : -1]
    expected = answer_uncertainty(token_uncertainty(logits), ids.tolist(), server_half._eos_ids())
    assert answered.text == generated.text
    assert answered.uncertainty == pytest.approx(expected, rel=1e-4, abs=1e-6)
    t, n, _ = frame.header.feature_shape
    w = answered.token_weights
    assert w.shape == (t * n,) and w.dtype == np.float32 and w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-5)
    assert server_half.language_model.config._attn_implementation != "eager"  # switched back after the read-out
    (sure,) = rig.answerer.answer_batch([AnswerTask(frame, QUESTIONS[0], look_above=1e9)])
    assert sure.token_weights is None and sure.uncertainty == answered.uncertainty


def test_both_passes_through_the_core_and_the_device_refiner(deployed):
    rig, server_half = deployed
    rgb = synthetic_frame(2, 480, 800)
    first, asks, _, _ = rig.first_pass(rgb, QUESTIONS, 4)
    assert all(isinstance(a, RefineAsk) for a in asks) and rig.core.refining == 2
    region, crop, job, _ = rig.detail(asks[0], rgb)
    assert region.x >= 0 and region.x + region.width <= 800 and region.y + region.height <= 480
    assert region.area <= 0.2 * 480 * 800 + 1
    record = rig.core.run_batch([job])[0]
    assert (record.status, record.refinement) == (Status.OK, Refinement.DONE)
    assert (record.payload_bytes, record.refine_payload_bytes) == (len(first.payload), len(crop.payload))
    # The same answer as the server half asked directly with both views (token_order's regime 3).
    g = rig.decoder.decode(first.payload, first.format)
    c = rig.decoder.decode(crop.payload, crop.format)
    detail = (c.features, c.header.grid, c.header.image_size)
    with torch.inference_mode():
        prepared = server_half.prepare_inputs(
            g.features, g.header.grid, g.header.image_size, QUESTIONS[0], detail=detail
        )
        (direct,) = server_half.generate_prepared([prepared], GenerationOptions(max_new_tokens=4))
    assert record.text == direct.text
    _, _, other, _ = rig.detail(asks[1], rgb)
    rig.core.run_batch([other])
    assert rig.core.refining == 0 and rig.core.in_flight == 0


def test_the_trainer_learns_both_views_and_keeps_the_robots_payloads_valid(tiny_model_dir, tiny_codec_path, tmp_path):
    from tofc_ros.train.two_stage import main

    out = tmp_path / "run"
    main(["--set", f"model={tiny_model_dir}", "--set", f"codec={tiny_codec_path}", "--set", f"out={out}",
          "--set", "images=1", "--set", "steps=2", "--set", "batch=2", "--set", "log_every=1",
          "--set", "first_n_c=3", "--set", "detail_n_c=5", "--no-progress"])  # fmt: skip
    trained = load_server_half(out / "model")
    assert trained.fingerprint == load_device_half(tiny_model_dir).fingerprint  # the vision tower is unchanged
    before = load_server_half(tiny_model_dir)
    changed = [
        name
        for (name, a), (_, b) in zip(
            trained.language_model.named_parameters(), before.language_model.named_parameters(), strict=True
        )
        if not torch.equal(a, b)
    ]
    assert changed and all("lora" not in n for n in changed)  # LoRA merged into the LLM's own weights
    assert (out / "model" / "tofc_codec.safetensors").is_file()
