"""Two-stage answering's pure parts on crafted inputs: uncertainty of known distributions, attention with a known
peak, the image-token map, and the device's token -> pixel region (peaks land in the right box; bad requests are
refused with a clear error)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tofc_ros.backbones.evidence import answer_uncertainty, image_attention, image_token_sources, token_uncertainty
from tofc_ros.backbones.spec import BackboneSpec
from tofc_ros.backbones.tiling import patch_boxes
from tofc_ros.backbones.token_order import arrange_image_tokens, arrange_views
from tofc_ros.pipeline.refine import (
    FirstPass,
    FirstPasses,
    RefineAsk,
    RefineRefused,
    Region,
    check_region,
    crop,
    plan_region,
    region_from_weights,
)

# A OneVision-shaped spec: 384 tiles of 14 px patches (27 x 27 = 729 tokens), anyres_max_9 pinpoints.
PINPOINTS = tuple((384 * r, 384 * c) for r in range(1, 7) for c in range(1, 7))
SPEC = BackboneSpec(
    "onevision", "llava_onevision", -1, 3, 3, "full", 384, 14, 27, 729, 8, 8, 5, PINPOINTS, "anyres_max_9"
)


def test_uncertainty_of_a_known_distribution():
    p = torch.tensor([[0.5, 0.25, 0.25], [1.0 - 2e-9, 1e-9, 1e-9]], dtype=torch.float64)
    u = token_uncertainty(p.log())
    assert u[0, 0].item() == pytest.approx(math.log(2))  # min-entropy: -log max p
    assert u[0, 1].item() == pytest.approx(1.5 * math.log(2))  # Shannon
    assert u[0, 2].item() == pytest.approx(0.5)  # 1 - max p
    assert u[1, 0].item() == pytest.approx(0.0, abs=1e-8)


def test_the_answer_is_as_unsure_as_its_least_sure_token_and_eos_does_not_count():
    per_token = torch.tensor([[0.1, 0, 0], [0.9, 0, 0], [2.0, 0, 0]], dtype=torch.float64)
    assert answer_uncertainty(per_token, [11, 12, 2], eos_ids=[2]) == pytest.approx(0.9)
    assert answer_uncertainty(per_token[:1], [2], eos_ids=[2]) == 0.0
    with pytest.raises(ValueError, match="token ids"):
        answer_uncertainty(per_token, [1, 2], eos_ids=[2])


def test_attention_with_a_known_peak_comes_back_on_that_image_position():
    length, image = 10, torch.zeros(10, dtype=torch.bool)
    image[2:7] = True  # five image positions
    att = torch.full((1, 2, length, length), 0.01)
    att[0, :, 8, 5] = 0.9  # the answer's query looks at image position 3 (prompt position 5)
    att[0, :, 8, 0] = 5.0  # the attention sink on BOS is not about the image: renormalised away
    w = image_attention([att, att], image, torch.tensor([8]))
    assert w.shape == (5,) and w.sum().item() == pytest.approx(1.0)
    assert int(w.argmax()) == 3 and w[3].item() == pytest.approx(0.9 / 0.94)
    with pytest.raises(ValueError, match="eager"):
        image_attention([], image, torch.tensor([8]))


def test_image_token_sources_invert_the_prompt_order_with_newlines_as_none():
    grid, size, n = (2, 4), (720, 1280), 3
    src = image_token_sources(SPEC, 9, n, grid, size)
    assert src.shape == (9 * n + 2,)  # merged order: T*n tokens + one newline per grid row
    assert list(src[:n]) == [0, 1, 2]  # the thumbnail first
    assert src[n + 4 * n] == -1 and src[-1] == -1  # a newline after each row of 4 tiles
    feats = torch.arange(9 * n, dtype=torch.float64).reshape(9, n, 1) + 100
    arranged = arrange_image_tokens(SPEC, feats, grid, size, torch.zeros(1, dtype=torch.float64))[:, 0]
    kept = src >= 0
    assert torch.equal(arranged[torch.from_numpy(kept)], feats.reshape(-1)[src[kept]])


def test_two_views_are_the_first_view_a_newline_then_the_second():
    a = torch.ones(9, 2, 4)
    b = torch.full((2, 2, 4), 2.0)
    newline = torch.full((4,), 7.0)
    out = arrange_views(SPEC, [(a, (2, 4), (720, 1280)), (b, (1, 1), (300, 300))], newline)
    first = arrange_image_tokens(SPEC, a, (2, 4), (720, 1280), newline)
    assert out.shape[0] == first.shape[0] + 1 + 4 + 1  # the crop: 2 tiles x 2 tokens and its own row's newline
    assert torch.equal(out[: first.shape[0]], first) and torch.equal(out[first.shape[0]], newline)
    assert torch.equal(out[-5:-1], torch.full((4, 4), 2.0)) and torch.equal(out[-1], newline)


def _patch_box(tile: int, k: int, size=(720, 1280)):
    y0, x0, y1, x1 = patch_boxes(SPEC, size)[tile, k]
    return x0, y0, x1, y1


def _inside(region: Region, box) -> bool:
    x0, y0, x1, y1 = box
    return region.x <= x0 and region.y <= y0 and x1 <= region.x + region.width and y1 <= region.y + region.height


def test_a_peak_on_one_unmerged_token_maps_to_a_box_around_its_patch():
    first = FirstPass((720, 1280), 9, 729, None)
    w = np.full(9 * 729, 1e-6, dtype=np.float32)
    w[5 * 729 + 27 * 10 + 20] = 1.0  # grid tile 5 (row 1, col 0), patch row 10 col 20
    region = region_from_weights(w, first, SPEC, max_area=0.05)
    assert _inside(region, _patch_box(5, 27 * 10 + 20))
    assert region.area <= 0.05 * 720 * 1280 and region.x + region.width <= 1280 and region.y + region.height <= 720


def test_a_merged_token_maps_to_the_patches_of_its_cluster():
    n = 2
    assignment = np.zeros((9, 729), dtype=np.int64)
    # In grid tile 8 (row 1, col 3: the bottom-right of the frame), merged token 1 covers a 3 x 3 block of patches.
    block = [27 * r + c for r in range(20, 23) for c in range(5, 8)]
    assignment[8, block] = 1
    w = np.zeros(9 * n, dtype=np.float32)
    w[8 * n + 1] = 1.0
    region = region_from_weights(w, FirstPass((720, 1280), 9, n, assignment), SPEC, max_area=0.02)
    for k in block:
        assert _inside(region, _patch_box(8, k))


def test_ties_and_repeats_give_the_same_region():
    first = FirstPass((720, 1280), 9, 729, None)
    w = np.ones(9 * 729, dtype=np.float32)  # uniform: the first densest box in row-major order, every time
    assert region_from_weights(w, first, SPEC, 0.1) == region_from_weights(w.copy(), first, SPEC, 0.1)


@pytest.mark.parametrize(
    ("weights", "area", "message"),
    [
        (np.ones(10, np.float32), 0.1, "token weights; the frame was sent as 9 tiles x 729"),
        (-np.ones(9 * 729, np.float32), 0.1, "non-negative"),
        (np.full(9 * 729, np.nan, np.float32), 0.1, "finite"),
        (np.zeros(9 * 729, np.float32), 0.1, "not all zero"),
        (np.ones(9 * 729, np.float32), 1.5, "max_area"),
    ],
)
def test_bad_weights_are_refused(weights, area, message):
    with pytest.raises(RefineRefused, match=message):
        region_from_weights(weights, FirstPass((720, 1280), 9, 729, None), SPEC, area)


def test_an_explicit_region_must_lie_inside_the_frame():
    rgb = np.zeros((720, 1280, 3), np.uint8)
    rgb[100:200, 300:400] = 9
    ask = RefineAsk("q", "front", 1, np.zeros(0, np.float32), Region(300, 100, 100, 100))
    assert plan_region(ask, (720, 1280), None, SPEC, 0.1) == Region(300, 100, 100, 100)
    assert (crop(rgb, Region(300, 100, 100, 100)) == 9).all()
    for bad in (Region(1200, 0, 100, 10), Region(0, 700, 10, 30), Region(5, 5, 0, 10)):
        with pytest.raises(RefineRefused, match="inside|empty"):
            check_region(bad, (720, 1280))
    weights_only = RefineAsk("q", "front", 1, np.ones(18, np.float32))
    with pytest.raises(RefineRefused, match="no first pass"):
        plan_region(weights_only, (720, 1280), None, SPEC, 0.1)
    with pytest.raises(RefineRefused, match="first pass was"):
        plan_region(weights_only, (720, 1280), FirstPass((480, 640), 9, 2, None), SPEC, 0.1)


def test_first_passes_are_bounded_per_camera():
    kept = FirstPasses(2)
    for stamp in (1, 2, 3):
        kept.put("front", stamp, FirstPass((1, 1), 1, 1, None))
    kept.put("rear", 1, FirstPass((2, 2), 1, 1, None))
    assert kept.get("front", 1) is None and kept.get("front", 3) is not None
    assert kept.get("rear", 1).image_size == (2, 2) and kept.get("side", 1) is None
