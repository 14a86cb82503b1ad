"""The device and server pipelines with a real (tiny) LLaVA-OneVision and a real TOFC codec, without ROS."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
from tofc_ros.codec import dpc_knn_merge, load_codec
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.pipeline.device import FeatureEncoder, ImageEncoder
from tofc_ros.pipeline.server import DecodeError, ModelAnswerer, ModelMismatch, ReceivedFrame

QUESTION = "What colour is the shape?"
SHORT = GenerationOptions(max_new_tokens=4)  # an untrained tiny model babbles: keep answers short


@pytest.fixture(scope="module")
def halves(tiny_model_dir):
    return load_device_half(tiny_model_dir), load_server_half(tiny_model_dir, load_vision=True)


@pytest.fixture(scope="module")
def tofc(tiny_codec_path):
    return load_codec(str(tiny_codec_path))


def _received(enc, **changes) -> ReceivedFrame:
    frame = ReceivedFrame(
        camera="front", stamp_ns=1, format=enc.format, codec_fingerprint=enc.codec_fingerprint,
        backbone_fingerprint=enc.backbone_fingerprint, image_height=enc.image_height, image_width=enc.image_width,
        grid_rows=enc.grid_rows, grid_cols=enc.grid_cols, n_tiles=enc.n_tiles, n_clusters=enc.n_clusters,
        feature_dim=enc.feature_dim, payload=enc.payload, payload_size=len(enc.payload), refusal="", device_ms=0.0,
        sent_ns=0, arrival_ns=0)
    return dataclasses.replace(frame, **changes)


def test_tofc_pipeline_answers_like_the_direct_calls(halves, tofc):
    device, server = halves
    rgb = synthetic_frame(2, 300, 500)  # several anyres tiles + thumbnail
    enc = FeatureEncoder(device, tofc, n_clusters=8).encode(rgb)
    vision = device.encode_image(rgb)
    assert (enc.grid_rows, enc.grid_cols) == vision.grid and enc.n_tiles == vision.n_tiles > 1
    assert (enc.n_clusters, enc.feature_dim) == (8, vision.dim)
    assert enc.codec_fingerprint == tofc.fingerprint.hex() and enc.backbone_fingerprint == device.fingerprint
    merged = dpc_knn_merge(vision.features.float(), 8).merged
    assert enc.payload == tofc.encode(merged)  # deterministic: same bytes as the direct calls
    expected = server.answer(tofc.decode(enc.payload), vision.grid, vision.image_size, QUESTION, SHORT)
    assert ModelAnswerer(server, [tofc], SHORT).answer(_received(enc), QUESTION) == expected


def test_feature_baseline_without_merging_sends_every_token(halves):
    device, server = halves
    enc = FeatureEncoder(device, load_codec("fp16-zstd"), n_clusters=0).encode(synthetic_frame(0, 64, 64))
    assert enc.n_clusters == device.spec.tokens_per_tile
    assert isinstance(ModelAnswerer(server, options=SHORT).answer(_received(enc), QUESTION), str)


def test_image_baseline_needs_the_servers_vision_tower(halves, tiny_model_dir):
    _, server = halves
    enc = ImageEncoder(load_codec("jpeg", quality=80)).encode(synthetic_frame(1, 64, 64))
    assert isinstance(ModelAnswerer(server, options=SHORT).answer(_received(enc), QUESTION), str)
    with pytest.raises(ModelMismatch, match="vision tower"):
        ModelAnswerer(load_server_half(tiny_model_dir), options=SHORT).answer(_received(enc), QUESTION)


def test_payloads_that_do_not_fit_are_refused_with_the_right_error(halves, tofc, tiny_codec_path):
    device, server = halves
    answerer = ModelAnswerer(server, [tofc], SHORT)
    enc = FeatureEncoder(device, tofc, n_clusters=4).encode(synthetic_frame(0, 300, 500))
    cases = [
        (dict(backbone_fingerprint="e" * 32), ModelMismatch, "backbone"),
        (dict(grid_rows=enc.grid_rows + 1), DecodeError, "tiles"),
        (dict(image_height=10, image_width=4000), DecodeError, "tiles"),
        (dict(payload=enc.payload[:-5]), DecodeError, None),
        (dict(payload=enc.payload[:20] + bytes([enc.payload[20] ^ 1]) + enc.payload[21:]), DecodeError, None),
        (dict(format="fp16/1"), DecodeError, "format"),
    ]
    for changes, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            answerer.answer(_received(enc, **changes), QUESTION)
    with pytest.raises(ModelMismatch, match="fingerprint"):
        ModelAnswerer(server, [], SHORT).answer(_received(enc), QUESTION)  # a server holding no (or other) codec weights


def test_merged_token_count_reaches_the_llm(halves, tofc):
    device, server = halves
    enc = FeatureEncoder(device, tofc, n_clusters=3).encode(synthetic_frame(0, 200, 900))
    features = tofc.decode(enc.payload)
    assert features.shape == (enc.n_tiles, 3, enc.feature_dim) and torch.isfinite(features).all()
    assert np.isfinite(features.numpy()).all()
