"""AlignedVQ through the deployed objects: the device's encoder cut inside the tower, the server's decoder and
answerer running the rest of it, built from node parameters as the nodes build them.

The codec is fitted (k-means, priors) to a tiny checkpoint's real hidden states, so the indices mean something.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
from tofc_ros.codec import FrameContext, peek_header
from tofc_ros.codec.aligned_vq import AlignedVQ, AlignedVQCodec, AlignedVQConfig, save_aligned_vq
from tofc_ros.config import DeviceConfig, ServerConfig
from tofc_ros.pipeline.answerer import ModelAnswerer, build_server, model_server
from tofc_ros.pipeline.decoder import DecodeError, ModelMismatch
from tofc_ros.pipeline.encoder import FeatureEncoder, make_encoder

QUESTION = "What color is the shape?"


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), (xx + yy) % 256], axis=-1)
    return np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


def _fitted_codec(model_dir, split: int, n_clusters: int = 0, stats: str = "scalar") -> AlignedVQCodec:
    device = load_device_half(model_dir, split_layer=split)
    with torch.no_grad():
        h = torch.cat([device.encode_image(_image(300, 400, s)).features.reshape(-1, 64) for s in range(2)])
    model = AlignedVQ(
        AlignedVQConfig(
            d=64, split_layer=split, groups=4, stages=2, codebook_size=32, stats=stats, n_clusters=n_clusters
        )
    )
    model.init_from(h, iters=4, seed=0)
    model.fit_priors(h)
    return AlignedVQCodec(model=model)


@pytest.mark.parametrize("kind", ["onevision", "llava15"])
def test_encoder_decoder_answerer_run_the_split_inside_the_tower(kind, tiny_dirs):
    codec = _fitted_codec(tiny_dirs[kind], split=1)
    device = load_device_half(tiny_dirs[kind], split_layer=1)
    server = load_server_half(tiny_dirs[kind], vision_splits=[1])
    encoder = FeatureEncoder(device, codec, n_clusters=0)
    decoder, answerer = model_server(server, [codec], GenerationOptions(max_new_tokens=6), accept_images=False)
    rgb = _image(480, 640, seed=9)
    payload = encoder.encode(rgb).payload
    header = peek_header(payload)
    spec = device.spec
    assert header.vision_layers == 1 and header.feature_shape[1] == spec.tokens_per_tile + (kind == "llava15")
    frame = decoder.decode(payload, "alignedvq/1")
    # The decoded hidden state is the quantiser's own reconstruction of what the device computed, bit for bit.
    with torch.no_grad():
        h = device.encode_image(rgb).features
    m = codec.model
    z, mean, std = m.normalise(h.reshape(-1, 64))
    expected = m.denormalise(m.reconstruct(m.assign(z)), *m.stat_levels(mean, std)).reshape(h.shape)
    assert torch.equal(frame.features, expected)
    # The answerer runs layers 2..k on it, then the ordinary server path.
    with torch.no_grad():
        finished = server.finish_vision(expected, 1)
    assert finished.shape[1] == spec.tokens_per_tile
    assert answerer.answer(frame, QUESTION) == server.answer(
        finished, header.grid, header.image_size, QUESTION, GenerationOptions(max_new_tokens=6)
    )


def test_merging_after_the_split_keeps_clip_cls_first(tiny_dirs):
    codec = _fitted_codec(tiny_dirs["llava15"], split=1, n_clusters=16)
    device = load_device_half(tiny_dirs["llava15"], split_layer=1)
    server = load_server_half(tiny_dirs["llava15"], vision_splits=[1])
    decoder, answerer = model_server(server, [codec], GenerationOptions(max_new_tokens=4), accept_images=False)
    payload = FeatureEncoder(device, codec, n_clusters=codec.n_clusters).encode(_image(300, 300, 1)).payload
    assert peek_header(payload).feature_shape == (1, 17, 64)  # CLS + 16 merged tokens
    frame = decoder.decode(payload)
    with torch.no_grad():
        h = device.encode_image(_image(300, 300, 1)).features
    # The CLS token is quantised as itself (first row), not merged into a cluster.
    m = codec.model
    z, mean, std = m.normalise(h[0, :1])
    cls_hat = m.denormalise(m.reconstruct(m.assign(z)), *m.stat_levels(mean, std))
    assert torch.equal(frame.features[0, :1], cls_hat)
    assert isinstance(answerer.answer(frame, QUESTION), str)
    assert ModelAnswerer(server)._features(frame)[0].shape == (1, 16, 64)  # CLS dropped after the tail


def test_payloads_from_another_split_or_codec_are_refused(tiny_dirs):
    codec = _fitted_codec(tiny_dirs["onevision"], split=1)
    payload = (
        FeatureEncoder(load_device_half(tiny_dirs["onevision"], split_layer=1), codec, 0)
        .encode(_image(64, 64, 2))
        .payload
    )
    # A server that finishes no split inside the tower: MODEL_MISMATCH naming the split points it serves.
    decoder, _ = model_server(load_server_half(tiny_dirs["onevision"]), [codec], accept_images=False)
    with pytest.raises(ModelMismatch, match=r"cut after \[2\]"):
        decoder.decode(payload)
    # A server holding the tail but other codebooks: MODEL_MISMATCH by fingerprint.
    other = _fitted_codec(tiny_dirs["onevision"], split=1, stats="none")
    decoder, _ = model_server(load_server_half(tiny_dirs["onevision"], vision_splits=[1]), [other], accept_images=False)
    with pytest.raises(ModelMismatch, match="fingerprint"):
        decoder.decode(payload)
    # A server with a tail after layer 0 only: another split point.
    decoder, _ = model_server(load_server_half(tiny_dirs["onevision"], vision_splits=[0]), [codec], accept_images=False)
    with pytest.raises(ModelMismatch, match="another split point"):
        decoder.decode(payload)
    # More tokens per tile than the tower has: refused before decoding.
    from tofc_ros.codec.bitstream import pack, parse

    header, sections = parse(payload)
    forged = pack(
        "alignedvq/1",
        codec.fingerprint,
        FrameContext(header.backbone_fingerprint, (64, 64), (1, 1), 1),
        (2, 730, 64),
        list(sections),
    )
    decoder, _ = model_server(load_server_half(tiny_dirs["onevision"], vision_splits=[1]), [codec], accept_images=False)
    with pytest.raises(DecodeError, match="1..729 tokens"):
        decoder.decode(forged)
    # The encoder refuses a tower cut elsewhere than the codec's split.
    with pytest.raises(ValueError, match="after layer 1"):
        FeatureEncoder(load_device_half(tiny_dirs["onevision"]), codec, 0)


def test_nodes_build_the_split_from_their_parameters(tiny_dirs, tmp_path):
    """DeviceConfig/ServerConfig with codec 'alignedvq': the device stops at the codec's split, the server loads
    the matching tail; what one encodes the other answers."""
    codec = _fitted_codec(tiny_dirs["onevision"], split=1, n_clusters=8)
    path = tmp_path / "alignedvq.safetensors"
    save_aligned_vq(codec.model, path)
    model = str(tiny_dirs["onevision"])
    encoder = make_encoder(DeviceConfig(model_path=model, codec="alignedvq", alignedvq_path=str(path), n_clusters=64))
    assert encoder.device_half.split_layer == 1 and encoder.n_clusters == 8  # the codec's merging, not n_clusters
    decoder, answerer = build_server(ServerConfig(model_path=model, codec_path="", alignedvq_path=str(path)))
    assert decoder.splits == {1}
    frame = decoder.decode(encoder.encode(_image(480, 640, 4)).payload, "alignedvq/1")
    assert frame.features.shape[1] == 8
    assert isinstance(answerer.answer(frame, QUESTION), str)
    with pytest.raises(ValueError, match="alignedvq_path"):
        make_encoder(DeviceConfig(model_path=model, codec="alignedvq"))
