"""patch_boxes against the real image processors: a white rectangle on black lights exactly the patches whose boxes
it covers, in every tile, for frame sizes that exercise the thumbnail, padding and several grid shapes."""

from __future__ import annotations

import numpy as np
import pytest

from tofc_ros.backbones.spec import BackboneSpec
from tofc_ros.backbones.tiling import patch_boxes
from tofc_ros.backbones.tiny import build_tiny_image_processor, tiny_config


def _setup(kind):
    return BackboneSpec.from_config(tiny_config(kind, vocab_size=32)), build_tiny_image_processor(kind)


def _patch_means(processor, spec, rgb) -> np.ndarray:
    """Mean brightness (0..1) of every patch of every tile the processor makes: [T, P*P]."""
    px = processor(images=[rgb], return_tensors="np", input_data_format="channels_last")["pixel_values"]
    px = px[0] if px.ndim == 5 else px  # [T, 3, S, S]
    mean, std = np.asarray(processor.image_mean), np.asarray(processor.image_std)
    img = (px * std[None, :, None, None] + mean[None, :, None, None]).mean(1)  # [T, S, S] in 0..1
    p, n = spec.patch_size, spec.patches_per_side
    img = img[:, : n * p, : n * p].reshape(len(img), n, p, n, p).mean((2, 4))
    return img.reshape(len(img), -1)


@pytest.mark.parametrize("kind", ["onevision", "llava15"])
@pytest.mark.parametrize("size", [(720, 1280), (480, 640), (300, 1000), (1000, 300), (64, 64)])
def test_a_rectangle_lights_the_patches_whose_boxes_it_covers(kind, size):
    spec, processor = _setup(kind)
    h, w = size
    rng = np.random.default_rng(h * 7 + w)
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    y1, x1 = y0 + h // 3, x0 + w // 3
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[y0:y1, x0:x1] = 255
    boxes = patch_boxes(spec, size)
    means = _patch_means(processor, spec, rgb)
    assert boxes.shape == (spec.num_tiles(spec.tile_grid(size)), spec.tokens_per_tile, 4) == means.shape + (4,)
    valid = ~np.isnan(boxes[..., 0])
    by0, bx0, by1, bx1 = (boxes[..., i] for i in range(4))
    area = np.maximum(by1 - by0, 1e-9) * np.maximum(bx1 - bx0, 1e-9)
    inter = np.clip(np.minimum(by1, y1) - np.maximum(by0, y0), 0, None) * np.clip(
        np.minimum(bx1, x1) - np.maximum(bx0, x0), 0, None
    )
    cover = np.where(valid, inter / area, 0.0)
    # Bicubic resampling blurs edges by a pixel or two: compare where a patch is clearly in or out.
    if kind == "llava15":  # padding is the mean colour, not black: keep patches that lie wholly in the frame
        nominal = (spec.patch_size * max(h, w) / spec.tile_size) ** 2
        valid &= np.where(valid, (by1 - by0) * (bx1 - bx0), 0) > 0.99 * nominal
    inside, outside = valid & (cover > 0.95), valid & (cover == 0.0)
    assert inside.any() and outside.any()
    assert (np.abs(means[inside] - cover[inside]) < 0.12).all()
    pad = 3 * max(h, w) / spec.tile_size  # a patch just outside may catch the blur of the edge
    far = outside & ((by1 < y0 - pad) | (by0 > y1 + pad) | (bx1 < x0 - pad) | (bx0 > x1 + pad))
    assert (means[far] < 0.02).all()
    if kind == "onevision":
        assert (means[np.isnan(boxes[..., 0])] < 0.02).all()  # tokens that see only padding see its black


def test_boxes_are_cached_read_only_and_validated():
    spec, _ = _setup("onevision")
    assert patch_boxes(spec, (480, 640)) is patch_boxes(spec, (480, 640))
    with pytest.raises(ValueError):
        patch_boxes(spec, (0, 640))
    assert not patch_boxes(spec, (480, 640)).flags.writeable
