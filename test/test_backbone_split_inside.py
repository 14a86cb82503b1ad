"""A split inside the vision tower (AlignedVQ's split point): device layers 1..X + server layers X+1..k == the
reference model, for LLaVA-OneVision (SigLIP, every token) and LLaVA-1.5 (CLIP: the CLS token crosses the link and
only the server's final selection drops it), for every X the tiny towers allow.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from test_backbone_split import _image

from tofc_ros.backbones import load_device_half, load_server_half
from tofc_ros.backbones.vision_split import VisionTail, check_split_layer, tokens_at_split

QUESTION = "What color is the shape?"
KINDS = ("onevision", "llava15")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", [0, 1])
def test_split_inside_tower_reproduces_reference_logits(kind, split, tiny_dirs, references):
    device = load_device_half(tiny_dirs[kind], split_layer=split)
    server = load_server_half(tiny_dirs[kind], vision_splits=[split])
    reference = references[kind]
    assert len(device.vision_tower.encoder.layers) == split  # later layers are not even loaded
    rgb = _image(480, 640, seed=split)
    vf = device.encode_image(rgb)
    spec = device.spec
    assert vf.features.shape[1] == tokens_at_split(spec, split)
    if kind == "llava15":
        assert vf.features.shape[1] == spec.tokens_per_tile + 1  # CLS crosses the link

    pixel_values = device.preprocess(rgb)[0]
    with torch.no_grad():
        hidden_ref = reference.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
    torch.testing.assert_close(vf.features, hidden_ref[split])  # the device half is the reference's prefix

    features = server.finish_vision(vf.features, split)
    assert features.shape[1] == spec.tokens_per_tile
    processed = device.image_processor(images=[rgb], return_tensors="pt", input_data_format="channels_last")
    kwargs = {"pixel_values": processed["pixel_values"]}
    if kind == "onevision":
        kwargs["image_sizes"] = processed["image_sizes"]
    inputs = server.prepare_inputs(features, vf.grid, vf.image_size, QUESTION)
    with torch.no_grad():
        ref_logits = reference(
            input_ids=inputs.input_ids[None], attention_mask=torch.ones_like(inputs.input_ids[None]), **kwargs
        ).logits[0]
        split_logits = server.logits(features, vf.grid, vf.image_size, QUESTION)
    torch.testing.assert_close(split_logits, ref_logits)


@pytest.mark.parametrize("kind", KINDS)
def test_tail_equals_the_whole_device_half(kind, tiny_dirs):
    """Device(X) + tail(X) == device at the feature layer, bit for bit, for every X (the same modules run)."""
    whole = load_device_half(tiny_dirs[kind])
    rgb = _image(300, 500, seed=3)
    full = whole.encode_image(rgb).features
    for split in range(whole.spec.vision_layers_needed + 1):
        device = load_device_half(tiny_dirs[kind], split_layer=split)
        server = load_server_half(
            tiny_dirs[kind], vision_splits=[split] if split < whole.spec.vision_layers_needed else []
        )
        with torch.no_grad():
            finished = server.finish_vision(device.encode_image(rgb).features, split)
        assert torch.equal(finished, full), split


def test_bad_splits_are_refused(tiny_dirs):
    device = load_device_half(tiny_dirs["onevision"])
    spec = device.spec
    with pytest.raises(ValueError, match="outside 0..2"):
        check_split_layer(spec, 3)
    with pytest.raises(ValueError, match="outside"):
        load_device_half(tiny_dirs["onevision"], split_layer=-1)
    with pytest.raises(TypeError, match="int"):
        check_split_layer(spec, 1.0)
    with pytest.raises(ValueError, match="no vision tail"):
        VisionTail(spec, 2, [])
    server = load_server_half(tiny_dirs["onevision"], vision_splits=[1])
    with pytest.raises(RuntimeError, match=r"tails for \[1\]"):
        server.finish_vision(torch.zeros(1, 729, 64), 0)
    with pytest.raises(ValueError, match=r"1 <= N <= 729"):
        server.finish_vision(torch.zeros(1, 730, 64), 1)  # fewer are merged tokens; more are not this tower's
    with pytest.raises(ValueError, match=r"\[T, n, 64\]"):
        server.finish_vision(torch.zeros(1, 16, 32), 1)
