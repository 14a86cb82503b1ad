"""The three pure objects every consumer runs (encoder, decoder, answerer), with a real tiny LLaVA-OneVision and
a real TOFC codec, without ROS."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
from tofc_ros.codec import FrameContext, dpc_knn_merge, load_codec, peek_header
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.pipeline.answerer import ModelAnswerer, PlaceholderAnswerer
from tofc_ros.pipeline.decoder import DecodeError, FrameDecoder, ModelMismatch
from tofc_ros.pipeline.encoder import FeatureEncoder, ImageEncoder
from tofc_ros.pipeline.records import Status

QUESTION = "What colour is the shape?"
SHORT = GenerationOptions(max_new_tokens=4)  # an untrained tiny model babbles: keep answers short


@pytest.fixture(scope="module")
def halves(tiny_model_dir):
    return load_device_half(tiny_model_dir), load_server_half(tiny_model_dir, load_vision=True)


@pytest.fixture(scope="module")
def tofc(tiny_codec_path):
    return load_codec(str(tiny_codec_path))


@pytest.fixture(scope="module")
def decoder(halves, tofc):
    _, server = halves
    return FrameDecoder([tofc], server.spec, server.fingerprint, accept_images=True)


def _forge(payload: bytes, pos: int, fmt: str, *values) -> bytes:
    body = bytearray(payload[:-4])
    struct.pack_into(fmt, body, pos, *values)
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def test_the_payload_describes_the_frame_and_equals_the_direct_calls(halves, tofc, decoder):
    device, server = halves
    rgb = synthetic_frame(2, 300, 500)  # several anyres tiles + thumbnail
    encoded = FeatureEncoder(device, tofc, n_clusters=8).encode(rgb)
    vision = device.encode_image(rgb)
    header = peek_header(encoded.payload)
    assert header.grid == vision.grid and header.image_size == (300, 500) and header.n_tiles == vision.n_tiles > 1
    assert header.feature_shape == (vision.n_tiles, 8, vision.dim) and encoded.format == "tofc/1"
    assert header.codec_fingerprint == tofc.fingerprint
    assert header.backbone_fingerprint.hex() == device.fingerprint
    assert header.vision_layers == device.spec.vision_layers_needed
    assert min(encoded.timings.vision_ms, encoded.timings.merge_ms, encoded.timings.encode_ms) > 0
    merged = dpc_knn_merge(vision.features.float(), 8).merged
    context = FrameContext(header.backbone_fingerprint, (300, 500), vision.grid, header.vision_layers)
    assert encoded.payload == tofc.encode(merged, context)  # deterministic: the same bytes as the direct calls
    frame = decoder.decode(encoded.payload, "tofc/1")
    assert torch.equal(frame.features, tofc.decode(encoded.payload)) and frame.rgb is None
    expected = server.answer(frame.features, vision.grid, vision.image_size, QUESTION, SHORT)
    assert ModelAnswerer(server, SHORT).answer(frame, QUESTION) == expected


def test_feature_baseline_without_merging_sends_every_token(halves, decoder):
    device, server = halves
    encoded = FeatureEncoder(device, load_codec("fp16-zstd"), n_clusters=0).encode(synthetic_frame(0, 64, 64))
    assert peek_header(encoded.payload).tokens_per_tile == device.spec.tokens_per_tile
    assert isinstance(ModelAnswerer(server, SHORT).answer(decoder.decode(encoded.payload), QUESTION), str)


@pytest.mark.parametrize("codec", ["jpeg", "webp", "rgb8"])
def test_image_payloads_need_the_servers_vision_tower(halves, tiny_model_dir, decoder, codec):
    _, server = halves
    rgb = synthetic_frame(1, 64, 64)
    encoded = ImageEncoder(load_codec(codec)).encode(rgb)
    frame = decoder.decode(encoded.payload)
    assert frame.rgb.shape == rgb.shape and frame.features is None
    assert isinstance(ModelAnswerer(server, SHORT).answer(frame, QUESTION), str)
    plain = load_server_half(tiny_model_dir)
    with pytest.raises(ModelMismatch, match="load_vision") as err:
        FrameDecoder([], plain.spec, plain.fingerprint).decode(encoded.payload)
    assert err.value.status == Status.MODEL_MISMATCH


def test_payloads_that_do_not_fit_are_refused_before_decoding(halves, tofc, decoder):
    device, _ = halves
    p = FeatureEncoder(device, tofc, n_clusters=4).encode(synthetic_frame(0, 300, 500)).payload
    h = peek_header(p)
    cases = [
        (_forge(p, 24, "16s", b"\xee" * 16), ModelMismatch, "backbone"),
        (_forge(p, 60, "<H", h.vision_layers + 1), ModelMismatch, "split point"),
        (_forge(p, 48, "<HH", h.grid[0] + 1, h.grid[1]), DecodeError, "grid"),
        (_forge(p, 40, "<II", 10, 4000), DecodeError, "grid"),
        (_forge(p, 52, "<H", h.n_tiles + 1), DecodeError, "tiles"),
        (_forge(p, 54, "<H", device.spec.tokens_per_tile + 1), DecodeError, "tokens per tile"),
        (p[:-5], DecodeError, "CRC|section|shorter"),
        (p[:30] + bytes([p[30] ^ 1]) + p[31:], DecodeError, "CRC32"),
        (b"", DecodeError, "shorter"),
    ]
    for payload, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            decoder.decode(payload)
    with pytest.raises(DecodeError, match="message says format 'fp16/1'"):
        decoder.decode(p, "fp16/1")
    with pytest.raises(ModelMismatch, match="no loaded tofc/1 codec"):
        FrameDecoder([], decoder.spec, device.fingerprint).decode(p)  # a server holding no (or other) weights
    with pytest.raises(ModelMismatch, match="holds no backbone"):
        FrameDecoder([tofc]).decode(p)


def test_merged_token_count_reaches_the_llm(halves, tofc, decoder):
    device, server = halves
    encoded = FeatureEncoder(device, tofc, n_clusters=3).encode(synthetic_frame(0, 200, 900))
    frame = decoder.decode(encoded.payload)
    t = frame.header.n_tiles
    assert frame.features.shape == (t, 3, device.spec.vision_dim) and torch.isfinite(frame.features).all()
    rows = frame.header.grid[0]
    embeds = server.image_embeddings(frame.features, frame.header.grid, frame.header.image_size)
    assert embeds.shape[0] == t * 3 + rows  # tiles x n_c + one newline per tile row


def test_placeholder_server_describes_pixels_and_refuses_everything_else(halves, tofc):
    decoder = FrameDecoder(formats=["placeholder-zstd/1"], accept_images=True)
    rgb = np.full((6, 8, 3), (10, 20, 30), np.uint8)
    frame = decoder.decode(ImageEncoder(load_codec("placeholder-zstd")).encode(rgb).payload)
    assert PlaceholderAnswerer().answer(frame, "?") == (
        "[placeholder: no language model loaded] 8x6 image, mean colour RGB(10, 20, 30)"
    )
    with pytest.raises(ModelMismatch, match="not served here"):
        decoder.decode(ImageEncoder(load_codec("jpeg")).encode(rgb).payload)
    with pytest.raises(DecodeError, match="exceeds 10 pixels"):
        FrameDecoder(formats=["placeholder-zstd/1"], accept_images=True, max_pixels=10).decode(
            ImageEncoder(load_codec("placeholder-zstd")).encode(rgb).payload
        )
