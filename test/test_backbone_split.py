"""The proof that the LLaVA split is right: device half + server half == the reference model (house rule 8).

Tiny checkpoints of the real classes (LlavaOnevisionForConditionalGeneration / LlavaForConditionalGeneration) are built
offline once per session. With merging off and no quantisation, the split must reproduce the reference model's logits
and greedy generation; with merging on (a mean-pooling stand-in for DPC-KNN), shapes and token counts must stay
consistent for very different image sizes.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from tofc_ros.backbones import (
    GenerationOptions,
    load_device_half,
    load_server_half,
    num_image_tokens,
)

QUESTION = "What color is the shape?"
SIZES = [(480, 640), (1080, 1920), (1, 1), (2000, 2000), (4000, 50)]


@pytest.fixture(scope="session")
def halves(tiny_dirs):
    """{kind: (device half, server half)} loaded once per session."""
    return {kind: (load_device_half(d), load_server_half(d)) for kind, d in tiny_dirs.items()}


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth image with some structure (random noise would make every tile alike after resizing)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), (xx + yy) % 256], axis=-1)
    return np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


def _reference_inputs(kind, device_half, server_half, rgb, question):
    """Reference model inputs: the same image processor, and a prompt whose image-token count is the reference's own."""
    processed = device_half.image_processor(images=[rgb], return_tensors="pt", input_data_format="channels_last")
    kwargs = {"pixel_values": processed["pixel_values"]}
    if kind == "onevision":
        kwargs["image_sizes"] = processed["image_sizes"]
    return kwargs


def _reference_image_token_count(kind, reference, ref_kwargs) -> int:
    with torch.no_grad():
        feats = reference.get_image_features(**ref_kwargs).pooler_output
    # LLaVA returns [1, M, D] (or a tuple of it); OneVision a list with one [M, D] per image.
    feats = feats[0] if isinstance(feats, (list, tuple)) else feats
    return int(feats.reshape(-1, feats.shape[-1]).shape[0])


@pytest.mark.parametrize(
    "kind,size",
    [("onevision", (480, 640)), ("onevision", (1080, 1920)), ("llava15", (480, 640)), ("llava15", (4000, 50))],
    ids=["onevision-480x640", "onevision-1080x1920-downsampled", "llava15-480x640", "llava15-4000x50"],
)
def test_split_reproduces_reference_logits(kind, size, halves, references):
    """Merging off, no quantisation: device half + server half logits == reference forward logits."""
    device_half, server_half = halves[kind]
    reference = references[kind]
    rgb = _image(*size)

    vf = device_half.encode_image(rgb)
    assert vf.tokens_per_tile == device_half.spec.tokens_per_tile
    if kind == "onevision":
        assert vf.n_tiles > 2, "the OneVision case must be multi-tile"

    ref_kwargs = _reference_inputs(kind, device_half, server_half, rgb, QUESTION)
    m_ref = _reference_image_token_count(kind, reference, ref_kwargs)
    inputs = server_half.prepare_inputs(vf.features, vf.grid, vf.image_size, QUESTION)
    assert (
        int(inputs.image_mask.sum())
        == m_ref
        == num_image_tokens(device_half.spec, vf.tokens_per_tile, vf.grid, vf.image_size)
    )

    with torch.no_grad():
        ref_logits = reference(
            input_ids=inputs.input_ids[None], attention_mask=torch.ones_like(inputs.input_ids[None]), **ref_kwargs
        ).logits[0]
        split_logits = server_half.logits(vf.features, vf.grid, vf.image_size, QUESTION)
    torch.testing.assert_close(split_logits, ref_logits)


@pytest.mark.parametrize("kind", ["onevision", "llava15"])
def test_split_greedy_generation_matches_reference(kind, halves, references):
    """Greedy generation through the split gives the reference's ids and text."""
    device_half, server_half = halves[kind]
    reference = references[kind]
    rgb = _image(480, 640, seed=1)
    vf = device_half.encode_image(rgb)
    inputs = server_half.prepare_inputs(vf.features, vf.grid, vf.image_size, QUESTION)
    ref_kwargs = _reference_inputs(kind, device_half, server_half, rgb, QUESTION)
    n_new = 12
    with torch.no_grad():
        ref_out = reference.generate(
            input_ids=inputs.input_ids[None],
            attention_mask=torch.ones_like(inputs.input_ids[None]),
            max_new_tokens=n_new,
            do_sample=False,
            **ref_kwargs,
        )[0, inputs.input_ids.shape[0] :]
    opts = GenerationOptions(max_new_tokens=n_new)
    result = server_half.generate(vf.features, vf.grid, vf.image_size, QUESTION, opts)
    assert 1 <= result.token_ids.shape[0] <= n_new
    assert result.token_ids.tolist() == ref_out.tolist()
    ref_text = server_half.tokenizer.decode(ref_out, skip_special_tokens=True).strip()
    assert result.text == ref_text
    assert result.image_tokens == int(inputs.image_mask.sum())
    assert result.prompt_tokens == inputs.input_ids.shape[0]


def _mean_pool_merge(features: torch.Tensor, n_c: int) -> torch.Tensor:
    """Stand-in for DPC-KNN: average n_c contiguous chunks per tile. [T, n_v, d] → [T, n_c, d]."""
    return torch.stack([chunk.mean(dim=1) for chunk in torch.tensor_split(features, n_c, dim=1)], dim=1)


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
@pytest.mark.parametrize("kind", ["onevision", "llava15"])
def test_merged_features_token_counts(kind, size, halves):
    """Merging on: T, grid, M and the prompt stay consistent for very different sizes and aspect ratios."""
    device_half, server_half = halves[kind]
    spec = device_half.spec
    vf = device_half.encode_image(_image(*size))
    assert vf.image_size == size
    assert vf.grid == spec.tile_grid(size)
    assert vf.n_tiles == spec.num_tiles(vf.grid)
    assert vf.features.shape == (vf.n_tiles, spec.tokens_per_tile, spec.vision_dim)
    assert torch.isfinite(vf.features).all()

    n_c = 16
    merged = vf.with_features(_mean_pool_merge(vf.features, n_c))
    rows, _ = merged.grid
    expected_m = merged.n_tiles * n_c + (rows if kind == "onevision" else 0)
    assert num_image_tokens(spec, n_c, merged.grid, merged.image_size) == expected_m

    inputs = server_half.prepare_inputs(merged.features, merged.grid, merged.image_size, QUESTION)
    assert int(inputs.image_mask.sum()) == expected_m
    # The image tokens are one contiguous run (one placeholder expanded in place).
    positions = inputs.image_mask.nonzero().flatten()
    assert positions[-1] - positions[0] + 1 == expected_m
    logits = server_half.forward_embeds(inputs.inputs_embeds)
    assert logits.shape == (inputs.input_ids.shape[0], server_half.language_model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_merged_generation_runs_and_is_deterministic(halves):
    device_half, server_half = halves["onevision"]
    vf = device_half.encode_image(_image(1080, 1920))
    merged = _mean_pool_merge(vf.features, 8)
    opts = GenerationOptions(max_new_tokens=5)
    a = server_half.generate(merged, vf.grid, vf.image_size, QUESTION, opts)
    b = server_half.generate(merged, vf.grid, vf.image_size, QUESTION, opts)
    assert a.token_ids.tolist() == b.token_ids.tolist() and a.text == b.text
    assert a.image_tokens == 16 * 8 + 3  # 1080×1920 → 3×5 grid + thumbnail = 16 tiles, 3 tile rows


def test_sampling_is_seeded(halves):
    device_half, server_half = halves["llava15"]
    vf = device_half.encode_image(_image(64, 64))
    opts = GenerationOptions(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=50, seed=123)
    state = torch.random.get_rng_state()
    a = server_half.generate(vf.features, vf.grid, vf.image_size, QUESTION, opts)
    b = server_half.generate(vf.features, vf.grid, vf.image_size, QUESTION, opts)
    assert a.token_ids.tolist() == b.token_ids.tolist()
    assert torch.equal(state, torch.random.get_rng_state()), "a seeded call must not disturb the global RNG"


def test_stop_string_cuts_answer(halves):
    device_half, server_half = halves["onevision"]
    vf = device_half.encode_image(_image(100, 100))
    full = server_half.generate(vf.features, vf.grid, vf.image_size, QUESTION, GenerationOptions(max_new_tokens=10))
    raw = server_half.tokenizer.decode(full.token_ids, skip_special_tokens=True)
    stop = next((raw[i : i + 2] for i in range(2, len(raw) - 1) if raw[i : i + 2].strip()), None)
    assert stop is not None, f"the seeded tiny model's greedy output {raw!r} is too short to pick a stop string"
    cut = server_half.generate(
        vf.features, vf.grid, vf.image_size, QUESTION, GenerationOptions(max_new_tokens=10, stop_strings=(stop,))
    )
    assert stop not in cut.text
    assert cut.token_ids.shape[0] <= full.token_ids.shape[0]


def test_training_labels_and_gradients(halves):
    """prepare_inputs(answer=...) gives labels on the answer only, and gradients reach the features."""
    device_half, server_half = halves["onevision"]
    vf = device_half.encode_image(_image(200, 300))
    feats = _mean_pool_merge(vf.features, 4).clone().requires_grad_(True)
    inputs = server_half.prepare_inputs(feats, vf.grid, vf.image_size, QUESTION, answer="red")
    answer_ids = server_half.tokenizer("red", add_special_tokens=False)["input_ids"]
    labelled = inputs.labels[inputs.labels != -100].tolist()
    assert labelled[:-1] == answer_ids and labelled[-1] == server_half.tokenizer.eos_token_id
    assert not inputs.image_mask[inputs.labels != -100].any()
    logits = server_half.forward_embeds(inputs.inputs_embeds)
    loss = torch.nn.functional.cross_entropy(logits[:-1], inputs.labels[1:], ignore_index=-100)
    loss.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in server_half.language_model.parameters()), "the LLM stays frozen"


@pytest.mark.parametrize("kind", ["onevision", "llava15"])
def test_device_half_over_a_full_tower_stops_at_the_feature_layer(kind, halves, references):
    """A DeviceHalf wrapping the reference's whole (untruncated) tower computes the same features, with gradients."""
    from tofc_ros.backbones import DeviceHalf

    device_half, _ = halves[kind]
    tower = references[kind].model.vision_tower
    full = DeviceHalf(
        device_half.spec,
        getattr(tower, "vision_model", tower),
        device_half.image_processor,
        dtype=torch.float32,
        device="cpu",
    )
    pixel_values, _, _ = device_half.preprocess(_image(300, 400))
    torch.testing.assert_close(
        full.encode_pixels(pixel_values), device_half.encode_pixels(pixel_values), rtol=0, atol=0
    )
    with torch.enable_grad():
        feats = full.vision_features(pixel_values)
    assert feats.requires_grad


def test_device_features_can_enter_a_trainable_codec(halves):
    """Device features are ordinary tensors (not inference-mode ones), so a trainable codec can save them."""
    device_half, _ = halves["llava15"]
    vf = device_half.encode_image(_image(40, 60))
    codec = torch.nn.Linear(vf.dim, vf.dim)
    codec(vf.features).square().mean().backward()
    assert codec.weight.grad is not None
