"""The documented image-token order, and input validation at the split's boundaries."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from tofc_ros.backbones import (
    BackboneSpec,
    GenerationOptions,
    arrange_image_tokens,
    load_device_half,
    load_server_half,
    num_image_tokens,
    validate_rgb,
)
from tofc_ros.backbones.tiny import build_tiny_model, save_tiny_model, tiny_config


@pytest.fixture(scope="module")
def ov_spec():
    return BackboneSpec.from_config(tiny_config("onevision", vocab_size=100))


@pytest.fixture(scope="module")
def llava_spec():
    return BackboneSpec.from_config(tiny_config("llava15", vocab_size=100))


def test_spec_reads_the_real_geometry(ov_spec, llava_spec):
    assert (ov_spec.tokens_per_tile, ov_spec.patches_per_side, ov_spec.tile_size) == (729, 27, 384)
    assert (ov_spec.vision_feature_layer, ov_spec.select_strategy, ov_spec.vision_layers_needed) == (-1, "full", 2)
    assert (llava_spec.tokens_per_tile, llava_spec.patches_per_side, llava_spec.tile_size) == (576, 24, 336)
    assert (llava_spec.vision_feature_layer, llava_spec.select_strategy, llava_spec.vision_layers_needed) == (
        -2,
        "default",
        2,
    )


@pytest.mark.parametrize(
    "size,grid",
    [((480, 640), (2, 2)), ((1080, 1920), (3, 5)), ((1, 1), (1, 1)), ((2000, 2000), (6, 6)), ((4000, 50), (6, 1))],
)
def test_anyres_grid_is_not_capped_at_9_tiles(ov_spec, size, grid):
    assert ov_spec.tile_grid(size) == grid
    assert ov_spec.num_tiles(grid) == 1 + grid[0] * grid[1]


def test_merged_order_layout(ov_spec):
    """Thumbnail first, then each tile row's tiles left to right followed by one newline."""
    rows, cols, n = 2, 3, 4
    n_tiles = 1 + rows * cols
    # Embedding value = 1000·tile + token index, so every row of the output names its source.
    tiles = (1000 * torch.arange(n_tiles)[:, None] + torch.arange(n)[None, :]).float()[..., None].expand(-1, -1, 2)
    newline = torch.full((2,), -1.0)
    size = (768, 1152)  # → grid (2, 3)
    out = arrange_image_tokens(ov_spec, tiles, (rows, cols), size, newline)[:, 0].tolist()
    expected = [0, 1, 2, 3]  # thumbnail
    for r in range(rows):
        for c in range(cols):
            t = 1 + r * cols + c
            expected += [1000 * t + i for i in range(n)]
        expected.append(-1)
    assert out == expected
    assert num_image_tokens(ov_spec, n, (rows, cols), size) == len(expected) == n_tiles * n + rows


def test_llava_order_is_identity(llava_spec):
    tiles = torch.randn(1, 8, 5)
    out = arrange_image_tokens(llava_spec, tiles, (1, 1), (100, 200), None)
    assert torch.equal(out, tiles[0])
    assert num_image_tokens(llava_spec, 8, (1, 1), (100, 200)) == 8


@pytest.mark.parametrize("size", [(480, 640), (1080, 1920), (1, 1), (2000, 2000), (4000, 50), (384, 1152)])
def test_full_packing_matches_transformers_pack_image_features(size):
    """n = n_v: our packing is the reference's own (unpad + anyres_max_9 downsampling + newline per row)."""
    model, _, _ = build_tiny_model("onevision", seed=0)
    spec = BackboneSpec.from_config(model.config)
    grid = spec.tile_grid(size)
    gen = torch.Generator().manual_seed(0)
    tiles = torch.randn(spec.num_tiles(grid), spec.tokens_per_tile, spec.text_dim, generator=gen)
    with torch.no_grad():
        ref, lens = model.model.pack_image_features(
            [tiles],
            torch.tensor([size]),
            image_newline=model.model.image_newline,
            vision_aspect_ratio=model.config.vision_aspect_ratio,
        )
        ours = arrange_image_tokens(spec, tiles, grid, size, model.model.image_newline)
    torch.testing.assert_close(ours, ref[0], rtol=0, atol=0)
    assert num_image_tokens(spec, spec.tokens_per_tile, grid, size) == int(lens[0])


def test_token_order_rejects_inconsistent_inputs(ov_spec):
    newline = torch.zeros(3)
    with pytest.raises(ValueError, match="tiles given"):
        arrange_image_tokens(ov_spec, torch.zeros(4, 8, 3), (2, 2), (480, 640), newline)
    with pytest.raises(ValueError, match="does not match image_size"):
        arrange_image_tokens(ov_spec, torch.zeros(5, 8, 3), (2, 2), (100, 2000), newline)
    with pytest.raises(ValueError, match="tokens per tile"):
        arrange_image_tokens(ov_spec, torch.zeros(5, 730, 3), (2, 2), (480, 640), newline)
    with pytest.raises(ValueError, match="image_newline"):
        arrange_image_tokens(ov_spec, torch.zeros(5, 8, 3), (2, 2), (480, 640), None)
    with pytest.raises(ValueError, match=r"\[T, n, D\]"):
        arrange_image_tokens(ov_spec, torch.zeros(5, 8), (2, 2), (480, 640), newline)
    with pytest.raises(TypeError, match="grid"):
        arrange_image_tokens(ov_spec, torch.zeros(5, 8, 3), 2, (480, 640), newline)
    with pytest.raises(ValueError, match="positive"):
        ov_spec.tile_grid((0, 10))


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        ([[[0, 0, 0]]], TypeError, "numpy array"),
        (np.zeros((4, 4, 3), np.float32), TypeError, "uint8"),
        (np.zeros((4, 4), np.uint8), ValueError, "RGB"),
        (np.zeros((4, 4, 4), np.uint8), ValueError, "RGB"),
        (np.zeros((0, 4, 3), np.uint8), ValueError, "non-empty"),
        (np.zeros((30000, 1, 3), np.uint8), ValueError, "exceeds"),
    ],
    ids=["list", "float", "gray", "rgba", "empty", "huge"],
)
def test_validate_rgb(bad, exc, match):
    with pytest.raises(exc, match=match):
        validate_rgb(bad)


@pytest.fixture(scope="module")
def ov_halves(tmp_path_factory):
    d = save_tiny_model("onevision", tmp_path_factory.mktemp("tiny_order") / "ov", seed=0)
    return load_device_half(d), load_server_half(d)


def test_non_contiguous_and_odd_images_encode(ov_halves):
    device_half, _ = ov_halves
    rgb = np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    a = device_half.encode_image(rgb[:, ::-1])  # a negative-stride view
    b = device_half.encode_image(np.ascontiguousarray(rgb[:, ::-1]))
    assert torch.equal(a.features, b.features)
    for shape in [(1, 1, 3), (3, 3, 3), (1, 500, 3)]:  # ambiguous channel layouts for image libraries
        vf = device_half.encode_image(np.full(shape, 128, np.uint8))
        assert vf.image_size == shape[:2]


def test_server_rejects_bad_features(ov_halves):
    device_half, server_half = ov_halves
    vf = device_half.encode_image(np.zeros((480, 640, 3), np.uint8))
    feats = vf.features[:, :16]
    with pytest.raises(ValueError, match=r"\[T, n, 64\]"):
        server_half.answer(feats[..., :32], vf.grid, vf.image_size, "q")
    with pytest.raises(ValueError, match="tiles given"):
        server_half.answer(feats[:3], vf.grid, vf.image_size, "q")
    with pytest.raises(ValueError, match="does not match"):
        server_half.answer(feats, vf.grid, (2000, 2000), "q")
    with pytest.raises(TypeError, match="floating"):
        server_half.answer(feats.long(), vf.grid, vf.image_size, "q")
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        server_half.answer(feats.tolist(), vf.grid, vf.image_size, "q")
    with pytest.raises(ValueError, match="image token"):
        server_half.answer(feats, vf.grid, vf.image_size, "look <image> here")
    with pytest.raises(TypeError, match="question"):
        server_half.answer(feats, vf.grid, vf.image_size, None)
    # numpy float features are accepted
    text = server_half.answer(feats.numpy(), vf.grid, vf.image_size, "q", GenerationOptions(max_new_tokens=2))
    assert isinstance(text, str)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_new_tokens=0),
        dict(temperature=0.0),
        dict(top_p=0.0),
        dict(top_k=-1),
        dict(stop_strings="x"),
        dict(stop_strings=("",)),
        dict(repetition_penalty=0),
    ],
)
def test_generation_options_validation(kwargs):
    with pytest.raises(ValueError):
        GenerationOptions(**kwargs)
